/**
 * Model delivery over MQTT, the sending side.
 *
 *   1. compatibility: devices whose reported runtime or memory cannot run the model get
 *      'incompatible' and nothing is sent to them;
 *   2. sign a manifest (name, version, sha256, length, expiry, target, per-chunk sha256);
 *   3. `transfer.offer` to each device: it checks signature, target, expiry, version and free
 *      disk, and answers with the chunks it still misses (all, or only some after a restart);
 *   4. publish chunks (binary, QoS 1) with a bounded window of unacknowledged publishes. A
 *      group target gets each chunk once on the group's topic (the broker fans it out); what
 *      a device still misses afterwards (`transfer.status`) goes to its own topic only;
 *   5. `transfer.commit` per device: whole-file check, install, activate.
 *
 * Chunks are read from the blob with positional reads, so memory stays at window × chunk size.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { EventSchema, FleetError, parseTopic, signManifest, toErrorBody, topics } from '@edgefleet/protocol';
import type { DeviceInfo, ErrorBody, Manifest, ManifestInput, SignedManifest, TransferTarget } from '@edgefleet/protocol';
import type { ModelVersionRecord } from './state.js';
import type { RequestFn } from './requester.js';
import { checkCompatibility, estimatedMemoryBytes } from './registry.js';
import { DEFAULT_CHUNK_SIZE, loadChunkTable } from './chunk-table.js';

export { DEFAULT_CHUNK_SIZE, hashChunks } from './chunk-table.js';

/** Chosen by `npm run bench:transfer` (see README.registry.md). */
export const DEFAULT_WINDOW = 16;
export const DEFAULT_EXPIRY_MS = 60 * 60 * 1000;
export const DEFAULT_DEADLINE_MS = 10 * 60 * 1000;

export type DeliveryTarget = { devices: string[] } | { group: string; devices: string[] };

export interface DeliverOptions {
  mqtt: MqttClient;
  request: RequestFn;
  record: ModelVersionRecord;
  blobPath: string;
  keys: { privateKeyPem: string };
  target: DeliveryTarget;
  chunkSize?: number;
  /** Publishes awaiting the broker's PUBACK at any time. */
  window?: number;
  /** Activate after install (default true). */
  activate?: boolean;
  /** Signed as an explicit rollback: the devices accept it although they accepted a higher version. */
  rollback?: boolean;
  /** Received chunks per device, from the devices' progress events and status replies. */
  onProgress?: (device: string, received: number, total: number) => void;
  /** Every chunk publish the broker acknowledged (for counting); a returned promise holds that publish slot until it settles. */
  onChunk?: (via: TransferTarget, index: number) => void | Promise<void>;
  /** Whole delivery, offers to commits. */
  deadlineMs?: number;
  /** How long the signed manifest stays valid. */
  expiresInMs?: number;
  /** Timeout of offer/status requests; commit gets `commitTimeoutMs` (it loads and smoke-tests the model). */
  requestTimeoutMs?: number;
  /** Offers and status requests in flight at once (default 32); commits get half. Raise for large fleets. */
  concurrency?: number;
  commitTimeoutMs?: number;
  /** What each device reported about itself; a device that cannot run the model gets 'incompatible'. */
  deviceInfo?: (device: string) => DeviceInfo | null | undefined;
  /** Subscribe to the target devices' event topics for progress (leave false when the client already subscribes to all events). */
  subscribeEvents?: boolean;
  logger?: Logger;
  /** Milliseconds spent in each phase (hash, offer, chunks, commit), for benchmarks and logs. */
  onPhase?: (phase: 'hash' | 'offer' | 'chunks' | 'commit', ms: number) => void;
}

export type DeviceDelivery =
  | { ok: true; version: number; activated: boolean; previous: number | null }
  | { ok: false; error: ErrorBody };
export type DeliveryResults = Record<string, DeviceDelivery>;

/** Deterministic per (model, version, bytes, chunk size), so a later delivery resumes a device's staging. */
export function transferIdFor(record: Pick<ModelVersionRecord, 'name' | 'version' | 'sha256'>, chunkSize: number): string {
  const digest = createHash('sha256').update(`${record.name}\n${record.version}\n${record.sha256}\n${chunkSize}`).digest('hex');
  return `t${digest.slice(0, 23)}`;
}

export function buildManifest(
  record: ModelVersionRecord,
  hashes: { chunks: string[] },
  opts: { chunkSize: number; target: DeliveryTarget; expiresInMs: number; rollback: boolean; now?: Date },
): ManifestInput {
  const now = opts.now ?? new Date();
  return {
    kind: 'model',
    name: record.name,
    version: record.version,
    sha256: record.sha256,
    length: record.length,
    issuedAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + opts.expiresInMs).toISOString(),
    target: 'group' in opts.target ? { groups: [opts.target.group] } : { devices: [...opts.target.devices] },
    chunking: { size: opts.chunkSize, sha256: hashes.chunks },
    rollback: opts.rollback,
    requires: {
      ...(record.opset !== null ? { opset: record.opset } : {}),
      ...(record.minOnnxruntime ? { onnxruntime: record.minOnnxruntime } : {}),
      memoryBytes: estimatedMemoryBytes(record.length),
    },
    ...(record.processing ? { processing: record.processing } : {}),
  };
}


