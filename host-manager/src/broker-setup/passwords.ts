/**
 * Mosquitto 2.0's own password hash, in node:crypto: PBKDF2-HMAC-SHA512, 101 iterations, a 12-byte
 * random salt, a 64-byte key, written `$7$<iterations>$<salt b64>$<key b64>` in a password file
 * (what `mosquitto_passwd` writes) and as separate fields in a dynamic-security JSON file.
 */
import { pbkdf2Sync, randomBytes } from 'node:crypto';

export const MOSQUITTO_ITERATIONS = 101;

export interface MosquittoHash {
  password: string;
  salt: string;
  iterations: number;
}

export function mosquittoHash(secret: string, salt: Buffer = randomBytes(12), iterations = MOSQUITTO_ITERATIONS): MosquittoHash {
  return { password: pbkdf2Sync(secret, salt, iterations, 64, 'sha512').toString('base64'), salt: salt.toString('base64'), iterations };
}

/** One line of a Mosquitto password file: `user:$7$101$salt$hash`. */
export function passwdLine(username: string, secret: string, salt?: Buffer): string {
  const h = mosquittoHash(secret, salt);
  return `${username}:$7$${h.iterations}$${h.salt}$${h.password}`;
}
