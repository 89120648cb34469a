/**
 * The chunk table of a blob (sha256 of each chunk at a given chunk size), which a signed
 * manifest lists. Computed once and kept beside the blob (`<blob>.chunks-<size>.json`), so
 * a rollout's later waves and repeated deliveries do not hash the file again. The registry
 * writes the table for the default chunk size when a version is added.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '@edgefleet/node-io';
import { FleetError } from '@edgefleet/protocol';

/** Chosen by `npm run bench:transfer` (see README.registry.md). */
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;

export interface ChunkTable {
  sha256: string;
  length: number;
  size: number;
  chunks: string[];
}

export function chunkTablePath(blobPath: string, chunkSize: number): string {
  return `${blobPath}.chunks-${chunkSize}.json`;
}

/** Per-chunk sha256 and the whole file's, read in one pass. */
export async function hashChunks(file: string, chunkSize: number): Promise<{ sha256: string; length: number; chunks: string[] }> {
  const whole = createHash('sha256');
  const chunks: string[] = [];
  let current = createHash('sha256');
  let filled = 0;
  let length = 0;
  for await (const part of createReadStream(file, { highWaterMark: 1 << 20 })) {
    const buf = part as Buffer;
    whole.update(buf);
    length += buf.length;
    let off = 0;
    while (off < buf.length) {
      const take = Math.min(chunkSize - filled, buf.length - off);
      current.update(buf.subarray(off, off + take));
      filled += take;
      off += take;
      if (filled === chunkSize) {
        chunks.push(current.digest('hex'));
        current = createHash('sha256');
        filled = 0;
      }
    }
  }
  if (filled > 0 || chunks.length === 0) chunks.push(current.digest('hex'));
  return { sha256: whole.digest('hex'), length, chunks };
}

export async function writeChunkTable(blobPath: string, table: ChunkTable): Promise<void> {
  const file = chunkTablePath(blobPath, table.size);
  await writeFileAtomic(file, JSON.stringify(table));
}

function valid(table: unknown, sha256: string, length: number, size: number): table is ChunkTable {
  if (typeof table !== 'object' || table === null) return false;
  const t = table as Partial<ChunkTable>;
  return (
    t.sha256 === sha256 &&
    t.length === length &&
    t.size === size &&
    Array.isArray(t.chunks) &&
    t.chunks.length === Math.max(1, Math.ceil(length / size)) &&
    t.chunks.every((c) => typeof c === 'string' && /^[0-9a-f]{64}$/.test(c))
  );
}

/** The table from beside the blob, or computed (and the blob checked against its sha256) and stored for next time. */
export async function loadChunkTable(blobPath: string, record: { sha256: string; length: number }, chunkSize: number): Promise<string[]> {
  try {
    const cached: unknown = JSON.parse(await readFile(chunkTablePath(blobPath, chunkSize), 'utf8'));
    if (valid(cached, record.sha256, record.length, chunkSize)) return cached.chunks;
  } catch {
    // no table yet (or an unreadable one): compute it below
  }
  const hashed = await hashChunks(blobPath, chunkSize);
  if (hashed.sha256 !== record.sha256 || hashed.length !== record.length) {
    throw new FleetError('internal', `the registry blob ${blobPath} no longer matches its sha256; remove the version and add the file again`);
  }
  const table: ChunkTable = { sha256: record.sha256, length: record.length, size: chunkSize, chunks: hashed.chunks };
  await writeChunkTable(blobPath, table).catch(() => undefined); // only a cache: the next delivery computes it again
  return table.chunks;
}
