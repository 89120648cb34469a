/**
 * The original plain-text commands. `via: 'command'` (default) sends the `legacy`
 * request to each target device and collects their answers; `via: 'topic'` publishes
 * the bare word on the legacy topic, as the C host manager did (every listening device
 * acts; nobody answers).
 */
import { FleetError, LegacyCommandSchema, LEGACY_COMMANDS, toErrorBody } from '@edgefleet/protocol';
import type { LegacyCommand } from '@edgefleet/protocol';
import type { DeviceOperations, ExecResult } from '../api/contract.js';
import type { RolloutTarget } from '../state/schema.js';
import { formatTarget } from '../rollouts/target.js';
import { targetMembers } from './targets.js';
import type { DeviceContext } from './context.js';

export function createLegacyExec(ctx: DeviceContext): DeviceOperations['exec'] {
  const { state, requester } = ctx;

  async function toDevices(to: RolloutTarget, command: LegacyCommand): Promise<ExecResult[]> {
    const members = targetMembers(state, to);
    const results: ExecResult[] = [];
    if (to.kind === 'group') {
      const replies = await requester.requestGroup(to.name, members.map((d) => d.id), 'legacy', { command }, ctx.timeoutMs);
      for (const [id, r] of replies) results.push(r.ok ? { device: id, ok: true, message: r.data.message } : { device: id, ok: false, error: r.error.toJSON() });
    } else {
      await Promise.all(
        members.map(async (d) => {
          try {
            const r = await requester.request(d.id, 'legacy', { command }, d.online || to.kind === 'device' ? ctx.timeoutMs : 1);
            results.push({ device: d.id, ok: true, message: r.message });
          } catch (error) {
            results.push({ device: d.id, ok: false, error: toErrorBody(error) });
          }
        }),
      );
    }
    return results.sort((a, b) => (a.device < b.device ? -1 : 1));
  }

  return async (args) => {
    const parsed = LegacyCommandSchema.safeParse(args.command);
    if (!parsed.success) {
      throw new FleetError('invalid_params', `unknown command "${args.command}"; use one of ${LEGACY_COMMANDS.join(', ')}`);
    }
    const command = parsed.data;
    if (args.via === 'topic') {
      if (!ctx.legacyTopic) throw new FleetError('unavailable', 'the legacy topic is off; start the controller with --legacy-topic hello');
      await ctx.client.publishAsync(ctx.legacyTopic, command, { qos: 1 });
      await ctx.audit({ actor: args.actor, action: 'exec', target: ctx.legacyTopic, result: 'ok', detail: { command, via: 'topic' } });
      return { via: 'topic', results: [] };
    }
    const results = await toDevices(args.to, command);
    await ctx.audit({ actor: args.actor, action: 'exec', target: formatTarget(args.to), result: results.every((r) => r.ok) ? 'ok' : 'error', detail: { command, results } });
    return { via: 'command', results };
  };
}
