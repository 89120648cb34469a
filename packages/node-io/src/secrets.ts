/**
 * Secrets at rest: tokens and keys are stored as salted scrypt hashes and compared in
 * constant time. The broker checks every CONNECT with these; the controller hashes the
 * tokens it issues and checks its operator and enrolment tokens with them.
 */
import { randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';

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

function parseHash(encoded: unknown): ParsedHash | undefined {
  if (typeof encoded !== 'string') return undefined;
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
