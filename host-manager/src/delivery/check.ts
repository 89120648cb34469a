/**
 * A version's activation check on its way to the devices: in the signed manifest (`check`), the sample
 * inline when it is small (SAMPLE_INLINE_MAX_BYTES: JSON as `body`, a binary body as `base64`) and by
 * sha256 + length otherwise. A sample by sha256 reaches each device with `models.sample` (framed binary
 * parts, resumable) after the version is installed (transfer.commit with activate:false) and before it
 * is activated (models.activate).
 */
import { readFile } from 'node:fs/promises';
import { FleetError, SAMPLE_INLINE_MAX_BYTES } from '@edgefleet/protocol';
import type { CommandResult, ManifestInput } from '@edgefleet/protocol';
import type { RequestFn } from '../devices/requester.js';
import type { CheckFiles } from '../models/check-files.js';
import type { VersionCheck } from '../state/schema.js';

export interface DeliveryCheck {
  /** The manifest's `check`. */
  manifest: NonNullable<ManifestInput['check']>;
  /** A sample that goes by hash: delivered with models.sample between install and activation. */
  sample?: { file: string; sha256: string; length: number };
}

/** Bytes of a sample per models.sample request (well under the broker's 4 MiB packet limit). */
export const SAMPLE_PART_BYTES = 1024 * 1024;

/** The manifest's check for a version (undefined for a version added before per-version checks: devices then use zeros). */
export async function deliveryCheck(check: VersionCheck | undefined, files: CheckFiles): Promise<DeliveryCheck | undefined> {
  if (!check) return undefined;
  const manifest: DeliveryCheck['manifest'] = { policy: check.policy, allowNaN: check.allowNaN };
  let sample: DeliveryCheck['sample'];
  if (check.sample) {
    const kept = await files.readSample(check.sample.sha256);
    const inlineJson = check.sample.headerLength === null && JSON.stringify(kept.body).length <= SAMPLE_INLINE_MAX_BYTES;
    if (inlineJson) manifest.sample = { body: kept.body };
    else if (check.sample.headerLength !== null && kept.bytes.byteLength <= SAMPLE_INLINE_MAX_BYTES) {
      manifest.sample = { base64: kept.bytes.toString('base64'), headerLength: check.sample.headerLength };
    } else {
      manifest.sample = { sha256: check.sample.sha256, length: kept.bytes.byteLength, ...(check.sample.headerLength !== null ? { headerLength: check.sample.headerLength } : {}) };
      sample = { file: files.path(check.sample.sha256), sha256: check.sample.sha256, length: kept.bytes.byteLength };
    }
  }
  if (check.expected) {
    manifest.expected = { outputs: await files.readExpected(check.expected.sha256), atol: check.expected.atol, rtol: check.expected.rtol };
  }
  return { manifest, ...(sample ? { sample } : {}) };
}

/**
 * Delivers a sample by hash to one device: asks what it holds (an empty part at offset 0), then sends the
 * rest in parts; a device whose copy came out wrong (corrupt_chunk) gets it once more from the start.
 */
export async function deliverSample(
  request: RequestFn,
  device: string,
  ref: { model: string; version: number },
  sample: NonNullable<DeliveryCheck['sample']>,
  timeoutMs: number,
): Promise<void> {
  const bytes = await readFile(sample.file);
  if (bytes.byteLength !== sample.length) throw new FleetError('internal', `the sample ${sample.sha256.slice(0, 12)}… on this controller changed on disk; add the version again`);
  const send = (offset: number, part: Uint8Array): Promise<CommandResult<'models.sample'>> => request(device, 'models.sample', { ...ref, offset }, timeoutMs, [part]);
  for (let attempt = 0; ; attempt++) {
    try {
      let held = await send(0, new Uint8Array(0));
      while (!held.complete) {
        const from = held.received;
        held = await send(from, bytes.subarray(from, from + SAMPLE_PART_BYTES));
        if (!held.complete && held.received <= from) throw new FleetError('internal', `${device} holds ${held.received} of the sample's ${sample.length} bytes after a part from ${from}; deliver again`);
      }
      return;
    } catch (error) {
      if (!(error instanceof FleetError && error.code === 'corrupt_chunk') || attempt >= 1) throw error;
    }
  }
}

/** Failures of the version itself: the device keeps it installed after models.activate, so it is removed (as transfer.commit does). */
const BAD_VERSION = new Set(['load_failed', 'smoke_test_failed']);

/** Sends the sample, then activates; a version that fails its check is removed from the device again (best effort). */
export async function activateWithSample(
  request: RequestFn,
  device: string,
  ref: { model: string; version: number },
  sample: NonNullable<DeliveryCheck['sample']>,
  timeouts: { request: number; activate: number },
): Promise<CommandResult<'models.activate'>> {
  await deliverSample(request, device, ref, sample, timeouts.request);
  try {
    return await request(device, 'models.activate', ref, timeouts.activate);
  } catch (error) {
    if (error instanceof FleetError && BAD_VERSION.has(error.code)) {
      await request(device, 'models.remove', ref, timeouts.request).catch(() => undefined); // the activation's error is what the operator needs
    }
    throw error;
  }
}
