/**
 * Device and operator credentials: stored hashed (salted: @edgefleet/node-io's
 * hashRandomToken or hashSecret), compared in constant time. A credential's id is the MQTT username; the
 * password is its token.
 */
import { isSecretHash } from '@edgefleet/node-io';
import { deviceIdProblem, isValidName } from '@edgefleet/protocol';

export interface Credential {
  role: 'device' | 'operator';
  id: string;
  groups: string[];
  /** Output of `hashSecret` or `hashRandomToken`: never the token itself. */
  secretHash: string;
}

export interface CredentialStore {
  find(username: string): Credential | undefined | Promise<Credential | undefined>;
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
    throw new TypeError(`credential "${c.id}": secretHash is not a hashSecret() or hashRandomToken() output; store the hash, never the token`);
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
