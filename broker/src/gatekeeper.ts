/**
 * Who may connect, as which client id, and what each connection may publish,
 * retain and subscribe to: the Aedes hooks (preConnect, authenticate,
 * authorizePublish, authorizeSubscribe). Every decision about topics comes
 * from the protocol's rules (mayPublish, mayRetain, maySubscribe).
 */
import { randomBytes } from 'node:crypto';
import type { Aedes, AedesOptions, AuthenticateError, Client } from 'aedes';
import type { Logger } from 'pino';
import { mayPublish, mayRetain, maySubscribe, type AccessOptions, type Principal, type Qos } from '@edgefleet/protocol';
import { decoySecretHash, verifySecretAsync } from '@edgefleet/node-io';
import type { Admission } from './admission.js';
import type { Credential, CredentialStore } from './credentials.js';

/** What the broker knows about an authenticated connection. */
interface Session {
  principal: Principal;
  /** Identifies the credential ("device:dev1", "operator:ops", "anonymous"). */
  key: string;
  /** mayPublish answers for this principal, by topic (bounded). */
  publishDecisions: Map<string, boolean>;
  /** Subscriptions refused on this connection so far. */
  refusedFilters: number;
}

const PUBLISH_CACHE_LIMIT = 256;
/**
 * Refused subscriptions one connection may collect before it is closed: an agent whose groups
 * do not match the broker's gets a handful at each connect; thousands are an attack on the
 * shared thread (each is an ACL decision and a log line).
 */
export const MAX_REFUSED_SUBSCRIPTIONS = 64;

// Aedes' connect return codes (AuthErrorCode is a const enum, unusable with isolatedModules)
const IDENTIFIER_REJECTED = 2;
const SERVER_UNAVAILABLE = 3;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;

