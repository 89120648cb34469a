/**
 * Test fixture: a real small filesystem (tmpfs) for an agent's data directory when this machine lets
 * a test mount one (root with CAP_SYS_ADMIN), and otherwise the agent's own transfer receiver in the
 * test's process with an injected statfs of that size: the same rule, through the same code.
 */
import { spawnSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TransferReceiver } from '@edgefleet/device-agent';

/** Whether a tmpfs can be mounted here (probed once, with a 64 KiB mount that is removed at once). */
export const tmpfsWorks = ((): boolean => {
  const probe = join(tmpdir(), `tmpfs-probe-${process.pid}`);
  spawnSync('mkdir', ['-p', probe]);
  const ok = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe]).status === 0;
  if (ok) spawnSync('umount', [probe]);
  spawnSync('rmdir', [probe]);
  return ok;
})();

/** Mounts a tmpfs of `size` (e.g. '10m') at `dir`; returns how to take it away (lazily, so open files do not stop it). */
export async function mountSmallDisk(dir: string, size: string): Promise<() => void> {
  await mkdir(dir, { recursive: true });
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  if (mounted.status !== 0) throw new Error(`could not mount a ${size} tmpfs at ${dir}: ${mounted.stderr.toString()}`);
  return () => void spawnSync('umount', ['-l', dir]);
}

/** The agent's transfer receiver for device `id`, with a model store that holds nothing and `freeBytes` free on its disk. */
export async function receiverWithFreeSpace(opts: { dataDir: string; publicKeyPem: string; id: string; freeBytes: number }): Promise<TransferReceiver> {
  const { createTransferReceiver } = await import('@edgefleet/device-agent');
  const { pino } = await import('pino');
  return createTransferReceiver({
    dataDir: opts.dataDir,
    publicKeyPem: opts.publicKeyPem,
    identity: { id: opts.id, groups: [], arch: process.arch },
    models: { list: () => [], install: async () => undefined, activate: async () => ({ model: 'm', version: 1, previous: null }), highestAccepted: () => 0, recordAccepted: async () => undefined },
    publishEvent: () => undefined,
    logger: pino({ level: 'silent' }),
    diskSpace: async () => ({ freeBytes: opts.freeBytes }),
  });
}
