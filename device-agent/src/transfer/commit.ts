/**
 * transfer.commit: exact length and whole-file sha256, fsync, install into the model
 * store, record the version as accepted, activate (unless told not to). An image archive
 * is installed into the engine instead (the loaded ID must be the pin) and, when its
 * manifest has a container spec, run (health-checked, rolled back on failure). A failure
 * keeps the staging when the sender can repair it (missing or corrupt chunks, an expiry it
 * can re-sign), and drops it otherwise.
 */
import { hashFile } from '@edgefleet/node-io';
import { FleetError, asFleetError, isRollbackBelow, makeEvent } from '@edgefleet/protocol';
import type { CommandResult, ErrorCode, ParsedParams } from '@edgefleet/protocol';
import { accept, drop, event, images, load, locked } from './context.js';
import type { ReceiverContext } from './context.js';
import { closeFiles, drain, missingOf } from './state.js';
import type { Transfer } from './state.js';
import { chunkOnDiskIsGood, dataFile, openStaging } from './staging.js';

/** Refusals the sender can repair by sending chunks again: the staging is kept for it. */
const REPAIRABLE: ReadonlySet<ErrorCode> = new Set(['missing_chunk', 'corrupt_chunk']);
/** Failures of the new version itself: it is removed so it is not activated by accident later. */
const BAD_MODEL: ReadonlySet<ErrorCode> = new Set(['load_failed', 'smoke_test_failed', 'not_onnx']);

export async function commit(ctx: ReceiverContext, p: ParsedParams<'transfer.commit'>): Promise<CommandResult<'transfer.commit'>> {
  const t = await locked(ctx, p.transferId, () => load(ctx, p.transferId));
  if (!t) throw new FleetError('not_found', `no transfer ${p.transferId} on this device; offer it first`);
  if (t.committing) return t.committing;
  t.committing = t.manifest.kind === 'image' ? installAndRunImage(ctx, t, p.activate) : installAndActivate(ctx, t, p.activate);
  try {
    const result = await t.committing;
    await drop(ctx, t);
    return result;
  } catch (error) {
    const code = (error as FleetError).code;
    if (REPAIRABLE.has(code) || (code === 'expired' && !t.installed)) {
      t.committing = null; // the staging is kept: the sender can resend (or re-sign) and commit again
      if (!t.data && !t.installed) await reverifyStaging(ctx, t);
    } else {
      await drop(ctx, t).catch((e: unknown) => ctx.log.warn({ err: e }, 'could not clean the staging'));
    }
    throw error;
  }
}

async function installAndActivate(ctx: ReceiverContext, t: Transfer, activate: boolean): Promise<CommandResult<'transfer.commit'>> {
  const m = t.manifest;
  const { models } = ctx.opts;
  try {
    accept(ctx, m); // the expiry may have passed while chunks were arriving
    if (!t.installed) {
      await drain(t);
      await verifyWhole(ctx, t);
      await closeFiles(t);
      await models.install(m, dataFile(t));
      t.installed = true;
      ctx.log.info({ model: m.name, version: m.version }, 'model installed');
    }
    if (!activate) {
      await models.recordAccepted(m.name, m.version);
      return { model: m.name, version: m.version, activated: false, previous: null };
    }
    const result = await activateStaged(ctx, t);
    await models.recordAccepted(m.name, m.version);
    event(ctx, makeEvent('model.activated', { model: m.name, version: m.version, previous: result.previous }));
    return { model: m.name, version: m.version, activated: true, previous: result.previous };
  } catch (error) {
    const fleetError = asFleetError(error);
    event(ctx, makeEvent('model.failed', { model: m.name, version: m.version, error: fleetError.toJSON() }));
    if (t.installed && BAD_MODEL.has(fleetError.code)) {
      // The old version keeps serving; the one that failed is removed so it is not activated by accident later.
      await models.remove?.(m.name, m.version).catch((e: unknown) => ctx.log.warn({ err: e }, 'could not remove the failed version'));
    }
    throw fleetError;
  }
}

/** Activates what was installed; a version below the highest accepted goes through the rollback, which uses up its sequence number. */
function activateStaged(ctx: ReceiverContext, t: Transfer): Promise<{ previous: number | null }> {
  const { models } = ctx.opts;
  const m = t.manifest;
  if (!isRollbackBelow(m, models.highestAccepted(m.name))) return models.activate(m.name, m.version);
  if (!models.rollback) throw new FleetError('lower_version', `${m.name}@${m.version} is below the highest version accepted and this device cannot take rollbacks`);
  return models.rollback(m.name, t.signed);
}