function authError(returnCode: number, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

function principalOf(c: Credential): Principal {
  return c.role === 'device' ? { role: 'device', id: c.id, groups: c.groups } : { role: 'operator', id: c.id };
}

export interface GatekeeperOptions {
  store: CredentialStore;
  allowAnonymous: boolean;
  access: AccessOptions;
  /** What a token check may cost: concurrency, per-address backoff, cache of verified tokens. */
  admission: Admission;
  /** The peer address of a client's connection (for the per-address backoff). */
  addressOf: (client: Client) => string | undefined;
  log: Logger;
}

type Hooks = Required<Pick<AedesOptions, 'preConnect' | 'authenticate' | 'authorizePublish' | 'authorizeSubscribe'>>;

export interface Gatekeeper {
  hooks: Hooks;
  /** Called once Aedes exists: the client-id checks look at its connected clients. */
  attach(aedes: Aedes): void;
}

export function createGatekeeper(options: GatekeeperOptions): Gatekeeper {
  const { log, access } = options;
  const sessions = new WeakMap<Client, Session>();
  /** Connections whose CONNECT had a zero-length client id (Aedes assigns `aedes_<uuid>` before authenticate). */
  const assignedIds = new WeakSet<Client>();
  const claims = new ClientIdClaims(sessions);

  const hooks: Hooks = {
    preConnect(client, packet, done) {
      if (packet.clientId === '') assignedIds.add(client);
      done(null, true);
    },

    authenticate(client, username, password, done) {
      const requested = client.id;
      authenticateClient({ client, username, password, assigned: assignedIds.has(client), options, claims }).then(
        (session) => {
          sessions.set(client, session);
          log.debug({ clientId: client.id, requested, who: session.key }, 'client authenticated');
          done(null, true);
        },
        (err: AuthenticateError) => {
          // refusals that cost nothing are a flood's: one warning per limited address is logged instead
          const cheap = err.returnCode === SERVER_UNAVAILABLE || (err as { cheap?: boolean }).cheap === true;
          log[cheap ? 'debug' : 'warn']({ clientId: requested, username, reason: err.message }, 'connection refused');
          done(err, false);
        },
      );
    },

    authorizePublish(client, packet, done) {
      // A null client is Aedes publishing the will of a client that is gone; wills are checked at CONNECT.
      if (client === null) return done(null);
      const session = sessions.get(client);
      if (!session) return done(new Error('not authenticated'));
      const refusal = publishRefusal(session, packet.topic, packet.retain, access);
      if (!refusal) return done(null);
      // MQTT 3.1.1 has no negative PUBACK: the message is neither delivered nor stored, and the
      // connection is closed [MQTT-3.3.5-2] (Aedes closes it when this callback gets an error)
      log.warn({ clientId: client.id, who: session.key, topic: packet.topic, retain: packet.retain, reason: refusal }, 'publish refused; closing connection');
      done(new Error(refusal));
    },

    authorizeSubscribe(client, subscription, done) {
      const session = sessions.get(client);
      if (!session) return done(new Error('not authenticated'));
      if (maySubscribe(session.principal, subscription.topic, access, subscription.qos as Qos)) return done(null, subscription);
      if (++session.refusedFilters > MAX_REFUSED_SUBSCRIPTIONS) {
        if (session.refusedFilters === MAX_REFUSED_SUBSCRIPTIONS + 1) {
          log.warn({ clientId: client.id, who: session.key }, `more than ${MAX_REFUSED_SUBSCRIPTIONS} subscriptions refused on one connection; closing it`);
        }
        return done(new Error('too many refused subscriptions')); // Aedes closes the connection
      }
      log.warn({ clientId: client.id, who: session.key, filter: subscription.topic, qos: subscription.qos }, 'subscription refused by ACL');
      done(null, null); // SUBACK return code 0x80 for this filter
    },
  };

  return {
    hooks,
    attach(aedes) {
      claims.aedes = aedes;
      aedes.on('client', (client) => claims.registered(client));
    },
  };
}

/** Why a publish is refused (a sentence for the log), or undefined when it is allowed. */
function publishRefusal(session: Session, topic: string, retain: boolean, access: AccessOptions): string | undefined {
  let allowed = session.publishDecisions.get(topic);
  if (allowed === undefined) {
    allowed = mayPublish(session.principal, topic, access);
    if (session.publishDecisions.size >= PUBLISH_CACHE_LIMIT) session.publishDecisions.clear();
    session.publishDecisions.set(topic, allowed);
  }
  if (!allowed) return `not authorized to publish to ${topic}`;
  if (retain && !mayRetain(topic, access)) return `retained publish to ${topic} refused: only presence (…/status) is ever retained`;
  return undefined;
}

/**
 * Client ids held by a credential: connected in Aedes, or authenticated and not yet
 * registered. [MQTT-3.1.4-2] lets a new connection take a client id over; only the
 * credential that holds it may.
 */
class ClientIdClaims {
  aedes: Aedes | undefined;
  private readonly pending = new Map<string, { key: string; client: Client }>();
  constructor(private readonly sessions: WeakMap<Client, Session>) {}

  claim(clientId: string, key: string, client: Client): void {
    const connected = (this.aedes as unknown as { clients: Record<string, Client | undefined> } | undefined)?.clients[clientId];
    const pending = this.pending.get(clientId);
    const holders = [connected && !connected.closed ? this.sessions.get(connected)?.key : undefined, pending && !pending.client.closed ? pending.key : undefined];
    if (holders.some((holder) => holder !== undefined && holder !== key)) {
      throw authError(IDENTIFIER_REJECTED, `client id "${clientId}" is in use by another credential`);
    }
    this.pending.set(clientId, { key, client }); // until Aedes registers it ('client' event)
  }

  registered(client: Client): void {
    if (this.pending.get(client.id)?.client === client) this.pending.delete(client.id);
  }
}

interface AuthenticateArgs {
  client: Client;
  username: string | undefined;
  password: Buffer | undefined;
  /** The CONNECT had a zero-length client id. */
  assigned: boolean;
  options: GatekeeperOptions;
  claims: ClientIdClaims;
}

async function authenticateClient(args: AuthenticateArgs): Promise<Session> {
  const { client, username, options } = args;
  // [MQTT-3.1.3-7]: a zero-length client id needs a clean session, else "identifier rejected"
  if (args.assigned && !client.clean) throw authError(IDENTIFIER_REJECTED, 'a zero-length client id needs clean session 1 [MQTT-3.1.3-7]');
  let session: Session;
  if (username === undefined) {
    if (!options.allowAnonymous) throw authError(NOT_AUTHORIZED, 'anonymous clients are not allowed');
    // an assigned id (Aedes' `aedes_<uuid>`) is unique and is nobody's credential
    if (!args.assigned && (await options.store.find(client.id))) {
      throw authError(IDENTIFIER_REJECTED, `client id "${client.id}" is the id of a credential: connect with that credential`);
    }
    session = { principal: { role: 'operator', id: 'anonymous' }, key: 'anonymous', publishDecisions: new Map(), refusedFilters: 0 };
  } else {
    const credential = await checkToken(client, username, args.password ?? Buffer.alloc(0), options);
    await settleClientId(client, credential, args.assigned, options.store);
    session = { principal: principalOf(credential), key: `${credential.role}:${credential.id}`, publishDecisions: new Map(), refusedFilters: 0 };
  }
  // A will is published on the client's behalf later: authorize it now.
  const will = (client as unknown as { _will?: { topic: string; retain?: boolean } | null })._will;
  if (will && !mayPublish(session.principal, will.topic, options.access)) {
    throw authError(NOT_AUTHORIZED, `not authorized to set a will on ${will.topic}`);
  }
  if (will?.retain && !mayRetain(will.topic, options.access)) {
    throw authError(NOT_AUTHORIZED, `a retained will on ${will.topic} is refused: only presence (…/status) is ever retained`);
  }
  args.claims.claim(client.id, session.key, client);
  return session;
}

/** The credential whose token `password` is, or the CONNACK error that refuses it. */
async function checkToken(client: Client, username: string, password: Buffer, options: GatekeeperOptions): Promise<Credential> {
  const credential = await options.store.find(username);
  // an unknown user name is checked against a decoy, so timing does not tell which ids exist
  const secretHash = credential?.secretHash ?? decoySecretHash();
  const outcome = await options.admission.admit({
    address: options.addressOf(client),
    username,
    token: password,
    secretHash,
    known: credential !== undefined,
    check: () => verifySecretAsync(password, secretHash),
  });
  if (outcome === 'ok' && credential) return credential;
  if (typeof outcome === 'object' && outcome.refused === 'busy') throw authError(SERVER_UNAVAILABLE, 'too many token checks waiting; retry later');
  if (typeof outcome === 'object' && outcome.refused === 'backoff') {
    const err = authError(NOT_AUTHORIZED, `too many failed logins from this address; refused without a check for ${Math.ceil(outcome.retryAfterMs / 1000)} s`);
    throw Object.assign(err, { cheap: true });
  }
  throw authError(BAD_USERNAME_OR_PASSWORD, 'bad user name or password');
}

/**
 * The client-id rules of a credential. A device's client id is its id, so nobody can knock it
 * off by borrowing it: a device that sends none is refused. An operator's is its id or
 * `<id>-<anything>`, never another credential's id; one that sends none gets `<id>-<random hex>`
 * assigned [MQTT-3.1.3-6].
 */
async function settleClientId(client: Client, credential: Credential, assigned: boolean, store: CredentialStore): Promise<void> {
  if (credential.role === 'device') {
    if (assigned) throw authError(IDENTIFIER_REJECTED, `a device must send its id "${credential.id}" as client id; none was sent`);
    if (client.id !== credential.id) throw authError(IDENTIFIER_REJECTED, `a device's client id must equal its id "${credential.id}"`);
    return;
  }
  if (assigned) {
    (client as { id: string }).id = `${credential.id}-${randomBytes(8).toString('hex')}`;
  } else if (client.id !== credential.id && !client.id.startsWith(`${credential.id}-`)) {
    throw authError(IDENTIFIER_REJECTED, `an operator's client id must be "${credential.id}" or start with "${credential.id}-"`);
  }
  if (client.id !== credential.id && (await store.find(client.id))) {
    throw authError(IDENTIFIER_REJECTED, `client id "${client.id}" is the id of another credential`);
  }
}
