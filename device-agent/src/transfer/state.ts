/** One transfer in memory: which chunks are on disk, the writes in flight, the running whole-file hash. */
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import type { CommandResult, Manifest, SignedManifest } from '@edgefleet/protocol';

export interface Transfer {
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
  /** Background fdatasyncs (only when `backgroundSyncBytes` > 0), so the final fsync does not write the whole file back at once. */
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
  /** Wall-clock ms of the last offer or chunk: a staging untouched for the receiver's expiry is reclaimed. */
  touchedAt: number;
}

export function newTransfer(id: string, dir: string, signed: SignedManifest, manifest: Manifest): Transfer {
  const total = manifest.chunking.sha256.length;
  return {
    id,
    dir,
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
    touchedAt: Date.now(),
  };
}

/** Bytes the staging of `t` may still write (its file is sparse until the chunks arrive). */
export function bytesStillToWrite(t: Transfer): number {
  if (t.installed || t.closed) return 0;
  let left = 0;
  for (let i = 0; i < t.total; i++) if (t.have[i] !== 2) left += chunkLength(t.manifest, i, t.total);
  return left;
}

/** Bytes of chunk `index`: the chunk size, except for the last one. */
export function chunkLength(m: Manifest, index: number, total: number): number {
  return index < total - 1 ? m.chunking.size : m.length - m.chunking.size * (total - 1);
}

export function missingOf(t: Transfer): number[] {
  if (t.installed) return [];
  const missing: number[] = [];
  for (let i = 0; i < t.total; i++) if (t.have[i] !== 2) missing.push(i);
  return missing;
}

/** Same name, version and bytes: a new offer of it resumes the staging. */
export function sameContent(a: Manifest, b: Manifest): boolean {
  return a.name === b.name && a.version === b.version && a.sha256 === b.sha256 && a.length === b.length && a.chunking.size === b.chunking.size;
}

/** Waits until every chunk received so far is written and logged. */
export async function drain(t: Transfer): Promise<void> {
  while (t.pending.size > 0) await Promise.all([...t.pending]);
  await t.logChain;
}

export async function closeFiles(t: Transfer): Promise<void> {
  if (t.progressTimer) clearTimeout(t.progressTimer);
  t.progressTimer = null;
  await drain(t);
  await t.syncChain;
  const files = [t.data, t.log];
  t.data = null;
  t.log = null;
  for (const f of files) if (f) await f.close();
}
