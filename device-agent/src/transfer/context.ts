/**
 * What the offer, chunk and commit handlers share: the transfers known in memory (and
 * found on disk after a restart), a lock per transfer id, the counters, events, and the
 * acceptance check, which is the protocol's (`checkAcceptance`) on a verified manifest.
 */
import { readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { FleetError, checkAcceptance, isRollbackBelow, isValidName, makeEvent, verifiedManifest } from '@edgefleet/protocol';
import type { FleetEvent, Manifest, SignedManifest } from '@edgefleet/protocol';
import { closeFiles, newTransfer } from './state.js';
import type { Transfer } from './state.js';
import { openStaging, readStagedManifest } from './staging.js';
import type { DiskSpace, ReceiverImages, ReceiverStats, TransferReceiverOptions } from './types.js';

export interface ReceiverContext {
  opts: TransferReceiverOptions;
  /** `<dataDir>/transfers` */
  root: string;
  log: Logger;
  now: () => Date;
  progressIntervalMs: number;
  reserveBytes: number;
  syncEveryBytes: number;
  diskSpace: (dir: string) => Promise<DiskSpace>;
  transfers: Map<string, Transfer>;
  /** Offers, loads and commits of one transfer id run one at a time. */
  locks: Map<string, Promise<unknown>>;
  stats: ReceiverStats;
  /** Stagings untouched this long are reclaimed (lifecycle.ts). */
  expiryMs: number;
  sweepEveryMs: number;
  /** The reclaim at start: offers, loads and commits wait for it, so nothing expired is resumed. */
  ready: Promise<void>;
}

/** Default expiry of an abandoned staging: a day. */
export const DEFAULT_TRANSFER_EXPIRY_MS = 24 * 60 * 60_000;

/** The lock key under which free space is checked and reserved (never a valid transfer id, so it cannot clash). */
export const SPACE_LOCK = ' disk space';

export function createContext(opts: TransferReceiverOptions): ReceiverContext {
  const expiryMs = opts.expiryMs ?? DEFAULT_TRANSFER_EXPIRY_MS;
  return {
    opts,
    root: join(opts.dataDir, 'transfers'),
    log: opts.logger.child({ part: 'transfer' }),
    now: opts.now ?? (() => new Date()),
    progressIntervalMs: opts.progressIntervalMs ?? 500,
    reserveBytes: opts.diskReserveBytes ?? 0,
    syncEveryBytes: opts.backgroundSyncBytes ?? 0,
    diskSpace:
      opts.diskSpace ??
      (async (dir: string): Promise<DiskSpace> => {
        const s = await statfs(dir);
        return { freeBytes: Number(s.bavail) * Number(s.bsize) };
      }),
    transfers: new Map(),
    locks: new Map(),
    stats: { written: 0, duplicates: 0, unknownTransfer: 0, rejected: {}, reclaimed: 0 },
    expiryMs,
    sweepEveryMs: opts.sweepEveryMs ?? Math.min(15 * 60_000, Math.max(1000, Math.floor(expiryMs / 4))),
    ready: Promise.resolve(),
  };
}

export function locked<T>(ctx: ReceiverContext, id: string, task: () => Promise<T>): Promise<T> {
  const previous = ctx.locks.get(id) ?? Promise.resolve();
  const run = previous.then(task, task);
  const settled = run.catch(() => undefined);
  ctx.locks.set(id, settled);
  void settled.then(() => {
    if (ctx.locks.get(id) === settled) ctx.locks.delete(id);
  });
  return run;
}

export function event(ctx: ReceiverContext, e: FleetEvent): void {
  try {
    ctx.opts.publishEvent(e);
  } catch (error) {
    // an event that cannot be published must not fail the transfer; it is logged instead
    ctx.log.warn({ err: error, event: e.event }, 'could not publish event');
  }
}

/** A refused chunk is counted, logged and reported as a warning event (it stays missing). */
export function reject(ctx: ReceiverContext, transferId: string, index: number, code: string, message: string): void {
  ctx.stats.rejected[code] = (ctx.stats.rejected[code] ?? 0) + 1;
  ctx.log.warn({ transferId, index, code }, message);
  event(ctx, makeEvent('log', { level: 'warn', message: `${code}: transfer ${transferId} chunk ${index}: ${message}` }));
}

/** transfer.progress events, at most one per progressIntervalMs (always the last one). */
export function progress(ctx: ReceiverContext, t: Transfer, force = false): void {
  const emit = (): void => {
    t.progressTimer = null;
    t.lastProgressAt = Date.now();
    event(ctx, makeEvent('transfer.progress', { transferId: t.id, received: t.received, total: t.total }));
  };
  if (force || t.received === t.total) {
    if (t.progressTimer) clearTimeout(t.progressTimer);
    emit();
    return;
  }
  if (t.progressTimer) return;
  const wait = t.lastProgressAt + ctx.progressIntervalMs - Date.now();
  if (wait <= 0) emit();
  else {
    t.progressTimer = setTimeout(emit, wait);
    t.progressTimer.unref();
  }
}

/** A verified model or image manifest, or the FleetError that says why not. */
export function verify(ctx: ReceiverContext, signed: SignedManifest): Manifest {
  const manifest = verifiedManifest(signed, ctx.opts.publicKeyPem);
  if (manifest.kind === 'image' && !ctx.opts.images) {
    throw new FleetError('unavailable', `${manifest.name}@${manifest.version} is a Docker image, and this agent runs no containers service`);
  }
  return manifest;
}

/** The image half of the receiver (verify() refused image manifests when there is none). */
export function images(ctx: ReceiverContext): ReceiverImages {
  return ctx.opts.images!;
}

/** The protocol's acceptance check (target, expiry, anti-rollback) against this device; throws its refusal. */
export function accept(ctx: ReceiverContext, m: Manifest): void {
  if (m.kind === 'image') return acceptImage(ctx, m);
  const { models } = ctx.opts;
  const lastRollbackSeq = models.lastRollbackSeq?.(m.name) ?? 0;
  const refusal = checkAcceptance(m, { device: ctx.opts.identity, highestAccepted: models.highestAccepted(m.name), lastRollbackSeq, now: ctx.now() });
  if (refusal) throw refusal;
}

/**
 * Apps have their own durable highest version accepted. An app goes back with `containers.deploy` of a version
 * the device keeps (the controller's image rollback), never with a lower signed image manifest: the device keeps
 * no rollback sequence for apps, so such a manifest, even one marked as a rollback, could be replayed; it is refused.
 */
function acceptImage(ctx: ReceiverContext, m: Manifest): void {
  const highestAccepted = images(ctx).highestAccepted(m.name);
  const refusal = checkAcceptance(m, { device: ctx.opts.identity, highestAccepted, now: ctx.now() });
  if (refusal) throw refusal;
  if (isRollbackBelow(m, highestAccepted)) {
    throw new FleetError(
      'lower_version',
      `${m.name}@${m.version} is lower than version ${highestAccepted} already accepted; an app goes back to a version the device keeps with \`hostManager image rollback\`, not with a lower image manifest`,
    );
  }
}

export function isInstalled(ctx: ReceiverContext, m: Manifest): boolean {
  if (m.kind === 'image') return images(ctx).isInstalled(m.name, m.version, m.image!.digest);
  return ctx.opts.models.list().some((s) => s.name === m.name && s.versions.includes(m.version));
}

export function transferFor(ctx: ReceiverContext, id: string, signed: SignedManifest, manifest: Manifest): Transfer {
  return newTransfer(id, join(ctx.root, id), signed, manifest);
}

export async function drop(ctx: ReceiverContext, t: Transfer): Promise<void> {
  t.closed = true;
  ctx.transfers.delete(t.id);
  await closeFiles(t);
  await rm(t.dir, { recursive: true, force: true });
}

/** A transfer known in memory, or found on disk after a restart. */
export async function load(ctx: ReceiverContext, id: string): Promise<Transfer | undefined> {
  const known = ctx.transfers.get(id);
  if (known) return known;
  await ctx.ready;
  const dir = join(ctx.root, id);
  let signed: SignedManifest;
  try {
    signed = await readStagedManifest(dir);
  } catch {
    return undefined; // no staging for this id (or a half-created one): the sender offers again
  }
  let manifest: Manifest;
  try {
    manifest = verify(ctx, signed);
  } catch (error) {
    ctx.log.warn({ transferId: id, err: error }, 'staged manifest no longer verifies; discarding the staging');
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
  const t = transferFor(ctx, id, signed, manifest);
  t.installed = isInstalled(ctx, manifest);
  if (!t.installed) {
    await openStaging(t, true, ctx.log);
    ctx.log.info({ transferId: id, name: manifest.name, version: manifest.version, received: t.received, total: t.total }, 'transfer resumed from the staging on disk');
  }
  ctx.transfers.set(id, t);
  return t;
}

/** Removes other staging directories of the same model (an abandoned older offer), so a small disk does not fill up. */
export async function removeStale(ctx: ReceiverContext, keep: string, name: string): Promise<void> {
  const entries = await readdir(ctx.root).catch(() => [] as string[]);
  for (const entry of entries) {
    if (entry === keep || !isValidName(entry) || ctx.locks.has(entry)) continue;
    const inMemory = ctx.transfers.get(entry);
    if (inMemory) {
      if (inMemory.manifest.name === name && !inMemory.committing) await drop(ctx, inMemory);
      continue;
    }
    try {
      const signed = await readStagedManifest(join(ctx.root, entry));
      if ((signed.manifest as { name?: unknown }).name === name) await rm(join(ctx.root, entry), { recursive: true, force: true });
    } catch {
      // not a staging directory this receiver wrote; leave it alone
    }
  }
}
