/** The rollout operations: deploy, list, show (with live transfer progress), abort, resume, roll back. */
import { FleetError } from '@edgefleet/protocol';
import type { RolloutOperations } from '../api/contract.js';
import type { ImageRegistry } from '../images/registry.js';
import type { Registry } from '../models/registry.js';
import type { FleetRepository } from '../state/repository.js';
import type { Rollouts } from './executor.js';
import { rolloutTiming } from './summary.js';
import { groupNames, targetHint } from './target.js';

export function createRolloutOperations(ctx: { rollouts: Rollouts; registry: Registry; images: ImageRegistry; state: FleetRepository }): RolloutOperations {
  const { rollouts, registry, images, state } = ctx;
  return {
    async deploy(input) {
      if (input.to.kind === 'device' && !state.device(input.to.name)) {
        const hint = targetHint(input.to.name, groupNames(state));
        if (hint) throw new FleetError('not_found', `no device ${input.to.name}; ${hint}`);
      }
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
