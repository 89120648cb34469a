/**
 * How long a staging may live and how much disk it holds. A transfer that is offered and never
 * committed (the controller crashed, the rollout was aborted, a device was offered and then left
 * out) would otherwise keep its directory and two file descriptors forever, across restarts.
 *
 * - Expiry: a staging neither offered again nor sent a chunk for `expiryMs` is removed, files and
 *   descriptors, at start (judged by the newest time of its files) and every `sweepEveryMs`.
 * - Reservations: a staging file is sparse until its chunks arrive, so free space alone says
 *   nothing about what the other stagings will still write; the offer counts it.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { drop, locked } from './context.js';
import type { ReceiverContext } from './context.js';
import { DATA_FILE, readStagedManifest } from './staging.js';
import { bytesStillToWrite } from './state.js';

/** Removes every staging untouched for the expiry; returns how many. */
export async function reclaimExpired(ctx: ReceiverContext, now = Date.now()): Promise<number> {
  const cutoff = now - ctx.expiryMs;
  let removed = 0;
  for (const t of [...ctx.transfers.values()]) {
    if (t.committing || t.touchedAt >= cutoff || ctx.locks.has(t.id)) continue;
    await locked(ctx, t.id, () => drop(ctx, t));
    ctx.log.info({ transferId: t.id, model: t.manifest.name, version: t.manifest.version, idleS: Math.round((now - t.touchedAt) / 1000) }, 'expired staging reclaimed');
    removed++;
  }
  for (const entry of await readdir(ctx.root).catch(() => [] as string[])) {
    if (ctx.transfers.has(entry) || ctx.locks.has(entry)) continue;
    const dir = join(ctx.root, entry);
    const newest = await newestTime(dir);
    if (newest === undefined || newest >= cutoff) continue;
    await rm(dir, { recursive: true, force: true });
    ctx.log.info({ transferId: entry, idleS: Math.round((now - newest) / 1000) }, 'expired staging reclaimed from disk');
    removed++;
  }
  ctx.stats.reclaimed += removed;
  return removed;
}

/** The newest modification time of a staging directory and the files in it (undefined when it is gone). */
async function newestTime(dir: string): Promise<number | undefined> {
  const own = await stat(dir).catch(() => undefined); // removed meanwhile: nothing to reclaim
  if (!own) return undefined;
  let newest = own.mtimeMs;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const s = await stat(join(dir, name)).catch(() => undefined); // removed meanwhile: it does not count
    if (s) newest = Math.max(newest, s.mtimeMs);
  }
  return newest;
}

/** Bytes the other stagings (in memory and on disk) may still write: what an offer must leave free for them. */
export async function reservedBytes(ctx: ReceiverContext, except: string): Promise<{ bytes: number; transfers: number }> {
  let bytes = 0;
  let transfers = 0;
  for (const t of ctx.transfers.values()) {
    if (t.id === except) continue;
    const left = bytesStillToWrite(t);
    if (left > 0) (bytes += left), transfers++;
  }
  for (const entry of await readdir(ctx.root).catch(() => [] as string[])) {
    if (entry === except || ctx.transfers.has(entry)) continue;
    const left = await onDiskStillToWrite(join(ctx.root, entry));
    if (left > 0) (bytes += left), transfers++;
  }
  return { bytes, transfers };
}

/** A staging not loaded in memory: its declared length minus the blocks its data file already has. */
async function onDiskStillToWrite(dir: string): Promise<number> {
  try {
    const declared = ((await readStagedManifest(dir)).manifest as { length?: unknown }).length;
    if (typeof declared !== 'number') return 0;
    const data = await stat(join(dir, DATA_FILE)).catch(() => undefined); // no data file yet: all of it is still to come
    return Math.max(0, declared - (data ? data.blocks * 512 : 0));
  } catch {
    return 0; // not a staging this receiver wrote (or a torn one, which the next offer replaces)
  }
}

/** Reclaims at start (offers wait for it) and then periodically; returns how to stop. */
export function startReclaiming(ctx: ReceiverContext): () => void {
  ctx.ready = reclaimExpired(ctx).then(
    () => undefined,
    (error: unknown) => ctx.log.warn({ err: error }, 'could not look for expired stagings at start'),
  );
  const timer = setInterval(() => {
    void ctx.ready.then(() => reclaimExpired(ctx)).catch((error: unknown) => ctx.log.warn({ err: error }, 'could not reclaim expired stagings'));
  }, ctx.sweepEveryMs);
  timer.unref();
  return () => clearInterval(timer);
}