/** Runs `task` over `items` with at most `limit` at once. */
async function eachLimited<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await task(item);
    }
  });
  await Promise.all(workers);
}

interface ChunkJob {
  via: TransferTarget;
  index: number;
}

export async function deliverModel(opts: DeliverOptions): Promise<DeliveryResults> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const window = Math.max(1, opts.window ?? DEFAULT_WINDOW);
  const concurrency = Math.max(1, opts.concurrency ?? 32);
  const deadline = Date.now() + (opts.deadlineMs ?? DEFAULT_DEADLINE_MS);
  const requestTimeout = opts.requestTimeoutMs ?? 15_000;
  const commitTimeout = opts.commitTimeoutMs ?? 120_000;
  const activate = opts.activate ?? true;
  const { record, mqtt, request } = opts;
  const log = opts.logger;
  const group = 'group' in opts.target ? opts.target.group : undefined;
  const results: DeliveryResults = {};
  const label = `${record.name}@${record.version}`;

  const left = (): number => deadline - Date.now();
  const timeout = (ms: number): number => Math.max(1, Math.min(ms, left()));

  // 1. compatibility: nothing is sent to a device that cannot run the model
  const devices: string[] = [];
  for (const device of new Set(opts.target.devices)) {
    const info = opts.deviceInfo?.(device);
    const reason = info ? checkCompatibility(record, info) : undefined;
    if (reason) results[device] = { ok: false, error: { code: 'incompatible', message: reason } };
    else devices.push(device);
  }
  if (devices.length === 0) return results;

  let phaseStart = Date.now();
  const phase = (name: 'hash' | 'offer' | 'chunks' | 'commit'): void => {
    const t = Date.now();
    opts.onPhase?.(name, t - phaseStart);
    phaseStart = t;
  };
  // 2. manifest
  const hashes = { chunks: await loadChunkTable(opts.blobPath, record, chunkSize) };
  const signed: SignedManifest = signManifest(
    buildManifest(record, hashes, {
      chunkSize,
      target: opts.target,
      expiresInMs: opts.expiresInMs ?? DEFAULT_EXPIRY_MS,
      rollback: opts.rollback ?? false,
    }),
    opts.keys.privateKeyPem,
  );
  const manifest = signed.manifest as Manifest;
  phase('hash');
  const total = manifest.chunking.sha256.length;
  const transferId = transferIdFor(record, chunkSize);
  const missing = new Map<string, Set<number>>();
  const fail = (device: string, error: unknown): void => {
    missing.delete(device);
    results[device] = { ok: false, error: toErrorBody(error) };
    log?.warn({ device, transferId, error: toErrorBody(error) }, 'delivery to device failed');
  };
  const report = (device: string): void => {
    const m = missing.get(device);
    if (m) opts.onProgress?.(device, total - m.size, total);
  };

  // progress events from the devices (authoritative, throttled on their side)
  const eventTopics = devices.map((d) => topics.device(d, 'events'));
  const onMessage = (topic: string, payload: Buffer): void => {
    const parsed = parseTopic(topic);
    if (parsed?.kind !== 'device' || parsed.channel !== 'events' || !missing.has(parsed.device)) return;
    let json: unknown;
    try {
      json = JSON.parse(payload.toString());
    } catch {
      return; // not an event this delivery can use
    }
    const e = EventSchema.safeParse(json);
    if (e.success && e.data.event === 'transfer.progress' && e.data.data.transferId === transferId) {
      opts.onProgress?.(parsed.device, e.data.data.received, e.data.data.total);
    }
  };
  if (opts.onProgress) {
    mqtt.on('message', onMessage);
    if (opts.subscribeEvents) await mqtt.subscribeAsync(eventTopics, { qos: 0 });
  }

  const file = await open(opts.blobPath, 'r');
  try {
    // 3. offers
    await eachLimited(devices, concurrency, async (device) => {
      try {
        const via: TransferTarget = group ? { kind: 'group', name: group } : { kind: 'device', name: device };
        const answer = await request(device, 'transfer.offer', { transferId, manifest: signed, via }, timeout(requestTimeout));
        if (answer.total !== total) throw new FleetError('bad_request', `${device} counts ${answer.total} chunks, the manifest ${total}`);
        missing.set(device, new Set(answer.missing.filter((i) => i < total)));
        report(device);
      } catch (error) {
        fail(device, error);
      }
    });
    log?.info({ transferId, model: label, devices: missing.size, chunks: total, chunkSize, window }, 'transfer offered');
    phase('offer');

    // 4. chunks: once to the group, then per device what is still missing
    let round = 0;
    let stalled = 0;
    while ([...missing.values()].some((m) => m.size > 0)) {
      if (left() <= 0) {
        for (const [device, m] of missing) {
          if (m.size > 0) fail(device, new FleetError('deadline_exceeded', `${m.size} of ${total} chunks of ${label} still missing at the deadline; deliver again to resume`));
        }
        break;
      }
      const jobs: ChunkJob[] = [];
      if (group && round === 0) {
        const union = new Set<number>();
        for (const m of missing.values()) for (const i of m) union.add(i);
        for (const index of [...union].sort((a, b) => a - b)) jobs.push({ via: { kind: 'group', name: group }, index });
      } else {
        // interleave devices, so each makes progress at the same pace
        const lists = [...missing].map(([device, m]) => [...m].sort((a, b) => a - b).map((index): ChunkJob => ({ via: { kind: 'device', name: device }, index })));
        for (let k = 0; lists.some((l) => k < l.length); k++) for (const l of lists) if (k < l.length) jobs.push(l[k]!);
      }
      try {
        await publishChunks(jobs);
      } catch (error) {
        for (const device of [...missing.keys()]) fail(device, error);
        break;
      }
      round++;
      const before = [...missing.values()].reduce((n, m) => n + m.size, 0);
      await eachLimited([...missing.keys()], concurrency, async (device) => {
        try {
          const answer = await request(device, 'transfer.status', { transferId }, timeout(requestTimeout));
          missing.set(device, new Set(answer.missing.filter((i) => i < total)));
          report(device);
        } catch (error) {
          fail(device, error);
        }
      });
      const after = [...missing.values()].reduce((n, m) => n + m.size, 0);
      stalled = after >= before ? stalled + 1 : 0;
      if (stalled >= 3) {
        for (const [device, m] of missing) {
          if (m.size > 0) fail(device, new FleetError('missing_chunk', `${device} kept missing ${m.size} chunks of ${label} after 3 resends (corrupted on the way?); see its log events`));
        }
      }
    }

    phase('chunks');
    // 5. commit
    await eachLimited([...missing.keys()], Math.max(1, Math.floor(concurrency / 2)), async (device) => {
      for (let attempt = 0; ; attempt++) {
        try {
          const done = await request(device, 'transfer.commit', { transferId, activate }, timeout(commitTimeout));
          results[device] = { ok: true, version: done.version, activated: done.activated, previous: done.previous };
          opts.onProgress?.(device, total, total);
          return;
        } catch (error) {
          const code = error instanceof FleetError ? error.code : 'internal';
          if ((code !== 'missing_chunk' && code !== 'corrupt_chunk') || attempt >= 2 || left() <= 0) {
            fail(device, error);
            return;
          }
          // chunks went bad on the device's disk: send what it misses now, then commit again
          try {
            const answer = await request(device, 'transfer.status', { transferId }, timeout(requestTimeout));
            await publishChunks(answer.missing.map((index) => ({ via: { kind: 'device', name: device }, index })));
          } catch (statusError) {
            fail(device, statusError);
            return;
          }
        }
      }
    });
    phase('commit');
  } finally {
    await file.close();
    if (opts.onProgress) {
      mqtt.off('message', onMessage);
      if (opts.subscribeEvents) await mqtt.unsubscribeAsync(eventTopics).catch(() => undefined); // the client may be closing
    }
  }
  return results;

  /** Publishes chunks with at most `window` unacknowledged at once. */
  async function publishChunks(jobs: readonly ChunkJob[]): Promise<void> {
    let failure: unknown;
    await eachLimited(jobs, window, async (job) => {
      if (failure !== undefined || left() <= 0) return;
      const offset = job.index * chunkSize;
      const length = Math.min(chunkSize, record.length - offset);
      const payload = Buffer.allocUnsafe(length);
      await readExactly(file, payload, offset);
      try {
        await mqtt.publishAsync(topics.transferChunk(job.via, transferId, job.index), payload, { qos: 1 });
        await opts.onChunk?.(job.via, job.index);
      } catch (error) {
        failure = error;
      }
    });
    if (failure !== undefined) {
      throw new FleetError('unavailable', `publishing chunks of ${label} failed: ${(failure as Error).message}; is the broker reachable?`);
    }
  }
}

async function readExactly(file: FileHandle, buffer: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buffer.length) {
    const { bytesRead } = await file.read(buffer, done, buffer.length - done, position + done);
    if (bytesRead === 0) throw new FleetError('internal', 'the registry blob is shorter than its record; add the model again');
    done += bytesRead;
  }
}
