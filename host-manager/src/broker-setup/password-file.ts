/**
 * The controller's password on an external broker it does not own (Mosquitto): made by
 * `hostManager broker setup mosquitto`, kept in `<data-dir>/broker.password` (0600) and read by the
 * controller when no --broker-password is given, so it never has to be typed or shown again.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '@edgefleet/node-io';

export const BROKER_PASSWORD_FILE = 'broker.password';

export const brokerPasswordPath = (dataDir: string): string => join(dataDir, BROKER_PASSWORD_FILE);

export async function readBrokerPassword(dataDir: string): Promise<string | undefined> {
  try {
    return (await readFile(brokerPasswordPath(dataDir), 'utf8')).trim() || undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** The stored password, or a new one (32 random bytes, base64url) written 0600; `created` says which. */
export async function ensureBrokerPassword(dataDir: string): Promise<{ password: string; created: boolean }> {
  const existing = await readBrokerPassword(dataDir);
  if (existing) return { password: existing, created: false };
  const password = randomBytes(32).toString('base64url');
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(brokerPasswordPath(dataDir), `${password}\n`, { mode: 0o600 });
  return { password, created: true };
}
