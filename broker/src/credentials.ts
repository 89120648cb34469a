/**
 * Device and operator credentials: stored hashed (scrypt, salted), compared in
 * constant time. A credential's id is the MQTT username; the password is its token.
 */
import { randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';
import { deviceIdProblem, isValidName } from '@edgefleet/protocol';

export interface Credential {
  role: 'device' | 'operator';
  id: string;
  groups: string[];
  /** Output of `hashSecret`: never the token itself. */
  secretHash: string;
}

export interface CredentialStore {
  find(username: string): Credential | undefined | Promise<Credential | undefined>;
}

/**
 * scrypt parameters. Tokens are random (>= 128 bits), so the hash only has to make a
 * leaked credentials file useless, not to slow down guessing of a weak password:
 * N=2^14 keeps one verification around 20-40 ms, which matters when a whole fleet
 * reconnects after a broker restart.
 */
const N = 16384;
const R = 8;
const P = 1;
const KEY_LENGTH = 32;
const SALT_LENGTH = 16;
const PREFIX = 'scrypt';

/** `scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>`: self-describing, so parameters can change later. */
export function hashSecret(secret: string): string {
  if (secret.length === 0) throw new TypeError('cannot hash an empty secret: give the credential a token');
  const salt = randomBytes(SALT_LENGTH);
  const hash = scryptSync(secret, salt, KEY_LENGTH, { N, r: R, p: P, maxmem: 64 * 1024 * 1024 });
  return [PREFIX, N, R, P, salt.toString('base64'), hash.toString('base64')].join('$');
}

interface ParsedHash {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

function parseHash(encoded: string): ParsedHash | undefined {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== PREFIX) return undefined;
  const [, n, r, p, salt, hash] = parts as [string, string, string, string, string, string];
  const parsed = { N: Number(n), r: Number(r), p: Number(p), salt: Buffer.from(salt, 'base64'), hash: Buffer.from(hash, 'base64') };
  if (![parsed.N, parsed.r, parsed.p].every((v) => Number.isInteger(v) && v > 0)) return undefined;
  if (parsed.N > 1 << 20 || parsed.r > 32 || parsed.p > 16) return undefined; // refuse parameters that would exhaust memory
  if (parsed.hash.length < 16 || parsed.salt.length < 8) return undefined;
  return parsed;
}

/** True when `encoded` looks like a `hashSecret` output (used to validate credential files). */
export function isSecretHash(encoded: string): boolean {
  return parseHash(encoded) !== undefined;
}

function maxmem(h: ParsedHash): number {
  return 128 * h.N * h.r * h.p + 32 * 1024 * 1024;
}

/** Constant-time comparison of a presented token against a stored hash. */
export function verifySecret(secret: string, encoded: string): boolean {
  const h = parseHash(encoded);
  if (!h) return false;
  const candidate = scryptSync(secret, h.salt, h.hash.length, { N: h.N, r: h.r, p: h.p, maxmem: maxmem(h) });
  return timingSafeEqual(candidate, h.hash);
}

/** Same as verifySecret, off the event loop (the broker uses this for every CONNECT). */
export function verifySecretAsync(secret: string | Buffer, encoded: string): Promise<boolean> {
  const h = parseHash(encoded);
  if (!h) return Promise.resolve(false);
  return new Promise((resolve, reject) => {
    scrypt(secret, h.salt, h.hash.length, { N: h.N, r: h.r, p: h.p, maxmem: maxmem(h) }, (err, candidate) => {
      if (err) reject(err);
      else resolve(timingSafeEqual(candidate, h.hash));
    });
  });
}

/** A hash of a random secret, verified against when the username is unknown, so that timing does not reveal which ids exist. */
let decoyHash: string | undefined;
export function decoySecretHash(): string {
  decoyHash ??= hashSecret(randomBytes(16).toString('hex'));
  return decoyHash;
}

/** Checks one credential; throws a TypeError that says what to fix. */
export function assertCredential(c: Credential): Credential {
  if (c.role !== 'device' && c.role !== 'operator') {
    throw new TypeError(`credential "${c.id}": role must be "device" or "operator", got "${String(c.role)}"`);
  }
  if (!isValidName(c.id)) {
    throw new TypeError(`credential id "${c.id}": use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
  for (const g of c.groups) {
    if (!isValidName(g)) throw new TypeError(`credential "${c.id}": invalid group "${g}" (same rules as ids)`);
  }
  if (c.role === 'operator' && c.groups.length > 0) {
    throw new TypeError(`credential "${c.id}": operators have no groups; remove "groups"`);
  }
  if (!isSecretHash(c.secretHash)) {
    throw new TypeError(`credential "${c.id}": secretHash is not a hashSecret() output; store hashSecret(token), never the token`);
  }
  return c;
}

/**
 * An in-memory store. Devices and operators share one namespace of ids (the id is the MQTT
 * username): ids are unique, and no device id is reserved or inside an operator's client ids.
 */
export function staticCredentials(list: Credential[]): CredentialStore {
  const byId = new Map<string, Credential>();
  const operators = list.filter((c) => c.role === 'operator').map((c) => c.id);
  for (const c of list) {
    assertCredential(c);
    if (byId.has(c.id)) throw new TypeError(`duplicate credential id "${c.id}": ids are MQTT usernames and must be unique`);
    const problem = c.role === 'device' ? deviceIdProblem(c.id, { operators }) : undefined;
    if (problem) throw new TypeError(`credential "${c.id}": ${problem}`);
    byId.set(c.id, { ...c, groups: [...c.groups] });
  }
  return { find: (username) => byId.get(username) };
}
