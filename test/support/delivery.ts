/**
 * Test fixture: the host's own delivery (deliverModel) with a record of what it did: every chunk publish
 * the broker acknowledged, and per device how many chunks it said it missed when offered.
 */
import { deliverModel } from '@edgefleet/host-manager';
import type { DeliverOptions, DeliveryResults } from '@edgefleet/host-manager';
import type { TransferTarget } from '@edgefleet/protocol';

export interface RecordedDelivery {
  run: Promise<DeliveryResults>;
  sent: { via: TransferTarget; index: number }[];
  /** Per device: the chunks it missed at the offer (the first progress report follows the offer). */
  offered: Record<string, number>;
}

export function recordedDelivery(opts: DeliverOptions): RecordedDelivery {
  const sent: RecordedDelivery['sent'] = [];
  const offered: Record<string, number> = {};
  const run = deliverModel({
    ...opts,
    onChunk: async (via, index) => {
      sent.push({ via, index });
      await opts.onChunk?.(via, index);
    },
    onProgress: (device, received, total) => {
      offered[device] ??= total - received;
      opts.onProgress?.(device, received, total);
    },
  });
  return { run, sent, offered };
}
