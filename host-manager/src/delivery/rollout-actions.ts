/**
 * The two device-changing actions rollouts need, bound to this controller's
 * MQTT connection, registries and keys: deliver a version of a model, an image or the agent
 * (mqtt-sender.ts's deliverModel: signed manifest, chunked fan-out, activation) and
 * roll a device back to its previous version (an agent: the earlier release's bundle, see
 * agent-delivery.ts; a model: with an operator-signed
 * rollback manifest, since the previous version is lower than the highest the device
 * accepted; an app: `containers.deploy` of the previous version, whose image the
 * device keeps, or `containers.stop` when it ran none before).
 */
import type { BrokerClient } from '../broker-client.js';
import { FleetError, signManifest } from '@edgefleet/protocol';
import type { SignedManifest } from '@edgefleet/protocol';
import type { FleetKeys } from '../access/fleet-keys.js';
import type { Registry } from '../models/registry.js';
import type { ImageRegistry } from '../images/registry.js';
import type { Requester } from '../devices/requester.js';
import type { FleetRepository } from '../state/repository.js';
import type { DeliverFn, RollbackFn } from '../rollouts/executor.js';
import { DEFAULT_CHUNK_SIZE, hashChunks } from './chunk-table.js';
import { buildManifest } from './manifest.js';
import { deliverModel } from './mqtt-sender.js';
import { deliveryCheck } from './check.js';
import { deliverAgent } from './agent-delivery.js';
import type { AgentDeliveryContext } from './agent-delivery.js';
import type { AgentRegistry } from '../agents/registry.js';

export function makeDeliver(ctx: {
  mqtt: BrokerClient;
  requester: Requester;
  registry: Registry;
  images: ImageRegistry;
  agents: AgentRegistry;
  keys: FleetKeys;
  state: FleetRepository;
  chunkSize?: number;
  window?: number;
  requestTimeoutMs?: number;
  concurrency?: number;
  onPhase?: (phase: string, ms: number) => void;
}): DeliverFn {
  return async ({ kind, model, version, target, devices, agent, onProgress }) => {
    if (kind === 'agent') return deliverAgent(ctx, { version, devices, arches: agent?.arches, ...(onProgress ? { onProgress } : {}) });
    const record = kind === 'image' ? ctx.images.require(model, version) : ctx.registry.require(model, version);
    const blobPath = kind === 'image' ? ctx.images.blobPath(record) : ctx.registry.blobPath(record);
    // an image's commit loads the archive into the engine and waits for the new container to become healthy
    const healthWait = 'container' in record && record.container ? record.container.healthyWithinMs : 0;
    // A group target fans each chunk out once through the group's topic; anything else goes device by device.
    const via = target.kind === 'group' && devices.length > 1 ? { group: target.name, devices } : { devices };
    const check = 'check' in record ? await deliveryCheck(record.check, ctx.registry.checkFiles) : undefined;
    const results = await deliverModel({
      mqtt: ctx.mqtt,
      request: ctx.requester.request,
      ...(target.kind === 'group' && coversGroup(ctx.state, target.name, devices) ? { groupRequests: ctx.requester.requestGroup } : {}),
      record,
      blobPath,
      keys: ctx.keys,
      target: via,
      activate: true,
      ...(check ? { check } : {}),
      subscribeEvents: false,
      deviceInfo: (device) => ctx.state.device(device)?.info ?? null,
      // A device busy writing the chunks of a large fan-out answers status late; that is not a failure.
      requestTimeoutMs: ctx.requestTimeoutMs ?? 60_000,
      // Offers, status and commits are small requests; a large wave is limited by the devices, not by these.
      concurrency: ctx.concurrency ?? 256,
      commitTimeoutMs: 120_000 + healthWait,
      ...(ctx.chunkSize !== undefined ? { chunkSize: ctx.chunkSize } : {}),
      ...(ctx.window !== undefined ? { window: ctx.window } : {}),
      ...(onProgress ? { onProgress } : {}),
      ...(ctx.onPhase ? { onPhase: ctx.onPhase } : {}),
    });
    return Object.fromEntries(
      Object.entries(results).map(([device, r]) => [device, r.ok ? { ok: true as const, version: r.version, previous: r.previous } : r]),
    );
  };
}

