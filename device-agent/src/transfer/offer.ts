/**
 * transfer.offer: verify the signed manifest (signature, shape), the protocol's acceptance
 * rules (target, expiry, anti-rollback), for an image the board's platform and an engine
 * that answers, and free disk (after stop-then-download made room); open (or resume) the
 * staging and answer with the chunks still missing.
 */
import { mkdir, rm } from 'node:fs/promises';
import { mib } from '@edgefleet/node-io';
import { FleetError } from '@edgefleet/protocol';
import type { CommandResult, Manifest, ParsedParams } from '@edgefleet/protocol';
import { SPACE_LOCK, accept, drop, images, isInstalled, load, locked, removeStale, transferFor, verify } from './context.js';
import { reservedBytes } from './lifecycle.js';
import type { ReceiverContext } from './context.js';
import { closeFiles, missingOf, sameContent } from './state.js';
import { openStaging, writeStagedManifest } from './staging.js';

export async function offer(ctx: ReceiverContext, p: ParsedParams<'transfer.offer'>): Promise<CommandResult<'transfer.offer'>> {
  const manifest = verify(ctx, p.manifest);
  accept(ctx, manifest);
  if (manifest.kind === 'image') await images(ctx).checkOffer(manifest); // platform and engine, before a byte is sent
  const { via } = p;
  const { identity } = ctx.opts;
  if (via.kind === 'device' ? via.name !== identity.id : !identity.groups.includes(via.name)) {
    throw new FleetError('wrong_target', `chunks would come through ${via.kind} ${via.name}, which this device (${identity.id}) does not listen to`);
  }
  await ctx.ready;
  return locked(ctx, p.transferId, async () => {
    let t = await load(ctx, p.transferId);
    if (t && !sameContent(t.manifest, manifest)) {
      ctx.log.info({ transferId: t.id }, 'offer with different content under a known transfer id; starting over');
      await drop(ctx, t);
      t = undefined;
    }
    if (isInstalled(ctx, manifest)) {
      // Already in the store (e.g. installed before a restart): nothing to send, commit only activates.
      if (t) await drop(ctx, t);
      const done = transferFor(ctx, p.transferId, p.manifest, manifest);
      done.installed = true;
      ctx.transfers.set(done.id, done);
      return { missing: [], total: done.total };
    }
    if (t) {
      t.signed = p.manifest; // a fresh signature (new expiry) for the same content
      t.manifest = manifest;
      t.touchedAt = Date.now();
      await writeStagedManifest(t);
      return { missing: missingOf(t), total: t.total };
    }
    return startStaging(ctx, p, manifest);
  });
}

/**
 * A first offer: room on the disk for it and for what the other stagings may still write, then an
 * empty staging of the declared length. The check and the reservation (the staging joining the
 * transfers) happen under one lock, so two offers at once cannot both count the same free space.
 * An image whose update strategy is stop-then-download makes its room first (old containers and images go).
 */
function startStaging(ctx: ReceiverContext, p: ParsedParams<'transfer.offer'>, manifest: Manifest): Promise<CommandResult<'transfer.offer'>> {
  return locked(ctx, SPACE_LOCK, async () => {
    await mkdir(ctx.root, { recursive: true });
    await removeStale(ctx, p.transferId, manifest.name);
    if (manifest.kind === 'image') await images(ctx).prepareDownload(manifest);
    await checkRoom(ctx, p.transferId, manifest);
    return openFresh(ctx, p, manifest);
  });
}

async function checkRoom(ctx: ReceiverContext, transferId: string, manifest: Manifest): Promise<void> {
  const free = (await ctx.diskSpace(ctx.root)).freeBytes;
  const reserved = await reservedBytes(ctx, transferId);
  const needed = manifest.length + reserved.bytes + ctx.reserveBytes;
  if (free >= needed) return;
  const others = reserved.transfers > 0 ? ` (${mib(manifest.length)} MiB for it, ${mib(reserved.bytes)} MiB still to come for ${reserved.transfers} other staged transfer${reserved.transfers > 1 ? 's' : ''})` : '';
  throw new FleetError(
    'disk_full',
    `${manifest.name}@${manifest.version} needs ${mib(needed)} MiB${others} but only ${mib(free)} MiB are free in ${ctx.opts.dataDir}; free space on the device (remove old model versions or images) or let the other transfers finish, and retry`,
  );
}

async function openFresh(ctx: ReceiverContext, p: ParsedParams<'transfer.offer'>, manifest: Manifest): Promise<CommandResult<'transfer.offer'>> {
  const { dataDir } = ctx.opts;
  const fresh = transferFor(ctx, p.transferId, p.manifest, manifest);
  try {
    await openStaging(fresh, false, ctx.log);
  } catch (error) {
    await closeFiles(fresh);
    await rm(fresh.dir, { recursive: true, force: true });
    if ((error as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new FleetError('disk_full', `no space left in ${dataDir} for ${manifest.name}@${manifest.version}; free space on the device and retry`);
    }
    throw error;
  }
  ctx.transfers.set(fresh.id, fresh);
  ctx.log.info({ transferId: fresh.id, model: manifest.name, version: manifest.version, chunks: fresh.total }, 'transfer offered');
  return { missing: missingOf(fresh), total: fresh.total };
}
