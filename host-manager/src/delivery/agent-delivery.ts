/**
 * Agent rollouts, the delivery side. Each device gets the bundle of its own architecture (from the arch it
 * reported), through the same signed, chunked transfer as models (mqtt-sender.ts). A device outside the
 * rollout's architectures, or with no bundle of the release for its architecture, is refused with the reason
 * before anything is sent ('incompatible': the executor skips it). The device restarts into the new version
 * after its commit answer, so a delivery counts as done only when the device reports that version healthy
 * (agentUpdate 'updated'), and as failed when it reports falling back or says nothing within the deadline.
 */
import { agentArchOf } from '@edgefleet/protocol';
import type { AgentArch, DeviceInfo, ErrorBody } from '@edgefleet/protocol';
import type { FleetKeys } from '../access/fleet-keys.js';
import type { AgentRegistry } from '../agents/registry.js';
import type { BrokerClient } from '../broker-client.js';
import type { Requester } from '../devices/requester.js';
import type { DeliveryOutcome } from '../rollouts/executor.js';
import type { FleetRepository } from '../state/repository.js';
import type { AgentBundleRecord } from '../state/schema.js';
import { deliverModel } from './mqtt-sender.js';

export interface AgentDeliveryContext {
  mqtt: BrokerClient;
  requester: Requester;
  agents: AgentRegistry;
  keys: FleetKeys;
  state: FleetRepository;
  chunkSize?: number;
  window?: number;
  /** How often the devices' reports are looked at while waiting for the new version (default 250 ms). */
  pollMs?: number;
}

export interface AgentDelivery {
  /** The release number (the bundles' manifest version). */
  version: number;
  devices: string[];
  /** Only devices of these architectures (absent: any the release has a bundle for). */
  arches?: readonly AgentArch[] | undefined;
  /** Signed as an explicit, single-use rollback (to an earlier release) with this sequence number (the state's nextRollbackSeq). */
  rollbackSeq?: number;
  onProgress?: (device: string, received: number, total: number) => void;
}

const refused = (code: ErrorBody['code'], message: string): DeliveryOutcome => ({ ok: false, error: { code, message } });

/** Which bundle a device gets, or why it gets none (pure). */
export function bundleFor(device: string, info: DeviceInfo | null | undefined, release: readonly AgentBundleRecord[], arches?: readonly AgentArch[]): AgentBundleRecord | DeliveryOutcome {
  const agentVersion = release[0]?.agentVersion ?? '?';
  if (!info) return refused('unavailable', `${device} has not reported its architecture yet; it is sent the bundle once it has connected`);
  const arch = agentArchOf(info.arch);
  if (!arch) return refused('incompatible', `${device} reports arch ${info.arch}, for which no agent bundle is built (x64, arm64, armv7)`);
  if (arches && !arches.includes(arch)) return refused('incompatible', `${device} is ${arch}; this rollout of agent ${agentVersion} is for ${arches.join(', ')} only`);
  const bundle = release.find((b) => b.arch === arch);
  if (!bundle) {
    return refused('incompatible', `no bundle of agent ${agentVersion} for ${arch} (${device}) in the registry; build one with \`hostManager agent bundle --arch ${arch} --version ${agentVersion}\``);
  }
  return bundle;
}

export async function deliverAgent(ctx: AgentDeliveryContext, d: AgentDelivery): Promise<Record<string, DeliveryOutcome>> {
  const release = ctx.agents.release(d.version);
  const outcomes: Record<string, DeliveryOutcome> = Object.create(null) as Record<string, DeliveryOutcome>;
  const groups = new Map<AgentBundleRecord, string[]>();
  for (const device of d.devices) {
    const info = ctx.state.device(device)?.info;
    const chosen = bundleFor(device, info, release, d.arches);
    if ('ok' in chosen) outcomes[device] = chosen;
    else if (info?.agentVersion === chosen.agentVersion) outcomes[device] = { ok: true, version: d.version }; // runs it already: nothing to send
    else groups.set(chosen, [...(groups.get(chosen) ?? []), device]);
  }
  await Promise.all([...groups].map(async ([bundle, devices]) => Object.assign(outcomes, await deliverBundle(ctx, bundle, devices, d))));
  return outcomes;
}

async function deliverBundle(ctx: AgentDeliveryContext, bundle: AgentBundleRecord, devices: string[], d: AgentDelivery): Promise<Record<string, DeliveryOutcome>> {
  const results = await deliverModel({
    mqtt: ctx.mqtt,
    request: ctx.requester.request,
    record: bundle,
    blobPath: ctx.agents.blobPath(bundle),
    keys: ctx.keys,
    target: { devices },
    activate: true,
    ...(d.rollbackSeq !== undefined ? { rollbackSeq: d.rollbackSeq } : {}),
    subscribeEvents: false,
    requestTimeoutMs: 60_000,
    // the device unpacks the bundle before it answers
    commitTimeoutMs: 180_000,
    ...(ctx.chunkSize !== undefined ? { chunkSize: ctx.chunkSize } : {}),
    ...(ctx.window !== undefined ? { window: ctx.window } : {}),
    ...(d.onProgress ? { onProgress: d.onProgress } : {}),
  });
  const out: Record<string, DeliveryOutcome> = {};
  await Promise.all(
    devices.map(async (device) => {
      const r = results[device];
      out[device] = !r ? refused('internal', 'the delivery reported nothing for this device') : r.ok ? await reported(ctx, device, bundle) : r;
    }),
  );
  return out;
}

/** Waits for the device to report the new version healthy, or its fallback, within the health deadline and a margin. */
async function reported(ctx: AgentDeliveryContext, device: string, bundle: AgentBundleRecord): Promise<DeliveryOutcome> {
  const to = bundle.agentVersion;
  const waitS = bundle.healthDeadlineS + 60;
  const deadline = Date.now() + waitS * 1000;
  for (;;) {
    const record = ctx.state.device(device);
    const update = record?.info?.agentUpdate;
    if (update?.to === to && update.state === 'rolled-back') {
      return refused('load_failed', `agent ${to} did not become healthy on ${device}, which fell back to ${update.from} by itself: ${update.reason ?? 'no reason given'}`);
    }
    if (record?.online && record.info?.agentVersion === to && update?.to === to && update.state === 'updated') {
      const previous = ctx.agents.releaseOf(update.from);
      return { ok: true, version: bundle.version, ...(previous !== undefined ? { previous } : {}) };
    }
    if (Date.now() > deadline) {
      return refused('deadline_exceeded', `${device} installed agent ${to} but did not report it healthy within ${waitS} s (it reports ${record?.info?.agentVersion ?? 'nothing'})`);
    }
    await new Promise((r) => setTimeout(r, ctx.pollMs ?? 250));
  }
}
