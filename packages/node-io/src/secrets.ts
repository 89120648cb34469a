/**
 * Secrets at rest: tokens and keys are stored as salted hashes and compared in constant
 * time. The broker checks every CONNECT with these; the controller hashes the tokens it
 * issues and checks its operator and enrolment tokens with them.
 *
 * Two schemes, told apart by their prefix:
 * - `hashRandomToken` (SHA-256 of salt + token) for the tokens the controller creates:
 *   32 bytes from the CSPRNG. A slow hash only helps against guessing a low-entropy
 *   secret; nobody enumerates 2^256 tokens, so one SHA-256 makes a leaked file exactly as
 *   useless as scrypt does, at ~2 µs instead of ~40 ms per hash. At 10,000 devices that is
 *   the difference between provisioning (and reconnecting after a broker restart) in well
 *   under a second of CPU and ~400 CPU-seconds.
 * - `hashSecret` (scrypt) for secrets a person may have chosen (`broker hash-token`).
 */
import { createHash, randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';

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
const TOKEN_PREFIX = 'sha256';
/** 32 bytes base64url is 43 characters; anything shorter is not a token this scheme is for. */
const MIN_RANDOM_TOKEN_LENGTH = 32;

/** `scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>`: self-describing, so parameters can change later. */
export function hashSecret(secret: string): string {
  if (secret.length === 0) throw new TypeError('cannot hash an empty secret: give the credential a token');
  const salt = randomBytes(SALT_LENGTH);
  const hash = scryptSync(secret, salt, KEY_LENGTH, { N, r: R, p: P, maxmem: 64 * 1024 * 1024 });
  return [PREFIX, N, R, P, salt.toString('base64'), hash.toString('base64')].join('$');
}

/**
 * `sha256$<salt base64>$<hash base64>` for a token made by a CSPRNG with at least 128 bits
 * (the controller's are 256): never for a secret a person chose, which needs `hashSecret`.
 */
export function hashRandomToken(token: string): string {
  if (token.length < MIN_RANDOM_TOKEN_LENGTH) {
    throw new TypeError(`a random token has at least ${MIN_RANDOM_TOKEN_LENGTH} characters; hash a chosen secret with hashSecret instead`);
  }
  const salt = randomBytes(SALT_LENGTH);
  return [TOKEN_PREFIX, salt.toString('base64'), tokenDigest(salt, token).toString('base64')].join('$');
}

function tokenDigest(salt: Buffer, token: string | Buffer): Buffer {
  return createHash('sha256').update(salt).update(token).digest();
}

interface ParsedTokenHash {
  salt: Buffer;
  hash: Buffer;
}

function parseTokenHash(encoded: string): ParsedTokenHash | undefined {
  const parts = encoded.split('$');
  if (parts.length !== 3 || parts[0] !== TOKEN_PREFIX) return undefined;
  const salt = Buffer.from(parts[1]!, 'base64');
  const hash = Buffer.from(parts[2]!, 'base64');
  if (hash.length !== 32 || salt.length < 8) return undefined;
  return { salt, hash };
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
  return typeof encoded === 'string' && (parseHash(encoded) !== undefined || parseTokenHash(encoded) !== undefined);
}

/** A random token against a `hashRandomToken` output (undefined when `encoded` is not one). */
function verifyRandomToken(secret: string | Buffer, encoded: unknown): boolean | undefined {
  if (typeof encoded !== 'string' || !encoded.startsWith(`${TOKEN_PREFIX}$`)) return undefined;
  const h = parseTokenHash(encoded);
  if (!h) return false;
  return timingSafeEqual(tokenDigest(h.salt, secret), h.hash);
}

function maxmem(h: ParsedHash): number {
  return 128 * h.N * h.r * h.p + 32 * 1024 * 1024;
}

/** Constant-time comparison of a presented token against a stored hash. */
export function verifySecret(secret: string, encoded: string): boolean {
  const token = verifyRandomToken(secret, encoded);
  if (token !== undefined) return token;
  const h = parseHash(encoded);
  if (!h) return false;
  const candidate = scryptSync(secret, h.salt, h.hash.length, { N: h.N, r: h.r, p: h.p, maxmem: maxmem(h) });
  return timingSafeEqual(candidate, h.hash);
}

/** Same as verifySecret; scrypt runs off the event loop (the broker uses this for every CONNECT). */
export function verifySecretAsync(secret: string | Buffer, encoded: string): Promise<boolean> {
  const token = verifyRandomToken(secret, encoded);
  if (token !== undefined) return Promise.resolve(token);
  const h = parseHash(encoded);
  if (!h) return Promise.resolve(false);
  return new Promise((resolve, reject) => {
    scrypt(secret, h.salt, h.hash.length, { N: h.N, r: h.r, p: h.p, maxmem: maxmem(h) }, (err, candidate) => {
      if (err) reject(err);
      else resolve(timingSafeEqual(candidate, h.hash));
    });
  });
}

/**
 * A hash of a random token, verified against when the username is unknown, so that timing
 * does not reveal which ids exist. It is a `hashRandomToken` hash like every credential the
 * controller issues (a credential still hashed with scrypt from before is slower to check).
 */
let decoyHash: string | undefined;
export function decoySecretHash(): string {
  decoyHash ??= hashRandomToken(randomBytes(32).toString('base64url'));
  return decoyHash;
}
