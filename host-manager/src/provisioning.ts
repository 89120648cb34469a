/**
 * Credentials: device tokens (created here, stored only as a hash, shown once)
 * and the operator token the HTTP API and the controller's own MQTT login use.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { hashSecret, verifySecretAsync } from '@edgefleet/node-io';
import type { Credential, CredentialStore } from '@edgefleet/broker';
import { FleetError, assertName } from '@edgefleet/protocol';
import type { DeviceRecord, FleetDb } from './state.js';

export const OPERATOR_TOKEN_FILE = 'operator.token';
export const ENROLMENT_KEY_FILE = 'enrolment.key';
export const DEFAULT_OPERATOR = 'admin';

/** 32 random bytes, base64url: the form of every token this controller creates. */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

export function operatorTokenPath(dataDir: string): string {
  return join(dataDir, OPERATOR_TOKEN_FILE);
}

export async function readOperatorToken(dataDir: string): Promise<string | undefined> {
  try {
    return (await readFile(operatorTokenPath(dataDir), 'utf8')).trim() || undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

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
 * The operator credential. Created on first start (token written to
 * `<dataDir>/operator.token`, mode 0600, for the local CLI, and returned so the
 * caller prints it once); if the token file was deleted, a new token replaces
 * the old one (so a lost token is recovered by deleting the file and restarting).
 */
export async function ensureOperator(db: FleetDb, dataDir: string, id = DEFAULT_OPERATOR): Promise<{ id: string; token: string; created: boolean }> {
  assertName('operator id', id);
  const existing = db.data.operators[id];
  const onDisk = await readOperatorToken(dataDir);
  if (existing && onDisk && (await verifySecretAsync(onDisk, existing.tokenHash))) return { id, token: onDisk, created: false };
  const token = newToken();
  db.data.operators[id] = { id, tokenHash: hashSecret(token), createdAt: existing?.createdAt ?? new Date().toISOString() };
  await writeSecretFile(operatorTokenPath(dataDir), token);
  await db.write();
  return { id, token, created: true };
}

/**
 * The fleet provisioning key a new device exchanges for its own credential
 * (POST /enrol). Created on first use like the operator token: the key in
 * `<dataDir>/enrolment.key` (0600) and returned once; only its hash in the state.
 * Devices enrolled with it join `groups`.
 */
export async function ensureEnrolmentKey(db: FleetDb, dataDir: string, groups: string[] = []): Promise<{ key: string; created: boolean }> {
  for (const g of groups) assertName('group', g);
  const file = join(dataDir, ENROLMENT_KEY_FILE);
  const onDisk = await readFile(file, 'utf8').then((t) => t.trim(), () => undefined);
  const existing = db.data.enrolment;
  if (existing && onDisk && (await verifySecretAsync(onDisk, existing.keyHash))) {
    if (groups.length > 0 && groups.join(',') !== existing.groups.join(',')) {
      existing.groups = [...groups];
      await db.write();
    }
    return { key: onDisk, created: false };
  }
  const key = newToken();
  db.data.enrolment = { keyHash: hashSecret(key), createdAt: new Date().toISOString(), groups: [...groups] };
  await writeSecretFile(file, key);
  await db.write();
  return { key, created: true };
}

/**
 * Checks a bearer token against the operators' hashes. Verified tokens are
 * remembered by their sha256 (scrypt per request would cost ~30 ms); the
 * comparison itself is constant time.
 */
export function createTokenChecker(db: FleetDb): (token: string | undefined) => Promise<string | undefined> {
  const verified = new Map<string, { operator: string; digest: Buffer }>();
  return async (token) => {
    if (!token || token.length > 512) return undefined;
    const digest = createHash('sha256').update(token).digest();
    const key = digest.toString('hex');
    const hit = verified.get(key);
    if (hit && timingSafeEqual(hit.digest, digest) && db.data.operators[hit.operator]) return hit.operator;
    for (const op of Object.values(db.data.operators)) {
      if (await verifySecretAsync(token, op.tokenHash)) {
        if (verified.size > 100) verified.clear();
        verified.set(key, { operator: op.id, digest });
        return op.id;
      }
    }
    return undefined;
  };
}

/** Broker credentials read live from the fleet state: a device added now can connect now. */
export function stateCredentials(db: FleetDb): CredentialStore {
  return {
    find(username: string): Credential | undefined {
      const device = db.data.devices[username];
      if (device && device.tokenHash) return { role: 'device', id: device.id, groups: [...device.groups], secretHash: device.tokenHash };
      const op = db.data.operators[username];
      if (op) return { role: 'operator', id: op.id, groups: [], secretHash: op.tokenHash };
      return undefined;
    },
  };
}

export interface ProvisionResult {
  device: DeviceRecord;
  token: string;
  /** The JSON config file for the agent (keys of device-agent's config). */
  config: Record<string, unknown>;
  /** The one line that starts the agent with that config file. */
  command: string;
  /** The same, with everything on the command line (no config file needed). */
  commandInline: string;
}

/** Creates a device's credential. The token is returned once and never stored. */
export async function provisionDevice(
  db: FleetDb,
  args: { id: string; groups: string[]; brokerUrl: string; fleetPublicKeyPem: string; legacyTopic?: string | undefined },
): Promise<ProvisionResult> {
  const id = assertName('device id', args.id);
  for (const g of args.groups) assertName('group', g);
  const existing = db.data.devices[id];
  if (existing?.tokenHash) {
    throw new FleetError('conflict', `device ${id} already exists; remove it first (devices remove ${id}) to issue a new token`);
  }
  const token = newToken();
  const device: DeviceRecord = {
    id,
    groups: [...new Set(args.groups)].sort(),
    tokenHash: hashSecret(token),
    createdAt: new Date().toISOString(),
    online: existing?.online ?? false,
    lastSeen: existing?.lastSeen ?? null,
    info: existing?.info ?? null,
    telemetry: existing?.telemetry ?? null,
    provisioned: true,
  };
  db.data.devices[id] = device;
  for (const g of device.groups) db.data.groups[g] ??= { name: g, createdAt: device.createdAt };
  await db.write();
  const config: Record<string, unknown> = {
    broker: args.brokerUrl,
    device: id,
    token,
    fleetPublicKey: args.fleetPublicKeyPem,
    groups: device.groups,
    dataDir: '/var/lib/edgefleet-agent',
    ...(args.legacyTopic ? { legacyTopic: args.legacyTopic } : {}),
  };
  const groupsFlag = device.groups.length ? ` --groups ${device.groups.join(',')}` : '';
  // bash/zsh ANSI-C quoting keeps the PEM's newlines on one line (a PEM has no quotes or backslashes).
  const keyInline = `$'${args.fleetPublicKeyPem.trimEnd().replace(/\n/g, '\\n')}'`;
  return {
    device,
    token,
    config,
    command: `deviceAgent --config /etc/edgefleet/${id}.json`,
    commandInline:
      // The token goes in the environment, not a flag: flags are visible to every user in `ps`.
      `EDGEFLEET_TOKEN=${token} deviceAgent --broker ${args.brokerUrl} --device ${id} --fleet-public-key=${keyInline}${groupsFlag}` +
      (args.legacyTopic ? ` --legacy-topic ${args.legacyTopic}` : ''),
  };
}
