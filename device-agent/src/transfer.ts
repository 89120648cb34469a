/**
 * The receiving end of a model transfer (see shared/guide/security.md).
 *
 *   offer   verify the signed manifest (signature, shape), the target, the expiry, the
 *           anti-rollback rule and free disk; open (or resume) a staging file and
 *           answer with the chunks still missing.
 *   chunk   check the index, the exact size and the sha256 of each chunk, write it at its
 *           offset; anything wrong is dropped (it stays missing) and reported.
 *   status  the chunks still missing, once every chunk received so far is on disk.
 *   commit  exact length + whole-file sha256, fsync, install into the model store,
 *           record the version as accepted, activate (unless told not to).
 *
 * Staging: `<dataDir>/transfers/<transferId>/{manifest.json,data.part,chunks.log}`.
 * chunks.log is an append-only list of the indices written (uint32 LE); after a restart
 * each listed chunk is re-hashed from data.part before it counts, so a chunk is never
 * trusted just because the log says so, and only what is really missing is asked for.
 */
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, statfs as fsStatfs } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { FleetError, checkAcceptance, isValidName, makeEvent, verifyManifest } from '@edgefleet/protocol';
import type {
  CommandResult,
  DeviceIdentity,
  FleetEvent,
  Manifest,
  ModelState,
  ParsedParams,
  SignedManifest,
} from '@edgefleet/protocol';

/** What the receiver needs from the model store (a subset of ModelService). */
export interface ReceiverModels {
  list(): ModelState[];
  install(manifest: Manifest, stagedFile: string): Promise<void>;
  activate(name: string, version: number): Promise<{ model: string; version: number; previous: number | null }>;
  remove?(name: string, version: number): Promise<{ removed: boolean }>;
  highestAccepted(name: string): number;
  recordAccepted(name: string, version: number): Promise<void>;
}

/** Receives agent bundles (manifests of kind 'agent'): src/update/. Without it such manifests are refused. */
export interface ReceiverAgentBundles {
  highestAccepted(): number;
  /** Throws (a FleetError) when this device cannot take the bundle (architecture, no launcher): checked at offer. */
  check(manifest: Manifest): void;
  install(stagedFile: string, manifest: Manifest): Promise<unknown>;
}

export interface DiskSpace {
  /** Bytes available to this process. */
  freeBytes: number;
}

export interface TransferReceiverOptions {
  dataDir: string;
  publicKeyPem: string;
  identity: DeviceIdentity;
  models: ReceiverModels;
  agentBundles?: ReceiverAgentBundles;
  publishEvent: (event: FleetEvent) => void;
  logger: Logger;
  /** Free space where the staging file goes; defaults to fs.statfs (tests inject a full disk with it). */
  diskSpace?: (dir: string) => Promise<DiskSpace>;
  now?: () => Date;
  /** Least time between two transfer.progress events of one transfer. */
  progressIntervalMs?: number;
  /** Bytes kept free beyond the file itself. */
  diskReserveBytes?: number;
  /** fdatasync the staging file in the background every this many bytes received (0 = only at commit). */
  backgroundSyncBytes?: number;
  /**
   * Always read the staged file back and hash it at commit, even when every chunk arrived in order and
   * the whole-file hash was computed from the verified chunks as they came (the default skips that
   * second pass; the model store re-verifies what it installs).
   */
  verifyFromDisk?: boolean;
}

export interface TransferReceiver {
  offer(p: ParsedParams<'transfer.offer'>): Promise<CommandResult<'transfer.offer'>>;
  status(p: ParsedParams<'transfer.status'>): Promise<CommandResult<'transfer.status'>>;
  commit(p: ParsedParams<'transfer.commit'>): Promise<CommandResult<'transfer.commit'>>;
  chunk(transferId: string, index: number, payload: Buffer): void;
  close(): Promise<void>;
  /** Counters for tests and logs: chunks written, duplicates, rejected by reason. */
  stats(): ReceiverStats;
}

