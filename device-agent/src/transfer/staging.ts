/**
 * The staging format of a transfer on disk:
 *
 *   <dataDir>/transfers/<transferId>/manifest.json   the signed manifest it was offered with
 *   <dataDir>/transfers/<transferId>/data.part       the file, preallocated to its declared length
 *   <dataDir>/transfers/<transferId>/chunks.log      the indices written, uint32 LE, append-only
 *
 * After a restart each chunk the log lists is re-hashed from data.part before it counts,
 * so a chunk is never trusted just because the log says so, and only what is really
 * missing is asked for. The log is then rewritten to exactly the verified chunks.
 */
import { mkdir, open, readFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { writeFileAtomic } from '@edgefleet/node-io';
import { sha256Hex } from '@edgefleet/protocol';
import type { Manifest, SignedManifest } from '@edgefleet/protocol';
import { chunkLength } from './state.js';
import type { Transfer } from './state.js';

export const MANIFEST_FILE = 'manifest.json';
export const DATA_FILE = 'data.part';
export const LOG_FILE = 'chunks.log';
const LOG_ENTRY = 4;

export function dataFile(t: Transfer): string {
  return join(t.dir, DATA_FILE);
}

export function writeStagedManifest(t: Transfer): Promise<void> {
  return writeFileAtomic(join(t.dir, MANIFEST_FILE), JSON.stringify(t.signed));
}

/** The signed manifest a staging directory was offered with; throws when there is none (or a torn one). */
export async function readStagedManifest(dir: string): Promise<SignedManifest> {
  return JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as SignedManifest;
}

/** Whether chunk `index` of the staged file has the bytes the manifest signs. */
export async function chunkOnDiskIsGood(data: FileHandle, m: Manifest, index: number, total: number): Promise<boolean> {
  const len = chunkLength(m, index, total);
  const buf = Buffer.allocUnsafe(len);
  const { bytesRead } = await data.read(buf, 0, len, index * m.chunking.size);
  return bytesRead === len && sha256Hex(buf) === m.chunking.sha256[index];
}

/** Opens the staging files of a transfer; re-hashes the chunks its log lists when it was on disk already. */
export async function openStaging(t: Transfer, resume: boolean, log: Logger): Promise<void> {
  await mkdir(t.dir, { recursive: true });
  await writeStagedManifest(t);
  const file = dataFile(t);
  const logFile = join(t.dir, LOG_FILE);
  t.data = await open(file, resume ? 'r+' : 'w+').catch(async (error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return open(file, 'w+');
    throw error;
  });
  // Preallocate the declared length (sparse): nothing past it is ever written.
  await t.data.truncate(t.manifest.length);
  if (resume) {
    t.running = null;
    let bad = 0;
    for (const index of await loggedChunks(logFile, t.total)) {
      if (await chunkOnDiskIsGood(t.data, t.manifest, index, t.total)) {
        t.have[index] = 2;
        t.received++;
      } else bad++;
    }
    if (bad > 0) log.warn({ transferId: t.id, bad }, 'chunks listed in the log failed verification after a restart; they will be asked for again');
  }
  // Rewrite the log to exactly the verified chunks.
  const verified: number[] = [];
  for (let i = 0; i < t.total; i++) if (t.have[i] === 2) verified.push(i);
  await writeFileAtomic(logFile, encodeLog(verified));
  t.log = await open(logFile, 'a');
}

async function loggedChunks(logFile: string, total: number): Promise<Set<number>> {
  const logged = await readFile(logFile).catch(() => Buffer.alloc(0)); // no log yet: nothing to re-verify
  const indices = new Set<number>();
  for (let off = 0; off + LOG_ENTRY <= logged.length; off += LOG_ENTRY) {
    const index = logged.readUInt32LE(off);
    if (index < total) indices.add(index);
  }
  return indices;
}

function encodeLog(indices: readonly number[]): Buffer {
  const buf = Buffer.allocUnsafe(indices.length * LOG_ENTRY);
  indices.forEach((index, k) => buf.writeUInt32LE(index, k * LOG_ENTRY));
  return buf;
}

/** Appends the queued chunk indices to chunks.log, in one write per batch, in order. */
export function scheduleLog(t: Transfer, log: Logger): void {
  if (t.logScheduled) return;
  t.logScheduled = true;
  t.logChain = t.logChain
    .then(async () => {
      t.logScheduled = false;
      const batch = t.logQueue.splice(0);
      if (batch.length === 0 || !t.log) return;
      await t.log.write(encodeLog(batch));
    })
    .catch((error: unknown) => log.warn({ err: error, transferId: t.id }, 'could not append to the chunk log; those chunks are asked for again after a restart'));
}

/** An fdatasync of the staging file behind the writes (only when backgroundSyncBytes is set). */
export function backgroundSync(t: Transfer, log: Logger): void {
  t.unsynced = 0;
  t.syncChain = t.syncChain
    .then(async () => {
      await t.data?.datasync();
    })
    .catch((error: unknown) => log.warn({ err: error, transferId: t.id }, 'background fdatasync failed; the commit syncs again'));
}
