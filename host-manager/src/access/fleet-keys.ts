/**
 * The fleet signing key (ed25519). Created on first start in the data directory;
 * the private key file is readable by its owner only, and an existing one that
 * is not is refused (a key others can read can sign models for the whole fleet).
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { chmod, mkdir, open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { generateFleetKeys, keyId as fingerprint } from '@edgefleet/protocol';

export interface FleetKeys {
  privateKeyPem: string;
  publicKeyPem: string;
  /** Fingerprint of the public key (as in signed manifests). */
  keyId: string;
}

export const PRIVATE_KEY_FILE = 'fleet-key.pem';
export const PUBLIC_KEY_FILE = 'fleet-key.pub.pem';

export function fleetKeyPaths(dataDir: string): { privateKey: string; publicKey: string } {
  return { privateKey: join(dataDir, 'keys', PRIVATE_KEY_FILE), publicKey: join(dataDir, 'keys', PUBLIC_KEY_FILE) };
}

export async function loadOrCreateFleetKeys(dataDir: string): Promise<FleetKeys> {
  const paths = fleetKeyPaths(dataDir);
  await mkdir(join(dataDir, 'keys'), { recursive: true, mode: 0o700 });
  const existing = await stat(paths.privateKey).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (existing) {
    if ((existing.mode & 0o077) !== 0) {
      throw new Error(
        `the fleet private key ${paths.privateKey} is readable by group or others (mode ${(existing.mode & 0o777).toString(8)}); ` +
          `run \`chmod 600 ${paths.privateKey}\` and start again (and rotate the key if others may have read it)`,
      );
    }
    const privateKeyPem = await readFile(paths.privateKey, 'utf8');
    const publicKeyPem = createPublicKey(createPrivateKey(privateKeyPem)).export({ type: 'spki', format: 'pem' }).toString();
    // The public file is derived, so a missing or stale one is simply rewritten.
    const onDisk = await readFile(paths.publicKey, 'utf8').catch(() => undefined);
    if (onDisk !== publicKeyPem) await writeExclusive(paths.publicKey, publicKeyPem, 0o644, true);
    return { privateKeyPem, publicKeyPem, keyId: fingerprint(publicKeyPem) };
  }
  const pair = generateFleetKeys();
  // 'wx' + mode: the file is created 0600 from the start, never briefly world-readable.
  await writeExclusive(paths.privateKey, pair.privateKeyPem, 0o600, false);
  await writeExclusive(paths.publicKey, pair.publicKeyPem, 0o644, true);
  return { ...pair, keyId: fingerprint(pair.publicKeyPem) };
}

async function writeExclusive(file: string, text: string, mode: number, overwrite: boolean): Promise<void> {
  const handle = await open(file, overwrite ? 'w' : 'wx', mode);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await chmod(file, mode); // the umask may have narrowed (or, for 'w' on an existing file, not applied) the mode
}
