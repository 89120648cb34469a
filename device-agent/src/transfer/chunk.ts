/**
 * A chunk as it arrives: the index, the exact size and the sha256 the manifest signs are
 * checked before it is written at its offset; anything wrong is dropped (it stays
 * missing) and reported. transfer.status answers what is still missing once every chunk
 * received so far is on disk.
 */
import type { FileHandle } from 'node:fs/promises';
import { FleetError, sha256Hex } from '@edgefleet/protocol';
import type { CommandResult, ParsedParams } from '@edgefleet/protocol';
import { load, locked, progress, reject } from './context.js';
import type { ReceiverContext } from './context.js';
import { chunkLength, drain, missingOf } from './state.js';
import type { Transfer } from './state.js';
import { backgroundSync, scheduleLog } from './staging.js';

export function chunk(ctx: ReceiverContext, transferId: string, index: number, payload: Buffer): void {
  const t = ctx.transfers.get(transferId);
  if (!t || t.closed) {
    ctx.stats.unknownTransfer++;
    return; // not offered to this device (a group chunk meant for others), or already finished
  }
  if (t.installed || t.committing) {
    ctx.stats.duplicates++;
    return;
  }
  if (!Number.isInteger(index) || index < 0 || index >= t.total) {
    reject(ctx, transferId, index, 'too_long', `index ${index} is past the declared ${t.total} chunks (${t.manifest.length} bytes); refused`);
    return;
  }
  const expected = chunkLength(t.manifest, index, t.total);
  if (payload.length > expected) {
    reject(ctx, transferId, index, 'too_long', `${payload.length} bytes where the manifest declares ${expected}; refused`);
    return;
  }
  if (payload.length < expected) {
    reject(ctx, transferId, index, 'truncated', `${payload.length} bytes where the manifest declares ${expected}; dropped, it stays missing`);
    return;
  }
  if (t.have[index] !== 0) {
    ctx.stats.duplicates++;
    return;
  }
  if (sha256Hex(payload) !== t.manifest.chunking.sha256[index]) {
    reject(ctx, transferId, index, 'corrupt_chunk', 'sha256 does not match the signed manifest; dropped, it stays missing');
    return;
  }
  const data = t.data;
  if (!data) return;
  t.have[index] = 1;
  t.touchedAt = Date.now();
  if (t.running) {
    if (index === t.nextInOrder) {
      t.running.update(payload);
      t.nextInOrder++;
    } else t.running = null;
  }
  const write = writeChunk(ctx, t, data, index, payload);
  t.pending.add(write);
  void write.then(() => t.pending.delete(write));
}

/** Writes a verified chunk at its offset; a failed write leaves it missing. */
async function writeChunk(ctx: ReceiverContext, t: Transfer, data: FileHandle, index: number, payload: Buffer): Promise<void> {
  try {
    const { bytesWritten } = await data.write(payload, 0, payload.length, index * t.manifest.chunking.size);
    if (bytesWritten !== payload.length) throw new Error(`short write (${bytesWritten} of ${payload.length} bytes)`);
    t.have[index] = 2;
    t.received++;
    ctx.stats.written++;
    t.logQueue.push(index);
    scheduleLog(t, ctx.log);
    t.unsynced += payload.length;
    if (ctx.syncEveryBytes > 0 && t.unsynced >= ctx.syncEveryBytes) backgroundSync(t, ctx.log);
    progress(ctx, t);
  } catch (error) {
    t.have[index] = 0;
    t.running = null;
    const code = (error as NodeJS.ErrnoException).code === 'ENOSPC' ? 'disk_full' : 'internal';
    reject(ctx, t.id, index, code, `could not write the chunk: ${(error as Error).message}`);
  }
}

export async function status(ctx: ReceiverContext, p: ParsedParams<'transfer.status'>): Promise<CommandResult<'transfer.status'>> {
  const t = await locked(ctx, p.transferId, () => load(ctx, p.transferId));
  if (!t) throw new FleetError('not_found', `no transfer ${p.transferId} on this device; offer it first`);
  await drain(t);
  return { missing: missingOf(t), total: t.total };
}
