/**
 * The receiving end of a transfer (a model, or a Docker image archive): the offer, chunk and commit handlers
 * (offer.ts, chunk.ts, commit.ts) around the protocol's acceptance check, with the
 * staging format in staging.ts and its expiry and disk reservations in lifecycle.ts. This
 * factory only wires them to one shared context.
 */
import { createContext } from './context.js';
import { reclaimExpired, startReclaiming } from './lifecycle.js';
import { offer } from './offer.js';
import { chunk, status } from './chunk.js';
import { commit } from './commit.js';
import { closeFiles, drain } from './state.js';
import type { TransferReceiver, TransferReceiverOptions } from './types.js';

export type { DiskSpace, ReceiverImages, ReceiverModels, ReceiverStats, TransferReceiver, TransferReceiverOptions } from './types.js';

export function createTransferReceiver(opts: TransferReceiverOptions): TransferReceiver {
  const ctx = createContext(opts);
  const stopReclaiming = startReclaiming(ctx);
  return {
    offer: (p) => offer(ctx, p),
    status: (p) => status(ctx, p),
    commit: (p) => commit(ctx, p),
    chunk: (transferId, index, payload) => chunk(ctx, transferId, index, payload),
    stats: () => ({ ...ctx.stats, rejected: { ...ctx.stats.rejected } }),
    reclaimExpired: async () => {
      await ctx.ready;
      return reclaimExpired(ctx);
    },
    async close() {
      stopReclaiming();
      await ctx.ready;
      for (const t of ctx.transfers.values()) {
        t.closed = true;
        await drain(t);
        await t.log?.sync().catch(() => undefined); // best effort: the log is re-verified on the next start anyway
        await closeFiles(t);
      }
      ctx.transfers.clear();
    },
  };
}
