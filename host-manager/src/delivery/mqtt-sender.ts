/**
 * Delivery of a model or an image archive over MQTT, the sending side.
 *
 *   1. compatibility: devices whose reported runtime or memory cannot run the model get
 *      'incompatible' and nothing is sent to them;
 *   2. sign a manifest (name, version, sha256, length, expiry, target, per-chunk sha256);
 *   3. `transfer.offer` to each device: it checks signature, target, expiry, version and free
 *      disk, and answers with the chunks it still misses (all, or only some after a restart);
 *      when the delivery goes to every online device of a group (`groupRequests`), the offer,
 *      the status requests and the commit are each published once on the group's command
 *      topic and the replies collected, instead of one request per device;
 *   4. publish chunks (binary, QoS 1) with a bounded window of unacknowledged publishes. A
 *      group target gets each chunk once on the group's topic (the broker fans it out); what
 *      a device still misses afterwards (`transfer.status`) goes to its own topic only; a
 *      device that does not answer a status request in time is asked again the next round
 *      (without a resend) and fails only at its second silence in a row;
 *   5. `transfer.commit` per device: whole-file check, install, activate (a sample that goes by hash
 *      is delivered between install and activation: check.ts).
 *
 * Chunks are read from the blob with positional reads, so memory stays at window × chunk size.
 */
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { BrokerClient } from '../broker-client.js';
import type { Logger } from 'pino';
import { EventSchema, FleetError, nameRecord, parseMessage, parseTopic, signManifest, toErrorBody, topics } from '@edgefleet/protocol';
import type { CommandParams, CommandResult, DeviceInfo, ErrorBody, FleetEvent, Manifest, TransferTarget } from '@edgefleet/protocol';
import type { RequestFn, Requester } from '../devices/requester.js';
import { checkCompatibility } from '../models/compatibility.js';
import { DEFAULT_CHUNK_SIZE, loadChunkTable } from './chunk-table.js';
import { DEFAULT_DEADLINE_MS, DEFAULT_EXPIRY_MS, DEFAULT_WINDOW, buildManifest, isAgentRecord, isImageRecord, transferIdFor } from './manifest.js';
import type { ArtifactRecord, DeliveryTarget } from './manifest.js';
import { activateWithSample } from './check.js';
import type { DeliveryCheck } from './check.js';

