/**
 * The controller's own secrets on disk: the operator token the HTTP API and the
 * controller's MQTT login use, and the fleet provisioning key for enrolment. Each is
 * created on first use, written once to a 0600 file beside the state for the local CLI
 * (and returned so the caller prints it once); only its hash goes into the state.
 */
import { randomBytes } from 'node:crypto';
import { chmod, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { hashRandomToken, verifySecretAsync } from '@edgefleet/node-io';
import { assertName } from '@edgefleet/protocol';
import type { FleetRepository } from '../state/repository.js';

export const OPERATOR_TOKEN_FILE = 'operator.token';
export const ENROLMENT_KEY_FILE = 'enrolment.key';

/** 32 random bytes, base64url: the form of every token this controller creates. */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

export function operatorTokenPath(dataDir: string): string {
  return join(dataDir, OPERATOR_TOKEN_FILE);
}

export function enrolmentKeyPath(dataDir: string): string {
  return join(dataDir, ENROLMENT_KEY_FILE);
}

export async function readOperatorToken(dataDir: string): Promise<string | undefined> {
  try {
    return (await readFile(operatorTokenPath(dataDir), 'utf8')).trim() || undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** A secret for the local CLI: created 0600 (the mode is set again in case the umask or an old file widened it). */
async function writeSecretFile(file: string, text: string): Promise<void> {
  const handle = await open(file, 'w', 0o600);
  try {
    await handle.writeFile(`${text}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await chmod(file, 0o600);
}

/**
 * The operator credential. Created on first start; if the token file was deleted, a new
 * token replaces the old one (so a lost token is recovered by deleting the file and restarting).
 */
export async function ensureOperator(state: FleetRepository, dataDir: string, id: string): Promise<{ id: string; token: string; created: boolean }> {
  assertName('operator id', id);
  const existing = state.operator(id);
  const onDisk = await readOperatorToken(dataDir);
  if (existing && onDisk && (await verifySecretAsync(onDisk, existing.tokenHash))) return { id, token: onDisk, created: false };
  const token = newToken();
  state.putOperator({ id, tokenHash: hashRandomToken(token), createdAt: existing?.createdAt ?? new Date().toISOString() });
  await writeSecretFile(operatorTokenPath(dataDir), token);
  await state.write();
  return { id, token, created: true };
}

/**
 * The fleet provisioning key a new device exchanges for its own credential (POST /enrol).
 * Devices enrolled with it join `groups`.
 */
export async function ensureEnrolmentKey(state: FleetRepository, dataDir: string, groups: string[] = []): Promise<{ key: string; created: boolean }> {
  for (const g of groups) assertName('group', g);
  const file = enrolmentKeyPath(dataDir);
  const onDisk = await readFile(file, 'utf8').then(
    (t) => t.trim(),
    () => undefined, // no key file yet: a new key is made below
  );
  const existing = state.enrolment();
  if (existing && onDisk && (await verifySecretAsync(onDisk, existing.keyHash))) {
    if (groups.length > 0 && groups.join(',') !== existing.groups.join(',')) {
      existing.groups = [...groups];
      await state.write();
    }
    return { key: onDisk, created: false };
  }
  const key = newToken();
  state.setEnrolment({ keyHash: hashRandomToken(key), createdAt: new Date().toISOString(), groups: [...groups] });
  await writeSecretFile(file, key);
  await state.write();
  return { key, created: true };
}
