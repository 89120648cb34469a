/** The agent bundle operations: the registry (list, add). Rollouts of agent versions are rollouts of kind 'agent' (rollouts/). */
import { toErrorBody } from '@edgefleet/protocol';
import type { AgentOperations } from '../api/contract.js';
import type { RecordAudit } from '../state/audit.js';
import type { AgentRegistry } from './registry.js';

export function createAgentOperations(ctx: { agents: AgentRegistry; audit: RecordAudit }): AgentOperations {
  const { agents, audit } = ctx;
  return {
    listAgentBundles: () => agents.list(),
    async addAgentBundle(args) {
      try {
        const rec = await agents.addBundle(args.file, args.healthDeadlineS !== undefined ? { healthDeadlineS: args.healthDeadlineS } : {});
        await audit({ actor: args.actor, action: 'agent.add', target: `agent ${rec.agentVersion} (${rec.arch})`, result: 'ok', detail: { release: rec.version, sha256: rec.sha256, created: rec.created } });
        return rec;
      } catch (error) {
        await audit({ actor: args.actor, action: 'agent.add', target: 'agent bundle', result: 'error', detail: toErrorBody(error) });
        throw error;
      }
    },
  };
}
