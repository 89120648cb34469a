/**
 * Durable file writes. `writeFileAtomic` is the one way a part of edgefleet replaces a
 * file: a temporary file beside it, written and fsync'd, renamed over the old one, then
 * the directory fsync'd, so a `kill -9` or a power cut leaves the old bytes or the new
 * ones, never half of either, and the rename itself survives the crash.
 */
import { constants as fsConstants } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface AtomicWriteOptions {
  /** Mode of the new file (default 0o644). The temporary file is created with it, never wider. */
  mode?: number;
  /** Called once the temporary file is written and synced, before the rename (crash tests stop the process here). */
  beforeRename?: () => void | Promise<void>;
}

/** Marks a temporary file of `writeFileAtomic`; a store may remove names containing it after a crash. */
export const TMP_MARK = '.tmp-';

let tmpCounter = 0;

/** The temporary name used for `file`: in the same directory, so the rename never crosses file systems. */
export function tmpPathFor(file: string): string {
  return join(dirname(file), `${basename(file)}${TMP_MARK}${process.pid}-${++tmpCounter}`);
}

/** Replaces `file` with `data` atomically and durably (tmp, write, fsync, rename, fsync of the directory). */
export async function writeFileAtomic(file: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): Promise<void> {
  const tmp = tmpPathFor(file);
  try {
    const handle = await open(tmp, 'wx', opts.mode ?? 0o644);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await opts.beforeRename?.();
    await rename(tmp, file);
    await fsyncDir(dirname(file));
  } catch (error) {
    await rm(tmp, { force: true }).catch(() => undefined); // best effort: the original error matters more
    throw error;
  }
}

/** fsync of a directory, so the entries created, renamed or removed in it are on disk. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** fsync of a file written by someone else (e.g. a staged download before it is renamed into a store). */
export async function fsyncFile(file: string): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Bytes as MiB, for messages (one decimal unless told otherwise). */
export function mib(bytes: number, digits = 1): string {
  return (bytes / (1024 * 1024)).toFixed(digits);
}
