/** The rollout operations: deploy, list, show (with live transfer progress), abort, resume, roll back. */
import { FleetError } from '@edgefleet/protocol';
import type { RolloutOperations } from '../api/contract.js';
import type { ImageRegistry } from '../images/registry.js';
import { AGENT_NAME } from '../agents/registry.js';
import type { AgentRegistry } from '../agents/registry.js';
import type { Registry } from '../models/registry.js';
import type { FleetRepository } from '../state/repository.js';
import type { Rollouts } from './executor.js';
import type { RolloutRecord } from '../state/schema.js';
import { rolloutTiming } from './summary.js';
import { groupNames, targetHint } from './target.js';

export function createRolloutOperations(ctx: { rollouts: Rollouts; registry: Registry; images: ImageRegistry; agents: AgentRegistry; state: FleetRepository }): RolloutOperations {
  const { rollouts, registry, images, agents, state } = ctx;
  /** An agent version: its release, and bundles for the architectures asked for, before anything starts. */
  function deployAgent(input: Parameters<RolloutOperations['deploy']>[0]): Promise<RolloutRecord> {
    if (!input.agent) throw new FleetError('invalid_params', 'an agent rollout names the agent version: {"kind": "agent", "agent": {"version": "0.2.0"}}');
    const release = agents.requireRelease(input.agent.version);
    const built = agents.release(release).map((b) => b.arch);
    const missing = (input.agent.arches ?? []).filter((a) => !built.includes(a));
    if (missing.length > 0) {
      throw new FleetError('not_found', `agent ${input.agent.version} has no bundle for ${missing.join(', ')} (built: ${built.join(', ')}); build it with \`hostManager agent bundle --arch ${missing[0]} --version ${input.agent.version}\``);
    }
    return rollouts.create({ ...input, model: AGENT_NAME, version: release }, () => release);
  }
  return {
    async deploy(input) {
      if (input.to.kind === 'device' && !state.device(input.to.name)) {
        const hint = targetHint(input.to.name, groupNames(state));
        if (hint) throw new FleetError('not_found', `no device ${input.to.name}; ${hint}`);
      }
      if (input.kind === 'agent') return deployAgent(input);
      return rollouts.create(input, (name, version, kind) => (kind === 'image' ? images.require(name, version) : registry.require(name, version)).version);
    },
    listRollouts: () => rollouts.list(),
    showRollout(id) {
      const r = rollouts.get(id);
      const progress = rollouts.progress.get(id);
      return { ...r, progress: progress ? Object.fromEntries(progress) : {}, timing: rolloutTiming(r, new Date()) };
    },
    abortRollout: (id, actor) => rollouts.abort(id, actor),
    resumeRollout: (id, actor) => rollouts.resume(id, actor),
    rollbackDevice: (args) => rollouts.rollbackDevice(args.device, args.model, args.actor),
    rollbackRollout(id, actor, kind) {
      const ofKind = (r: { kind?: string }) => kind === undefined || (r.kind ?? 'model') === kind;
      const target = id ?? rollouts.list().find((r) => ofKind(r) && Object.values(r.devices).some((d) => d.state === 'switched'))?.id;
      if (!target) throw new FleetError('not_found', `no ${kind ? `${kind} ` : ''}rollout has switched devices to roll back; see \`hostManager rollouts list\``);
      return rollouts.rollbackRollout(target, actor);
    },
  };
}