export interface DeliverOptions {
  mqtt: BrokerClient;
  request: RequestFn;
  /**
   * One request per step on the group's command topic instead of one per device. Only for a
   * delivery to every online device of the group: every device of the group receives them.
   */
  groupRequests?: Requester['requestGroup'];
  /** A model version, or an image version (its manifest pins the image ID and carries the container spec). */
  record: ArtifactRecord;
  blobPath: string;
  keys: { privateKeyPem: string };
  target: DeliveryTarget;
  chunkSize?: number;
  /** Publishes awaiting the broker's PUBACK at any time. */
  window?: number;
  /** Activate after install (default true). */
  activate?: boolean;
  /**
   * Signed as an explicit rollback with this sequence number (from the state's nextRollbackSeq): the
   * devices accept it once although they accepted a higher version.
   */
  rollbackSeq?: number;
  /** The version's activation check (check.ts deliveryCheck): in the manifest, and a sample by hash to deliver before activating. */
  check?: DeliveryCheck;
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


type Phase = 'hash' | 'offer' | 'chunks' | 'commit';

/** One delivery in progress: its settings, the signed manifest, and what each device still misses. */
interface Delivery {
  opts: DeliverOptions;
  record: ArtifactRecord;
  label: string;
  chunkSize: number;
  window: number;
  concurrency: number;
  deadline: number;
  requestTimeout: number;
  group: string | undefined;
  /** Offers, status requests and commits go once to the group (see DeliverOptions.groupRequests). */
  byGroup: Requester['requestGroup'] | undefined;
  transferId: string;
  total: number;
  signed: ReturnType<typeof signManifest>;
  file: FileHandle;
  missing: Map<string, Set<number>>;
  /** Status requests in a row a device did not answer in time. */
  unanswered: Map<string, number>;
  results: DeliveryResults;
}

interface ChunkJob {
  via: TransferTarget;
  index: number;
}

export async function deliverModel(opts: DeliverOptions): Promise<DeliveryResults> {
  const { record } = opts;
  const results: DeliveryResults = nameRecord();
  // 1. compatibility: nothing is sent to a device that cannot run the model
  const devices: string[] = [];
  for (const device of new Set(opts.target.devices)) {
    const info = opts.deviceInfo?.(device);
    // an image's platform and engine, and an agent bundle's architecture, are checked by the device at the offer, before a byte is sent
    const reason = info && !isImageRecord(record) && !isAgentRecord(record) ? checkCompatibility(record, info) : undefined;
    if (reason) results[device] = { ok: false, error: { code: 'incompatible', message: reason } };
    else devices.push(device);
  }
  if (devices.length === 0) return results;

  let phaseStart = Date.now();
  const phase = (name: Phase): void => {
    const t = Date.now();
    opts.onPhase?.(name, t - phaseStart);
    phaseStart = t;
  };
  // 2. manifest
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const hashes = { chunks: await loadChunkTable(opts.blobPath, record, chunkSize) };
  const signed = signManifest(
    {
      ...buildManifest(record, hashes, {
        chunkSize,
        target: opts.target,
        expiresInMs: opts.expiresInMs ?? DEFAULT_EXPIRY_MS,
        rollback: opts.rollbackSeq !== undefined,
        ...(opts.check ? { check: opts.check.manifest } : {}),
      }),
      ...(opts.rollbackSeq !== undefined ? { rollbackSeq: opts.rollbackSeq } : {}),
    },
    opts.keys.privateKeyPem,
  );
  phase('hash');
  const d: Delivery = {
    opts,
    record,
    label: `${record.name}@${record.version}`,
    chunkSize,
    window: Math.max(1, opts.window ?? DEFAULT_WINDOW),
    concurrency: Math.max(1, opts.concurrency ?? 32),
    deadline: Date.now() + (opts.deadlineMs ?? DEFAULT_DEADLINE_MS),
    requestTimeout: opts.requestTimeoutMs ?? 15_000,
    group: 'group' in opts.target ? opts.target.group : undefined,
    byGroup: 'group' in opts.target ? opts.groupRequests : undefined,
    transferId: transferIdFor(record, chunkSize),
    total: (signed.manifest as Manifest).chunking.sha256.length,
    signed,
    file: await open(opts.blobPath, 'r'),
    missing: new Map(),
    unanswered: new Map(),
    results,
  };
  const stopListening = await listenForProgress(d, devices);
  try {
    await offerAll(d, devices); // 3.
    phase('offer');
    await sendChunks(d); // 4.
    phase('chunks');
    await commitAll(d); // 5.
    phase('commit');
  } finally {
    await d.file.close();
    await stopListening();
  }
  return results;
}

const left = (d: Delivery): number => d.deadline - Date.now();
const timeout = (d: Delivery, ms: number): number => Math.max(1, Math.min(ms, left(d)));

function fail(d: Delivery, device: string, error: unknown): void {
  d.missing.delete(device);
  const body = toErrorBody(error);
  d.results[device] = { ok: false, error: body };
  d.opts.logger?.warn({ device, transferId: d.transferId, error: body }, 'delivery to device failed');
}

function report(d: Delivery, device: string): void {
  const m = d.missing.get(device);
  if (m) d.opts.onProgress?.(device, d.total - m.size, d.total);
}

/** Progress events from the devices (authoritative, throttled on their side); returns how to stop listening. */
async function listenForProgress(d: Delivery, devices: string[]): Promise<() => Promise<void>> {
  const { opts } = d;
  if (!opts.onProgress) return async () => undefined;
  const onProgress = opts.onProgress;
  const eventTopics = devices.map((device) => topics.device(device, 'events'));
  const onMessage = (topic: string, payload: Buffer): void => {
    const parsed = parseTopic(topic);
    if (parsed?.kind !== 'device' || parsed.channel !== 'events' || !d.missing.has(parsed.device)) return;
    let e: FleetEvent;
    try {
      e = parseMessage(EventSchema, payload); // size and depth checked before parsing, as every device message
    } catch {
      return; // not an event this delivery can use (the fleet's intake counts it)
    }
    if (e.event === 'transfer.progress' && e.data.transferId === d.transferId) onProgress(parsed.device, e.data.received, e.data.total);
  };
  opts.mqtt.on('message', onMessage);
  if (opts.subscribeEvents) await opts.mqtt.subscribeAsync(eventTopics, { qos: 0 });
  return async () => {
    opts.mqtt.off('message', onMessage);
    if (opts.subscribeEvents) await opts.mqtt.unsubscribeAsync(eventTopics).catch(() => undefined); // the client may be closing
  };
}

/**
 * One request to each device, or one to the group when the delivery may (byGroup: then the
 * params must be the same for every device); `onAnswer` per device that answered, `onError`
 * per device that did not (default: its delivery fails).
 */
async function askEach<C extends 'transfer.offer' | 'transfer.status'>(
  d: Delivery,
  devices: string[],
  command: C,
  params: (device: string) => CommandParams<C>,
  onAnswer: (device: string, answer: CommandResult<C>) => void,
  onError: (device: string, error: unknown) => void = (device, error) => fail(d, device, error),
): Promise<void> {
  const take = (device: string, answer: CommandResult<C>): void => {
    try {
      onAnswer(device, answer);
    } catch (error) {
      fail(d, device, error);
    }
  };
  if (d.byGroup && d.group) {
    const outcomes = await d.byGroup(d.group, devices, command, params(d.group), timeout(d, d.requestTimeout));
    for (const [device, outcome] of outcomes) outcome.ok ? take(device, outcome.data) : onError(device, outcome.error);
    return;
  }
  await eachLimited(devices, d.concurrency, async (device) => {
    try {
      take(device, await d.opts.request(device, command, params(device), timeout(d, d.requestTimeout)));
    } catch (error) {
      onError(device, error);
    }
  });
}

async function offerAll(d: Delivery, devices: string[]): Promise<void> {
  const via: TransferTarget | undefined = d.group ? { kind: 'group', name: d.group } : undefined;
  // a unicast delivery's offer names each device's own topic; a group's is the same for all
  const params = (device: string): CommandParams<'transfer.offer'> => ({ transferId: d.transferId, manifest: d.signed, via: via ?? { kind: 'device', name: device } });
  const onAnswer = (device: string, answer: CommandResult<'transfer.offer'>): void => {
    if (answer.total !== d.total) throw new FleetError('bad_request', `${device} counts ${answer.total} chunks, the manifest ${d.total}`);
    d.missing.set(device, new Set(answer.missing.filter((i) => i < d.total)));
    report(d, device);
  };
  await askEach(d, devices, 'transfer.offer', params, onAnswer);
  d.opts.logger?.info({ transferId: d.transferId, model: d.label, devices: d.missing.size, chunks: d.total, chunkSize: d.chunkSize, window: d.window }, 'transfer offered');
}

/** Status requests in a row a device may leave unanswered before its delivery fails (one lost reply in ten thousand must not fail it). */
const STATUS_SILENCES = 2;

/**
 * Chunks once to the group (if any), then to each device what it still misses, until none misses
 * any or they stall. A device that did not answer the last status request gets no resend (what it
 * said it missed may be out of date, and a device too busy to answer needs no more) until it answers.
 */
async function sendChunks(d: Delivery): Promise<void> {
  let round = 0;
  let stalled = 0;
  const stillMissing = (): number => [...d.missing.values()].reduce((n, m) => n + m.size, 0);
  const onStatus = (device: string, answer: CommandResult<'transfer.status'>): void => {
    d.unanswered.delete(device);
    d.missing.set(device, new Set(answer.missing.filter((i) => i < d.total)));
    report(d, device);
  };
  const onStatusError = (device: string, error: unknown): void => {
    if (toErrorBody(error).code !== 'deadline_exceeded') return fail(d, device, error);
    const silences = (d.unanswered.get(device) ?? 0) + 1;
    d.unanswered.set(device, silences);
    if (silences >= STATUS_SILENCES) return fail(d, device, error);
    d.opts.logger?.warn({ device, transferId: d.transferId, model: d.label }, 'no answer to transfer.status in time; asking again next round');
  };
  while (stillMissing() > 0) {
    if (left(d) <= 0) {
      for (const [device, m] of d.missing) {
        if (m.size > 0) fail(d, device, new FleetError('deadline_exceeded', `${m.size} of ${d.total} chunks of ${d.label} still missing at the deadline; deliver again to resume`));
      }
      return;
    }
    try {
      await publishChunks(d, chunkJobs(d, round));
    } catch (error) {
      for (const device of [...d.missing.keys()]) fail(d, device, error);
      return;
    }
    round++;
    const before = stillMissing();
    // only devices still missing chunks: one that has them all goes on to the commit, which checks the whole file
    const incomplete = [...d.missing].filter(([, m]) => m.size > 0).map(([device]) => device);
    await askEach(d, incomplete, 'transfer.status', () => ({ transferId: d.transferId }), onStatus, onStatusError);
    stalled = stillMissing() >= before ? stalled + 1 : 0;
    if (stalled >= 3) {
      for (const [device, m] of d.missing) {
        // a silent device is the silence rule's: its missing chunks are what it said before it went quiet
        if (m.size > 0 && !d.unanswered.has(device)) fail(d, device, new FleetError('missing_chunk', `${device} kept missing ${m.size} chunks of ${d.label} after 3 resends (corrupted on the way?); see its log events`));
      }
    }
  }
}

/** The first round to a group goes once through the group's topic; later rounds interleave devices, so each progresses at the same pace. */
function chunkJobs(d: Delivery, round: number): ChunkJob[] {
  const jobs: ChunkJob[] = [];
  if (d.group && round === 0) {
    const union = new Set<number>();
    for (const m of d.missing.values()) for (const i of m) union.add(i);
    for (const index of [...union].sort((a, b) => a - b)) jobs.push({ via: { kind: 'group', name: d.group }, index });
    return jobs;
  }
  const answered = [...d.missing].filter(([device]) => !d.unanswered.has(device));
  const lists = answered.map(([device, m]) => [...m].sort((a, b) => a - b).map((index): ChunkJob => ({ via: { kind: 'device', name: device }, index })));
  for (let k = 0; lists.some((l) => k < l.length); k++) for (const l of lists) if (k < l.length) jobs.push(l[k]!);
  return jobs;
}

async function commitAll(d: Delivery): Promise<void> {
  const { opts } = d;
  const activate = opts.activate ?? true;
  const sample = opts.check?.sample;
  const commitTimeout = opts.commitTimeoutMs ?? 120_000;
  const installActivate = activate && !sample;
  let devices = [...d.missing.keys()];
  const installed: Array<[string, CommandResult<'transfer.commit'>]> = [];
  if (d.byGroup && d.group && devices.length > 0) {
    // one commit to the group; those that need chunks again (or did not answer) go on one by one below
    const outcomes = await d.byGroup(d.group, devices, 'transfer.commit', { transferId: d.transferId, activate: installActivate }, timeout(d, commitTimeout));
    devices = [];
    for (const [device, outcome] of outcomes) {
      if (outcome.ok) installed.push([device, outcome.data]);
      else if (outcome.error.code === 'missing_chunk' || outcome.error.code === 'corrupt_chunk') devices.push(device);
      else fail(d, device, outcome.error);
    }
  }
  const limit = Math.max(1, Math.floor(d.concurrency / 2));
  await eachLimited(installed, limit, ([device, done]) => finishCommit(d, device, done, commitTimeout));
  await eachLimited(devices, limit, async (device) => {
    // a sample by hash can only reach the device once the version is installed, so activation waits for it
    const done = await commitOne(d, device, installActivate, commitTimeout);
    if (done) await finishCommit(d, device, done, commitTimeout);
  });
}

/** Records a committed device; with a sample by hash, delivers it and activates the version first. */
async function finishCommit(d: Delivery, device: string, done: CommandResult<'transfer.commit'>, commitTimeout: number): Promise<void> {
  const { opts } = d;
  const sample = opts.check?.sample;
  if (!sample || !(opts.activate ?? true)) {
    d.results[device] = { ok: true, version: done.version, activated: done.activated, previous: done.previous };
  } else {
    try {
      const ref = { model: d.record.name, version: d.record.version };
      const activated = await activateWithSample(opts.request, device, ref, sample, { request: timeout(d, d.requestTimeout), activate: timeout(d, commitTimeout) });
      d.results[device] = { ok: true, version: activated.version, activated: true, previous: activated.previous };
    } catch (error) {
      fail(d, device, error);
      return;
    }
  }
  opts.onProgress?.(device, d.total, d.total);
}

/** transfer.commit, resending what a device reports missing or corrupt (up to 3 times); undefined when it failed (recorded). */
async function commitOne(d: Delivery, device: string, activate: boolean, commitTimeout: number): Promise<CommandResult<'transfer.commit'> | undefined> {
  const { opts } = d;
  for (let attempt = 0; ; attempt++) {
    try {
      return await opts.request(device, 'transfer.commit', { transferId: d.transferId, activate }, timeout(d, commitTimeout));
    } catch (error) {
      const code = error instanceof FleetError ? error.code : 'internal';
      if ((code !== 'missing_chunk' && code !== 'corrupt_chunk') || attempt >= 2 || left(d) <= 0) {
        fail(d, device, error);
        return undefined;
      }
      // chunks went bad on the device's disk: send what it misses now, then commit again
      try {
        const answer = await opts.request(device, 'transfer.status', { transferId: d.transferId }, timeout(d, d.requestTimeout));
        await publishChunks(d, answer.missing.map((index) => ({ via: { kind: 'device', name: device }, index })));
      } catch (statusError) {
        fail(d, device, statusError);
        return undefined;
      }
    }
  }
}

/** Publishes chunks with at most `window` unacknowledged at once. */
async function publishChunks(d: Delivery, jobs: readonly ChunkJob[]): Promise<void> {
  let failure: unknown;
  await eachLimited(jobs, d.window, async (job) => {
    if (failure !== undefined || left(d) <= 0) return;
    const offset = job.index * d.chunkSize;
    const length = Math.min(d.chunkSize, d.record.length - offset);
    const payload = Buffer.allocUnsafe(length);
    await readExactly(d.file, payload, offset);
    try {
      await d.opts.mqtt.publishAsync(topics.transferChunk(job.via, d.transferId, job.index), payload, { qos: 1 });
      await d.opts.onChunk?.(job.via, job.index);
    } catch (error) {
      failure = error;
    }
  });
  if (failure !== undefined) {
    throw new FleetError('unavailable', `publishing chunks of ${d.label} failed: ${(failure as Error).message}; is the broker reachable?`);
  }
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

async function readExactly(file: FileHandle, buffer: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buffer.length) {
    const { bytesRead } = await file.read(buffer, done, buffer.length - done, position + done);
    if (bytesRead === 0) throw new FleetError('internal', 'the registry blob is shorter than its record; add the model again');
    done += bytesRead;
  }
}
