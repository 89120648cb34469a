/** The rollout operations: deploy, list, show (with live transfer progress), abort, resume, roll back. */
import { FleetError } from '@edgefleet/protocol';
import type { RolloutOperations } from '../api/contract.js';
import type { Registry } from '../models/registry.js';
import type { Rollouts } from './executor.js';

export function createRolloutOperations(ctx: { rollouts: Rollouts; registry: Registry }): RolloutOperations {
  const { rollouts, registry } = ctx;
  return {
    deploy: (input) => rollouts.create(input, (model, version) => registry.require(model, version).version),
    listRollouts: () => rollouts.list(),
    showRollout(id) {
      const r = rollouts.get(id);
      const progress = rollouts.progress.get(id);
      return { ...r, progress: progress ? Object.fromEntries(progress) : {} };
    },
    abortRollout: (id, actor) => rollouts.abort(id, actor),
    resumeRollout: (id, actor) => rollouts.resume(id, actor),
    rollbackRollout(id, actor) {
      const target = id ?? rollouts.list().find((r) => Object.values(r.devices).some((d) => d.state === 'switched'))?.id;
      if (!target) throw new FleetError('not_found', 'no rollout has switched devices to roll back; see `hostManager rollouts list`');
      return rollouts.rollbackRollout(target, actor);
    },
  };
}
