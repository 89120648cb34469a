/** The model registry's operations: list, show (with where each version is active), add, remove. */
import { FleetError, toErrorBody } from '@edgefleet/protocol';
import type { ModelOperations } from '../api/contract.js';
import type { RecordAudit } from '../state/audit.js';
import type { FleetRepository } from '../state/repository.js';
import type { Rollouts } from '../rollouts/executor.js';
import type { Registry } from './registry.js';

export function createModelOperations(ctx: { state: FleetRepository; registry: Registry; rollouts: Rollouts; audit: RecordAudit }): Omit<ModelOperations, 'deliverSsh'> {
  const { state, registry, rollouts, audit } = ctx;
  return {
    listModels: (name) => registry.list(name),
    showModel(name, version) {
      const rec = registry.require(name, version);
      const activeOn = state
        .devices()
        .filter((d) => d.info?.models.some((m) => m.name === name && m.version === rec.version))
        .map((d) => d.id);
      return { ...rec, versions: registry.list(name).map((v) => v.version), activeOn };
    },
    async addModel(args) {
      try {
        const rec = await registry.add(args.file, args.opts);
        await audit({ actor: args.actor, action: 'model.add', target: `${rec.name}@${rec.version}`, result: 'ok', detail: { sha256: rec.sha256, created: rec.created, check: rec.check?.policy } });
        return rec;
      } catch (error) {
        await audit({ actor: args.actor, action: 'model.add', target: args.opts.name, result: 'error', detail: toErrorBody(error) });
        throw error;
      }
    },
    // uploads change no fleet state (nothing is named by them until a version is added), so they are not audited
    addSample: (args) => registry.putSample(args.body, args.headerLength),
    addExpected: (args) => registry.putExpected(args.json),
    async removeModel(args) {
      registry.require(args.name, args.version);
      const running = rollouts.list().find((r) => r.status === 'running' && r.model === args.name && r.version === args.version);
      if (running) throw new FleetError('conflict', `rollout ${running.id} is delivering ${args.name}@${args.version}; abort it first`);
      const result = await registry.remove(args.name, args.version);
      await audit({ actor: args.actor, action: 'model.remove', target: `${args.name}@${args.version}`, result: 'ok' });
      return result;
    },
  };
}