export interface ReceiverStats {
  written: number;
  duplicates: number;
  unknownTransfer: number;
  rejected: Record<string, number>;
}

interface Transfer {
  id: string;
  dir: string;
  signed: SignedManifest;
  manifest: Manifest;
  total: number;
  /** Per chunk: 0 missing, 1 being written, 2 on disk. */
  have: Uint8Array;
  received: number;
  /** The version is already in the model store: nothing to receive. */
  installed: boolean;
  data: FileHandle | null;
  log: FileHandle | null;
  /** Chunk writes in flight (positional, so they may overlap); status and commit wait for them. */
  pending: Set<Promise<void>>;
  /** Indices written but not yet appended to chunks.log; appended in batches, in order. */
  logQueue: number[];
  logChain: Promise<void>;
  logScheduled: boolean;
  /** Background fdatasync every SYNC_EVERY bytes, so the final fsync does not write the whole file back at once. */
  syncChain: Promise<void>;
  unsynced: number;
  /**
   * sha256 of the whole file, fed with each verified chunk while they arrive in order (0, 1, 2, …)
   * in this session; null once one arrives out of order, a write fails or the staging was resumed
   * from disk — the commit then reads the file back and hashes it.
   */
  running: Hash | null;
  nextInOrder: number;
  committing: Promise<CommandResult<'transfer.commit'>> | null;
  lastProgressAt: number;
  progressTimer: NodeJS.Timeout | null;
  closed: boolean;
}

const LOG_ENTRY = 4;
const SYNC_EVERY = 0;