/**
 * An image: install it (the containers service checks the archive, loads it, verifies the ID), then run it
 * when its manifest says how. A refused install is announced here as container.failed (the running version
 * keeps running); a failed deploy is announced by the service, and the version that failed is dropped.
 */
async function installAndRunImage(ctx: ReceiverContext, t: Transfer, activate: boolean): Promise<CommandResult<'transfer.commit'>> {
  const m = t.manifest;
  const containers = images(ctx);
  let deploying = false;
  try {
    accept(ctx, m);
    if (!t.installed) {
      await drain(t);
      await verifyWhole(ctx, t);
      await closeFiles(t);
      await containers.installImage(m, dataFile(t), { sha256Verified: true }); // verifyWhole checked length and sha256
      t.installed = true;
    }
    // an image without a container spec (a runtime for models) is installed, not run
    if (!activate || !m.container) {
      await containers.recordAccepted(m.name, m.version);
      return { model: m.name, version: m.version, activated: false, previous: containers.active(m.name) };
    }
    deploying = true;
    const result = await containers.deploy(m.name, m.version);
    await containers.recordAccepted(m.name, m.version);
    return { model: m.name, version: m.version, activated: true, previous: result.previous };
  } catch (error) {
    const fleetError = asFleetError(error);
    if (!deploying) {
      event(ctx, makeEvent('container.failed', { app: m.name, version: m.version, error: fleetError.toJSON(), restored: containers.active(m.name) }));
    } else {
      await containers.discard(m.name, m.version).catch((e: unknown) => ctx.log.warn({ err: e }, 'could not drop the version that failed'));
    }
    throw fleetError;
  }
}

/** The model store refused what was staged (its own whole-file check): re-verify every chunk from disk, so the ones that changed are asked for again. */
async function reverifyStaging(ctx: ReceiverContext, t: Transfer): Promise<void> {
  t.have.fill(0);
  t.received = 0;
  await openStaging(t, true, ctx.log).catch(async (e: unknown) => {
    ctx.log.warn({ err: e }, 'could not reopen the staging; starting the transfer over');
    await drop(ctx, t);
  });
}

/** Every chunk on disk, the exact length, and the whole file's sha256; finds the chunks that changed when it does not match. */
async function verifyWhole(ctx: ReceiverContext, t: Transfer): Promise<void> {
  const missing = missingOf(t);
  if (missing.length > 0) {
    throw new FleetError(
      'missing_chunk',
      `${missing.length} of ${t.total} chunks are missing (first: ${missing.slice(0, 5).join(', ')}); send them before committing`,
    );
  }
  const data = t.data!;
  const size = (await data.stat()).size;
  if (size < t.manifest.length) {
    throw new FleetError('truncated', `the staged file has ${size} bytes, the manifest declares ${t.manifest.length}; it will be received again`);
  }
  if (size > t.manifest.length) {
    throw new FleetError('too_long', `the staged file has ${size} bytes, more than the declared ${t.manifest.length}; refused`);
  }
  let whole: string;
  if (t.running && t.nextInOrder === t.total && !ctx.opts.verifyFromDisk) {
    whole = t.running.digest('hex');
    t.running = null;
    await data.sync();
  } else {
    // fsync and the whole-file hash run together: the hash reads what the sync writes back
    [, whole] = await Promise.all([data.sync(), hashFile(dataFile(t))]);
  }
  if (whole === t.manifest.sha256) return;
  // Find the chunks that changed on disk and ask for them again.
  const bad: number[] = [];
  for (let i = 0; i < t.total; i++) {
    if (!(await chunkOnDiskIsGood(data, t.manifest, i, t.total))) {
      bad.push(i);
      if (t.have[i] === 2) t.received--;
      t.have[i] = 0;
    }
  }
  throw new FleetError(
    'corrupt_chunk',
    bad.length > 0
      ? `the staged file does not match sha256 ${t.manifest.sha256}: chunks ${bad.slice(0, 5).join(', ')} changed on disk and will be asked for again`
      : `the file's sha256 does not match the manifest although every chunk does; the manifest is inconsistent, sign it again`,
  );
}