/**
 * Whether `devices` holds every online device of the group: then offers, status requests and
 * commits may go once to the group's command topic (every member receives them; a member not
 * in the delivery would otherwise stage, or even activate, a version outside its wave). An
 * offline member's queued copy is refused by its deadline, or fails for want of the chunks.
 */
function coversGroup(state: FleetRepository, group: string, devices: string[]): boolean {
  if (devices.length < 2) return false;
  const chosen = new Set(devices);
  return state.devices().every((d) => !d.online || !d.groups.includes(group) || chosen.has(d.id));
}

/** A rollback manifest is sent at once and used once; it need not stay valid for long. */
export const ROLLBACK_EXPIRY_MS = 10 * 60_000;

/**
 * Rollbacks sign nothing for an app: the device deploys a version it keeps, on the controller's
 * command (operators only may send it), so there is no manifest to capture and replay. A model goes
 * back with a single-use rollback manifest (its own rollbackSeq), and so does the agent (the earlier
 * release's bundle, agent-delivery.ts).
 */
export function makeRollback(ctx: { requester: Requester; registry: Registry; images: ImageRegistry; keys: FleetKeys; state: FleetRepository; timeoutMs: number; agents?: AgentDeliveryContext }): RollbackFn {
  return async ({ kind, device, model, previous }) => {
    if (kind === 'agent') return rollbackAgent(ctx.agents!, device, previous);
    if (kind === 'image') {
      if (previous === null) {
        await ctx.requester.request(device, 'containers.stop', { app: model }, ctx.timeoutMs);
        return { version: null };
      }
      // the device waits for the previous version to be healthy again before it answers
      const spec = ctx.images.get(model, previous)?.container;
      const res = await ctx.requester.request(device, 'containers.deploy', { app: model, version: previous }, ctx.timeoutMs + (spec?.healthyWithinMs ?? 60_000));
      return { version: res.version };
    }
    let manifest: SignedManifest | undefined;
    const record = previous === null ? undefined : ctx.registry.get(model, previous);
    if (record) {
      const hashes = await hashChunks(ctx.registry.blobPath(record), DEFAULT_CHUNK_SIZE);
      // single-use: a new sequence number, on disk before the manifest that carries it exists
      const rollbackSeq = ctx.state.nextRollbackSeq();
      await ctx.state.write();
      manifest = signManifest(
        { ...buildManifest(record, hashes, { chunkSize: DEFAULT_CHUNK_SIZE, target: { devices: [device] }, expiresInMs: ROLLBACK_EXPIRY_MS, rollback: true }), rollbackSeq },
        ctx.keys.privateKeyPem,
      );
    } else if (previous === null) {
      throw new FleetError('not_found', `${device} had no version of ${model} before this rollout; nothing to roll back to (remove the model instead)`);
    }
    const res = await ctx.requester.request(device, 'models.rollback', { model, ...(manifest ? { manifest } : {}) }, ctx.timeoutMs);
    return { version: res.version };
  };
}

/** An agent: the earlier release's bundle for the device, signed as a single-use rollback (rollbackSeq), through the same transfer. */
async function rollbackAgent(ctx: AgentDeliveryContext, device: string, previous: number | null): Promise<{ version: number | null }> {
  if (previous === null) {
    const running = ctx.state.device(device)?.info?.agentVersion ?? 'its version';
    throw new FleetError('not_found', `${device} ran no agent release of the registry before this rollout; nothing to roll back to (it keeps running ${running})`);
  }
  // single-use, as for models: a new sequence number, on disk before the manifest that carries it exists
  const rollbackSeq = ctx.state.nextRollbackSeq();
  await ctx.state.write();
  const outcome = (await deliverAgent(ctx, { version: previous, devices: [device], rollbackSeq }))[device];
  if (!outcome?.ok) throw new FleetError(outcome?.error.code ?? 'internal', outcome?.error.message ?? `${device}: the rollback reported nothing`);
  return { version: previous };
}