export function createTransferReceiver(opts: TransferReceiverOptions): TransferReceiver {
  const root = join(opts.dataDir, 'transfers');
  const log = opts.logger.child({ part: 'transfer' });
  const now = opts.now ?? (() => new Date());
  const progressInterval = opts.progressIntervalMs ?? 500;
  const reserve = opts.diskReserveBytes ?? 0;
  const syncEvery = opts.backgroundSyncBytes ?? SYNC_EVERY;
  const diskSpace =
    opts.diskSpace ??
    (async (dir: string): Promise<DiskSpace> => {
      const s = await fsStatfs(dir);
      return { freeBytes: Number(s.bavail) * Number(s.bsize) };
    });
  const transfers = new Map<string, Transfer>();
  /** Offers, loads and commits of one transfer id run one at a time. */
  const locks = new Map<string, Promise<unknown>>();
  const stats: ReceiverStats = { written: 0, duplicates: 0, unknownTransfer: 0, rejected: {} };

  function locked<T>(id: string, task: () => Promise<T>): Promise<T> {
    const previous = locks.get(id) ?? Promise.resolve();
    const run = previous.then(task, task);
    const settled = run.catch(() => undefined);
    locks.set(id, settled);
    void settled.then(() => {
      if (locks.get(id) === settled) locks.delete(id);
    });
    return run;
  }

  function event(e: FleetEvent): void {
    try {
      opts.publishEvent(e);
    } catch (error) {
      // an event that cannot be published must not fail the transfer; it is logged instead
      log.warn({ err: error, event: e.event }, 'could not publish event');
    }
  }

  /** A refused chunk is counted, logged and reported as a warning event (it stays missing). */
  function reject(transferId: string, index: number, code: string, message: string): void {
    stats.rejected[code] = (stats.rejected[code] ?? 0) + 1;
    log.warn({ transferId, index, code }, message);
    event(makeEvent('log', { level: 'warn', message: `${code}: transfer ${transferId} chunk ${index}: ${message}` }));
  }

  function chunkLength(m: Manifest, index: number, total: number): number {
    return index < total - 1 ? m.chunking.size : m.length - m.chunking.size * (total - 1);
  }

  function missingOf(t: Transfer): number[] {
    if (t.installed) return [];
    const missing: number[] = [];
    for (let i = 0; i < t.total; i++) if (t.have[i] !== 2) missing.push(i);
    return missing;
  }

  /** Waits until every chunk received so far is written and logged. */
  async function drain(t: Transfer): Promise<void> {
    while (t.pending.size > 0) await Promise.all([...t.pending]);
    await t.logChain;
  }

  function scheduleLog(t: Transfer): void {
    if (t.logScheduled) return;
    t.logScheduled = true;
    t.logChain = t.logChain.then(async () => {
      t.logScheduled = false;
      const batch = t.logQueue.splice(0);
      if (batch.length === 0 || !t.log) return;
      const buf = Buffer.allocUnsafe(batch.length * LOG_ENTRY);
      batch.forEach((index, k) => buf.writeUInt32LE(index, k * LOG_ENTRY));
      await t.log.write(buf);
    }).catch((error: unknown) => log.warn({ err: error, transferId: t.id }, 'could not append to the chunk log; those chunks are asked for again after a restart'));
  }

  function backgroundSync(t: Transfer): void {
    t.unsynced = 0;
    t.syncChain = t.syncChain.then(async () => {
      await t.data?.datasync();
    }).catch((error: unknown) => log.warn({ err: error, transferId: t.id }, 'background fdatasync failed; the commit syncs again'));
  }

  function progress(t: Transfer, force = false): void {
    const emit = (): void => {
      t.progressTimer = null;
      t.lastProgressAt = Date.now();
      event(makeEvent('transfer.progress', { transferId: t.id, received: t.received, total: t.total }));
    };
    if (force || t.received === t.total) {
      if (t.progressTimer) clearTimeout(t.progressTimer);
      emit();
      return;
    }
    if (t.progressTimer) return;
    const wait = t.lastProgressAt + progressInterval - Date.now();
    if (wait <= 0) emit();
    else {
      t.progressTimer = setTimeout(emit, wait);
      t.progressTimer.unref();
    }
  }

  async function closeFiles(t: Transfer): Promise<void> {
    if (t.progressTimer) clearTimeout(t.progressTimer);
    t.progressTimer = null;
    await drain(t);
    await t.syncChain;
    const files = [t.data, t.log];
    t.data = null;
    t.log = null;
    for (const f of files) if (f) await f.close();
  }

  async function drop(t: Transfer): Promise<void> {
    t.closed = true;
    transfers.delete(t.id);
    await closeFiles(t);
    await rm(t.dir, { recursive: true, force: true });
  }

  function isInstalled(m: Manifest): boolean {
    if (m.kind === 'agent') return false; // a bundle is unpacked at commit; nothing is kept to resume from
    return opts.models.list().some((s) => s.name === m.name && s.versions.includes(m.version));
  }

  /** Verified manifest, or the FleetError that says why not. */
  function verify(signed: SignedManifest): Manifest {
    const check = verifyManifest(signed, opts.publicKeyPem);
    if (!check.ok) {
      throw new FleetError(check.code === 'bad_signature' ? 'bad_signature' : 'invalid_params', check.reason);
    }
    if (check.manifest.kind === 'agent' && !opts.agentBundles) {
      throw new FleetError('unavailable', 'this agent cannot update itself: it was not started by the launcher of an installed bundle (no agentHome)');
    }
    if (check.manifest.kind !== 'model' && check.manifest.kind !== 'agent') {
      throw new FleetError('invalid_params', `manifest is for a ${check.manifest.kind}, not a model; send it with the image commands`);
    }
    return check.manifest;
  }

  function accept(m: Manifest): void {
    if (m.kind === 'agent') opts.agentBundles?.check(m);
    const highestAccepted = m.kind === 'agent' && opts.agentBundles ? opts.agentBundles.highestAccepted() : opts.models.highestAccepted(m.name);
    const refusal = checkAcceptance(m, { device: opts.identity, highestAccepted, now: now() });
    if (refusal) throw refusal;
  }

  async function writeAtomic(file: string, text: string | Buffer): Promise<void> {
    const tmp = `${file}.tmp`;
    const h = await open(tmp, 'w');
    try {
      await h.writeFile(text);
      await h.sync();
    } finally {
      await h.close();
    }
    await rename(tmp, file);
  }

  /** Opens the staging files of a transfer; re-hashes the chunks its log lists when it was on disk already. */
  async function openStaging(t: Transfer, resume: boolean): Promise<void> {
    await mkdir(t.dir, { recursive: true });
    await writeAtomic(join(t.dir, 'manifest.json'), JSON.stringify(t.signed));
    const dataFile = join(t.dir, 'data.part');
    const logFile = join(t.dir, 'chunks.log');
    t.data = await open(dataFile, resume ? 'r+' : 'w+').catch(async (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return open(dataFile, 'w+');
      throw error;
    });
    // Preallocate the declared length (sparse): nothing past it is ever written.
    await t.data.truncate(t.manifest.length);
    if (resume) {
      t.running = null;
      const logged = await readFile(logFile).catch(() => Buffer.alloc(0));
      const candidates = new Set<number>();
      for (let off = 0; off + LOG_ENTRY <= logged.length; off += LOG_ENTRY) {
        const index = logged.readUInt32LE(off);
        if (index < t.total) candidates.add(index);
      }
      let bad = 0;
      for (const index of candidates) {
        const len = chunkLength(t.manifest, index, t.total);
        const buf = Buffer.allocUnsafe(len);
        const { bytesRead } = await t.data.read(buf, 0, len, index * t.manifest.chunking.size);
        if (bytesRead === len && sha256(buf) === t.manifest.chunking.sha256[index]) {
          t.have[index] = 2;
          t.received++;
        } else bad++;
      }
      if (bad > 0) log.warn({ transferId: t.id, bad }, 'chunks listed in the log failed verification after a restart; they will be asked for again');
    }
    // Rewrite the log to exactly the verified chunks.
    const compact = Buffer.alloc(t.received * LOG_ENTRY);
    let pos = 0;
    for (let i = 0; i < t.total; i++) if (t.have[i] === 2) compact.writeUInt32LE(i, (pos++) * LOG_ENTRY);
    await writeAtomic(logFile, compact);
    t.log = await open(logFile, 'a');
  }

  function newTransfer(id: string, signed: SignedManifest, manifest: Manifest): Transfer {
    const total = manifest.chunking.sha256.length;
    return {
      id,
      dir: join(root, id),
      signed,
      manifest,
      total,
      have: new Uint8Array(total),
      received: 0,
      installed: false,
      data: null,
      log: null,
      pending: new Set(),
      logQueue: [],
      logChain: Promise.resolve(),
      logScheduled: false,
      syncChain: Promise.resolve(),
      unsynced: 0,
      running: createHash('sha256'),
      nextInOrder: 0,
      committing: null,
      lastProgressAt: 0,
      progressTimer: null,
      closed: false,
    };
  }

  /** A transfer known in memory, or found on disk after a restart. */
  async function load(id: string): Promise<Transfer | undefined> {
    const known = transfers.get(id);
    if (known) return known;
    const dir = join(root, id);
    let signed: SignedManifest;
    try {
      signed = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as SignedManifest;
    } catch {
      return undefined; // no staging for this id (or a half-created one): the sender offers again
    }
    let manifest: Manifest;
    try {
      manifest = verify(signed);
    } catch (error) {
      log.warn({ transferId: id, err: error }, 'staged manifest no longer verifies; discarding the staging');
      await rm(dir, { recursive: true, force: true });
      return undefined;
    }
    const t = newTransfer(id, signed, manifest);
    t.installed = isInstalled(manifest);
    if (!t.installed) await openStaging(t, true);
    transfers.set(id, t);
    return t;
  }

  function sameContent(a: Manifest, b: Manifest): boolean {
    return a.name === b.name && a.version === b.version && a.sha256 === b.sha256 && a.length === b.length && a.chunking.size === b.chunking.size;
  }

  /** Removes other staging directories of the same model (an abandoned older offer), so a small disk does not fill up. */
  async function removeStale(keep: string, name: string): Promise<void> {
    const entries = await readdir(root).catch(() => [] as string[]);
    for (const entry of entries) {
      if (entry === keep || !isValidName(entry) || locks.has(entry)) continue;
      const inMemory = transfers.get(entry);
      if (inMemory) {
        if (inMemory.manifest.name === name && !inMemory.committing) await drop(inMemory);
        continue;
      }
      try {
        const signed = JSON.parse(await readFile(join(root, entry, 'manifest.json'), 'utf8')) as SignedManifest;
        if ((signed.manifest as { name?: unknown }).name === name) await rm(join(root, entry), { recursive: true, force: true });
      } catch {
        // not a staging directory this receiver wrote; leave it alone
      }
    }
  }

  async function offer(p: ParsedParams<'transfer.offer'>): Promise<CommandResult<'transfer.offer'>> {
    const manifest = verify(p.manifest);
    accept(manifest);
    const via = p.via;
    if (via.kind === 'device' ? via.name !== opts.identity.id : !opts.identity.groups.includes(via.name)) {
      throw new FleetError('wrong_target', `chunks would come through ${via.kind} ${via.name}, which this device (${opts.identity.id}) does not listen to`);
    }
    return locked(p.transferId, async () => {
      let t = await load(p.transferId);
      if (t && !sameContent(t.manifest, manifest)) {
        log.info({ transferId: t.id }, 'offer with different content under a known transfer id; starting over');
        await drop(t);
        t = undefined;
      }
      if (isInstalled(manifest)) {
        // Already in the store (e.g. installed before a restart): nothing to send, commit only activates.
        if (t) await drop(t);
        const done = newTransfer(p.transferId, p.manifest, manifest);
        done.installed = true;
        transfers.set(done.id, done);
        return { missing: [], total: done.total };
      }
      if (t) {
        t.signed = p.manifest; // a fresh signature (new expiry) for the same content
        t.manifest = manifest;
        await writeAtomic(join(t.dir, 'manifest.json'), JSON.stringify(t.signed));
        return { missing: missingOf(t), total: t.total };
      }
      await mkdir(root, { recursive: true });
      await removeStale(p.transferId, manifest.name);
      const free = (await diskSpace(root)).freeBytes;
      if (free < manifest.length + reserve) {
        throw new FleetError(
          'disk_full',
          `${manifest.name}@${manifest.version} needs ${mib(manifest.length + reserve)} MiB but only ${mib(free)} MiB are free in ${opts.dataDir}; free space on the device (remove old model versions) and retry`,
        );
      }
      const fresh = newTransfer(p.transferId, p.manifest, manifest);
      try {
        await openStaging(fresh, false);
      } catch (error) {
        await closeFiles(fresh);
        await rm(fresh.dir, { recursive: true, force: true });
        if ((error as NodeJS.ErrnoException).code === 'ENOSPC') {
          throw new FleetError('disk_full', `no space left in ${opts.dataDir} for ${manifest.name}@${manifest.version}; free space on the device and retry`);
        }
        throw error;
      }
      transfers.set(fresh.id, fresh);
      log.info({ transferId: fresh.id, model: manifest.name, version: manifest.version, chunks: fresh.total }, 'transfer offered');
      return { missing: missingOf(fresh), total: fresh.total };
    });
  }

  function chunk(transferId: string, index: number, payload: Buffer): void {
    const t = transfers.get(transferId);
    if (!t || t.closed) {
      stats.unknownTransfer++;
      return; // not offered to this device (a group chunk meant for others), or already finished
    }
    if (t.installed || t.committing) {
      stats.duplicates++;
      return;
    }
    if (!Number.isInteger(index) || index < 0 || index >= t.total) {
      reject(transferId, index, 'too_long', `index ${index} is past the declared ${t.total} chunks (${t.manifest.length} bytes); refused`);
      return;
    }
    const expected = chunkLength(t.manifest, index, t.total);
    if (payload.length > expected) {
      reject(transferId, index, 'too_long', `${payload.length} bytes where the manifest declares ${expected}; refused`);
      return;
    }
    if (payload.length < expected) {
      reject(transferId, index, 'truncated', `${payload.length} bytes where the manifest declares ${expected}; dropped, it stays missing`);
      return;
    }
    if (t.have[index] !== 0) {
      stats.duplicates++;
      return;
    }
    if (sha256(payload) !== t.manifest.chunking.sha256[index]) {
      reject(transferId, index, 'corrupt_chunk', 'sha256 does not match the signed manifest; dropped, it stays missing');
      return;
    }
    const data = t.data;
    if (!data) return;
    t.have[index] = 1;
    if (t.running) {
      if (index === t.nextInOrder) {
        t.running.update(payload);
        t.nextInOrder++;
      } else t.running = null;
    }
    const write = (async () => {
      try {
        const { bytesWritten } = await data.write(payload, 0, payload.length, index * t.manifest.chunking.size);
        if (bytesWritten !== payload.length) throw new Error(`short write (${bytesWritten} of ${payload.length} bytes)`);
        t.have[index] = 2;
        t.received++;
        stats.written++;
        t.logQueue.push(index);
        scheduleLog(t);
        t.unsynced += payload.length;
        if (syncEvery > 0 && t.unsynced >= syncEvery) backgroundSync(t);
        progress(t);
      } catch (error) {
        t.have[index] = 0;
        t.running = null;
        const code = (error as NodeJS.ErrnoException).code === 'ENOSPC' ? 'disk_full' : 'internal';
        reject(transferId, index, code, `could not write the chunk: ${(error as Error).message}`);
      }
    })();
    t.pending.add(write);
    void write.then(() => t.pending.delete(write));
  }

  async function status(p: ParsedParams<'transfer.status'>): Promise<CommandResult<'transfer.status'>> {
    const t = await locked(p.transferId, () => load(p.transferId));
    if (!t) throw new FleetError('not_found', `no transfer ${p.transferId} on this device; offer it first`);
    await drain(t);
    return { missing: missingOf(t), total: t.total };
  }

  async function verifyWhole(t: Transfer): Promise<void> {
    const missing = missingOf(t);
    if (missing.length > 0) {
      throw new FleetError(
        'missing_chunk',
        `${missing.length} of ${t.total} chunks are missing (first: ${missing.slice(0, 5).join(', ')}); send them before committing`,
      );
    }
    const data = t.data!;
    const size = (await data.stat()).size;
    if (size < t.manifest.length) {
      throw new FleetError('truncated', `the staged file has ${size} bytes, the manifest declares ${t.manifest.length}; it will be received again`);
    }
    if (size > t.manifest.length) {
      throw new FleetError('too_long', `the staged file has ${size} bytes, more than the declared ${t.manifest.length}; refused`);
    }
    let whole: string;
    if (t.running && t.nextInOrder === t.total && !opts.verifyFromDisk) {
      whole = t.running.digest('hex');
      t.running = null;
      await data.sync();
    } else {
      // fsync and the whole-file hash run together: the hash reads what the sync writes back
      [, whole] = await Promise.all([data.sync(), hashFile(join(t.dir, 'data.part'))]);
    }
    if (whole === t.manifest.sha256) return;
    // Find the chunks that changed on disk and ask for them again.
    const bad: number[] = [];
    for (let i = 0; i < t.total; i++) {
      const len = chunkLength(t.manifest, i, t.total);
      const buf = Buffer.allocUnsafe(len);
      const { bytesRead } = await data.read(buf, 0, len, i * t.manifest.chunking.size);
      if (bytesRead !== len || sha256(buf) !== t.manifest.chunking.sha256[i]) {
        bad.push(i);
        if (t.have[i] === 2) t.received--;
        t.have[i] = 0;
      }
    }
    throw new FleetError(
      'corrupt_chunk',
      bad.length > 0
        ? `the staged file does not match sha256 ${t.manifest.sha256}: chunks ${bad.slice(0, 5).join(', ')} changed on disk and will be asked for again`
        : `the file's sha256 does not match the manifest although every chunk does; the manifest is inconsistent, sign it again`,
    );
  }

  async function commit(p: ParsedParams<'transfer.commit'>): Promise<CommandResult<'transfer.commit'>> {
    const t = await locked(p.transferId, () => load(p.transferId));
    if (!t) throw new FleetError('not_found', `no transfer ${p.transferId} on this device; offer it first`);
    if (t.committing) return t.committing;
    const run = async (): Promise<CommandResult<'transfer.commit'>> => {
      const m = t.manifest;
      try {
        accept(m); // the expiry may have passed while chunks were arriving
        if (m.kind === 'agent' && opts.agentBundles) {
          await drain(t);
          await verifyWhole(t);
          await closeFiles(t);
          await opts.agentBundles.install(join(t.dir, 'data.part'), m); // the agent restarts into it after this reply
          return { model: m.name, version: m.version, activated: true, previous: null };
        }
        if (!t.installed) {
          await drain(t);
          await verifyWhole(t);
          await closeFiles(t);
          await opts.models.install(m, join(t.dir, 'data.part'));
          t.installed = true;
          log.info({ model: m.name, version: m.version }, 'model installed');
        }
        if (!p.activate) {
          await opts.models.recordAccepted(m.name, m.version);
          return { model: m.name, version: m.version, activated: false, previous: null };
        }
        const result = await opts.models.activate(m.name, m.version);
        await opts.models.recordAccepted(m.name, m.version);
        event(makeEvent('model.activated', { model: m.name, version: m.version, previous: result.previous }));
        return { model: m.name, version: m.version, activated: true, previous: result.previous };
      } catch (error) {
        const fleetError =
          error instanceof FleetError
            ? error
            : new FleetError((error as NodeJS.ErrnoException).code === 'ENOSPC' ? 'disk_full' : 'internal', (error as Error).message);
        event(makeEvent('model.failed', { model: m.name, version: m.version, error: fleetError.toJSON() }));
        if (t.installed && (fleetError.code === 'load_failed' || fleetError.code === 'smoke_test_failed' || fleetError.code === 'not_onnx')) {
          // The old version keeps serving; the one that failed is removed so it is not activated by accident later.
          await opts.models.remove?.(m.name, m.version).catch((e: unknown) => log.warn({ err: e }, 'could not remove the failed version'));
        }
        throw fleetError;
      }
    };
    t.committing = run();
    try {
      const result = await t.committing;
      await drop(t);
      return result;
    } catch (error) {
      const code = (error as FleetError).code;
      if (code === 'missing_chunk' || code === 'corrupt_chunk' || (code === 'expired' && !t.installed)) {
        t.committing = null; // the staging is kept: the sender can resend (or re-sign) and commit again
        if (!t.data && !t.installed) {
          // the model store refused what was staged (its own whole-file check): re-verify every chunk
          // from disk, so the ones that changed are asked for again
          t.have.fill(0);
          t.received = 0;
          await openStaging(t, true).catch(async (e: unknown) => {
            log.warn({ err: e }, 'could not reopen the staging; starting the transfer over');
            await drop(t);
          });
        }
      } else {
        await drop(t).catch((e: unknown) => log.warn({ err: e }, 'could not clean the staging'));
      }
      throw error;
    }
  }

  return {
    offer,
    status,
    commit,
    chunk,
    stats: () => ({ ...stats, rejected: { ...stats.rejected } }),
    async close() {
      for (const t of transfers.values()) {
        t.closed = true;
        await drain(t);
        await t.log?.sync().catch(() => undefined); // best effort: the log is re-verified on the next start anyway
        await closeFiles(t);
      }
      transfers.clear();
    },
  };
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

async function hashFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const part of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(part as Buffer);
  return hash.digest('hex');
}

function mib(bytes: number): string {
  return (bytes / (1024 * 1024)).toFixed(1);
}
