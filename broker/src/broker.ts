/**
 * The embedded broker: Aedes behind our own listeners, with every connection
 * wrapped by a PacketGuard, every CONNECT authenticated against a CredentialStore,
 * and every PUBLISH and SUBSCRIBE decided by the protocol's access rules.
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { Readable, type Duplex } from 'node:stream';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import type { Aedes, AedesOptions, AuthenticateError, Client } from 'aedes';
import { pino, type Logger } from 'pino';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { mayPublish, maySubscribe, type Principal } from '@edgefleet/protocol';
import { decoySecretHash, verifySecretAsync } from '@edgefleet/node-io';
import type { Credential, CredentialStore } from './credentials.js';
import { DEFAULT_LIMITS, PacketGuard, guardStream, type GuardLimits, type Violation } from './guard.js';

/** A bad option: the message says what to fix. */
export class BrokerConfigError extends Error {
  readonly code = 'invalid_config';
}

export interface BrokerOptions {
  credentials: CredentialStore;
  /** Development switch: clients without a user name get operator rights. Off by default; logged loudly. */
  allowAnonymous?: boolean;
  /** Default { host: '0.0.0.0', port: 1883 }; port 0 = ephemeral (see RunningBroker.ports). */
  tcp?: { host?: string; port: number } | false;
  /** MQTT over TLS. `ca` + `requestCert` require client certificates signed by that CA. */
  tls?: { host?: string; port: number; key: string; cert: string; ca?: string; requestCert?: boolean };
  /** MQTT over WebSocket (path-independent), for browsers. */
  ws?: { host?: string; port: number };
  /** Whole-packet limit in bytes, enforced from the fixed header before the body is buffered. Default 4 MiB. */
  maxPacketSize?: number;
  /** Topic names and filters, UTF-8 bytes. Default 1024. */
  maxTopicLength?: number;
  /** Topic levels. Default 32 (Aedes' own ceiling is 100). */
  maxTopicLevels?: number;
  /** The original plain-text channel (e.g. 'hello'), granted to everyone when set. */
  legacyTopic?: string;
  persistence?: { kind: 'memory' } | { kind: 'redis'; url: string };
  logger?: Logger;
}

export interface RunningBroker {
  aedes: Aedes;
  ports: { tcp?: number; tls?: number; ws?: number };
  /** mqtt://127.0.0.1:<tcp> (or the TCP listener's host when it is not a wildcard address). */
  url: string;
  close(): Promise<void>;
}

/** What the broker knows about an authenticated connection. */
interface Session {
  principal: Principal;
  /** Identifies the credential ("device:dev1", "operator:ops", "anonymous"). */
  key: string;
  /** mayPublish answers for this principal, by topic (bounded). */
  publishDecisions: Map<string, boolean>;
}

const PUBLISH_CACHE_LIMIT = 256;

// Aedes' connect return codes (AuthErrorCode is a const enum, unusable with isolatedModules)
const IDENTIFIER_REJECTED = 2;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;

function authError(returnCode: number, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

function principalOf(c: Credential): Principal {
  return c.role === 'device' ? { role: 'device', id: c.id, groups: c.groups } : { role: 'operator', id: c.id };
}

function defaultLogger(): Logger {
  return pino({ name: 'broker' }, pino.destination(2));
}

export async function createBroker(options: BrokerOptions): Promise<RunningBroker> {
  const log = (options.logger ?? defaultLogger()).child({ component: 'broker' });
  const limits: GuardLimits = {
    maxPacketSize: options.maxPacketSize ?? DEFAULT_LIMITS.maxPacketSize,
    maxTopicLength: options.maxTopicLength ?? DEFAULT_LIMITS.maxTopicLength,
    maxTopicLevels: options.maxTopicLevels ?? DEFAULT_LIMITS.maxTopicLevels,
  };
  validateLimits(limits);
  const access = { legacyTopic: options.legacyTopic };
  const store = options.credentials;
  const allowAnonymous = options.allowAnonymous === true;
  if (allowAnonymous) {
    log.warn(
      'ANONYMOUS CLIENTS ALLOWED: any client without a user name connects with operator rights. ' +
        'Development only; never expose this broker beyond localhost.',
    );
  }

  const sessions = new WeakMap<Client, Session>();
  /** Client ids authenticated but not yet registered by Aedes, with the credential and connection that hold them. */
  const authenticating = new Map<string, { key: string; client: Client }>();

  const persistence = await createPersistence(options.persistence ?? { kind: 'memory' }, log);
  const { Aedes } = await import('aedes');

  const aedesOptions: AedesOptions = {
    ...persistence.aedesOptions,
    maxClientsIdLength: 256,
    // a socket that has not sent CONNECT after 10 s is closed (Aedes' default is 30 s)
    connectTimeout: 10_000,
    maxTopicLevels: Math.min(limits.maxTopicLevels, 100),

    authenticate(client, username, password, done) {
      const clientId = client.id;
      authenticateClient(client, clientId, username, password).then(
        (session) => {
          sessions.set(client, session);
          log.debug({ clientId, who: session.key }, 'client authenticated');
          done(null, true);
        },
        (err: AuthenticateError) => {
          log.warn({ clientId, username, reason: err.message }, 'connection refused');
          done(err, false);
        },
      );
    },

    authorizePublish(client, packet, done) {
      // A null client is Aedes publishing the will of a client that is gone; wills are checked at CONNECT.
      if (client === null) return done(null);
      const session = sessions.get(client);
      if (!session) return done(new Error('not authenticated'));
      const topic = packet.topic;
      let allowed = session.publishDecisions.get(topic);
      if (allowed === undefined) {
        allowed = mayPublish(session.principal, topic, access);
        if (session.publishDecisions.size >= PUBLISH_CACHE_LIMIT) session.publishDecisions.clear();
        session.publishDecisions.set(topic, allowed);
      }
      if (allowed) return done(null);
      // MQTT 3.1.1 has no negative PUBACK: the connection is closed [MQTT-3.3.5-2]
      log.warn({ clientId: client.id, who: session.key, topic }, 'publish refused by ACL; closing connection');
      done(new Error(`not authorized to publish to ${topic}`));
    },

    authorizeSubscribe(client, subscription, done) {
      const session = sessions.get(client);
      if (session && maySubscribe(session.principal, subscription.topic, access)) return done(null, subscription);
      log.warn({ clientId: client.id, who: session?.key, filter: subscription.topic }, 'subscription refused by ACL');
      done(null, null); // SUBACK return code 0x80 for this filter
    },
  };

  async function authenticateClient(
    client: Client,
    clientId: string,
    username: string | undefined,
    password: Buffer | undefined,
  ): Promise<Session> {
    let session: Session;
    if (username === undefined) {
      if (!allowAnonymous) throw authError(NOT_AUTHORIZED, 'anonymous clients are not allowed');
      if (await store.find(clientId)) {
        throw authError(IDENTIFIER_REJECTED, `client id "${clientId}" is the id of a credential: connect with that credential`);
      }
      session = { principal: { role: 'operator', id: 'anonymous' }, key: 'anonymous', publishDecisions: new Map() };
    } else {
      const credential = await store.find(username);
      const ok = await verifySecretAsync(password ?? Buffer.alloc(0), credential?.secretHash ?? decoySecretHash());
      if (!ok || !credential) throw authError(BAD_USERNAME_OR_PASSWORD, 'bad user name or password');
      if (credential.role === 'device' && clientId !== credential.id) {
        throw authError(IDENTIFIER_REJECTED, `a device's client id must equal its id "${credential.id}"`);
      }
      if (credential.role === 'operator' && clientId !== credential.id) {
        if (!clientId.startsWith(`${credential.id}-`)) {
          throw authError(IDENTIFIER_REJECTED, `an operator's client id must be "${credential.id}" or start with "${credential.id}-"`);
        }
        if (await store.find(clientId)) {
          throw authError(IDENTIFIER_REJECTED, `client id "${clientId}" is the id of another credential`);
        }
      }
      session = { principal: principalOf(credential), key: `${credential.role}:${credential.id}`, publishDecisions: new Map() };
    }
    // A will is published on the client's behalf later: authorize it now.
    const will = (client as unknown as { _will?: { topic: string } | null })._will;
    if (will && !mayPublish(session.principal, will.topic, access)) {
      throw authError(NOT_AUTHORIZED, `not authorized to set a will on ${will.topic}`);
    }
    // [MQTT-3.1.4-2] lets a new connection take over a client id; only the same credential may do so.
    const connected = (aedes as unknown as { clients: Record<string, Client | undefined> }).clients[clientId];
    const pending = authenticating.get(clientId);
    const holders = [connected && !connected.closed ? sessions.get(connected)?.key : undefined, pending && !pending.client.closed ? pending.key : undefined];
    if (holders.some((key) => key !== undefined && key !== session.key)) {
      throw authError(IDENTIFIER_REJECTED, `client id "${clientId}" is in use by another credential`);
    }
    authenticating.set(clientId, { key: session.key, client }); // until Aedes registers it ('client' event)
    return session;
  }

  const aedes = await Aedes.createBroker(aedesOptions);
  aedes.on('client', (client) => {
    if (authenticating.get(client.id)?.client === client) authenticating.delete(client.id);
  });
  aedes.on('clientError', (client, err) => log.debug({ clientId: client.id, err: err.message }, 'client error'));
  aedes.on('connectionError', (_client, err) => log.debug({ err: err.message }, 'connection error'));

  const connections = new Set<Duplex>();
  function accept(stream: Duplex, remote: string, req?: IncomingMessage): void {
    connections.add(stream);
    stream.once('close', () => connections.delete(stream));
    stream.on('error', () => {
      /* resets and EPIPEs end the connection; Aedes sees them too (clientError) and closes the client */
    });
    const guard = new PacketGuard(limits);
    const onViolation = (v: Violation) => {
      log.warn({ remote, clientId: guard.clientId, username: guard.username, packet: v.packetType, reason: v.reason }, 'closing connection: invalid packet');
    };
    const conn = guardStream(stream, guard, onViolation);
    aedes.handle(conn, req);
  }

  const servers: { close(): Promise<void> }[] = [];
  const ports: RunningBroker['ports'] = {};
  let url = '';
  try {
    const tcp = options.tcp === undefined ? { host: '0.0.0.0', port: 1883 } : options.tcp;
    if (tcp) {
      // noDelay: MQTT packets are small; with Nagle + delayed ACK each request/reply hop waits ~40 ms
      const server = createNetServer({ noDelay: true }, (socket: Socket) => accept(socket, `${socket.remoteAddress}:${socket.remotePort}`));
      const host = tcp.host ?? '0.0.0.0';
      ports.tcp = await listen(server, tcp.port, host, 'tcp');
      servers.push({ close: () => closeServer(server) });
      const reachable = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
      url = `mqtt://${reachable}:${ports.tcp}`;
    }
    if (options.tls) {
      const t = options.tls;
      const server = createTlsServer(
        {
          key: readOption(t.key, 'tls.key'),
          cert: readOption(t.cert, 'tls.cert'),
          ...(t.ca ? { ca: readOption(t.ca, 'tls.ca') } : {}),
          requestCert: t.requestCert === true,
          rejectUnauthorized: t.requestCert === true,
          noDelay: true,
        },
        (socket: TLSSocket) => accept(socket, `tls ${socket.remoteAddress}:${socket.remotePort}`),
      );
      server.on('tlsClientError', (err) => log.warn({ err: err.message }, 'TLS handshake failed'));
      ports.tls = await listen(server, t.port, t.host ?? '0.0.0.0', 'tls');
      servers.push({ close: () => closeServer(server) });
    }
    if (options.ws) {
      const http: HttpServer = createHttpServer((_req, res) => {
        res.writeHead(426, { 'content-type': 'text/plain' }).end('MQTT over WebSocket: connect with a WebSocket client\n');
      });
      // ws buffers a whole message before emitting it: cap messages at the packet limit (+ framing slack)
      const wss = new WebSocketServer({ server: http, maxPayload: limits.maxPacketSize + 16 });
      wss.on('connection', (socket, req) => {
        const stream = createWebSocketStream(socket);
        accept(stream, `ws ${req.socket.remoteAddress}:${req.socket.remotePort}`, req);
      });
      ports.ws = await listen(http, options.ws.port, options.ws.host ?? '0.0.0.0', 'ws');
      servers.push({
        close: async () => {
          for (const client of wss.clients) client.terminate();
          await new Promise<void>((resolve) => wss.close(() => resolve()));
          await closeServer(http);
        },
      });
    }
  } catch (err) {
    await Promise.all(servers.map((s) => s.close()));
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    await persistence.close();
    throw err;
  }
  log.info({ ports, persistence: options.persistence?.kind ?? 'memory', limits }, 'broker listening');

  let closing: Promise<void> | undefined;
  return {
    aedes,
    ports,
    url,
    close() {
      closing ??= (async () => {
        const closed = Promise.all(servers.map((s) => s.close()));
        for (const c of connections) c.destroy();
        await new Promise<void>((resolve) => aedes.close(() => resolve()));
        await closed;
        await persistence.close();
        log.info('broker closed');
      })();
      return closing;
    },
  };
}

function validateLimits(l: GuardLimits): void {
  const check = (name: string, v: number, min: number, max: number) => {
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new BrokerConfigError(`${name} must be an integer from ${min} to ${max}, got ${v}`);
    }
  };
  check('maxPacketSize', l.maxPacketSize, 1024, 268_435_455); // the largest MQTT remaining length
  check('maxTopicLength', l.maxTopicLength, 1, 65_535);
  check('maxTopicLevels', l.maxTopicLevels, 1, 100);
}

function readOption(value: string, name: string): Buffer | string {
  // PEM text is accepted as is; anything else is a file path
  if (value.includes('-----BEGIN')) return value;
  try {
    return readFileSync(value);
  } catch (err) {
    throw new BrokerConfigError(`cannot read ${name} file "${value}": ${(err as Error).message}`);
  }
}

async function listen(server: NetServer | HttpServer, port: number, host: string, what: string): Promise<number> {
  server.listen(port, host);
  try {
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err))]);
  } catch (err) {
    throw new Error(`cannot listen for ${what} on ${host}:${port}: ${(err as Error).message}`);
  }
  return (server.address() as AddressInfo).port;
}

function closeServer(server: NetServer | HttpServer): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}

interface PersistenceSetup {
  aedesOptions: Pick<AedesOptions, 'persistence' | 'mq'>;
  close(): Promise<void>;
}

async function createPersistence(
  kind: NonNullable<BrokerOptions['persistence']>,
  log: Logger,
): Promise<PersistenceSetup> {
  if (kind.kind === 'memory') return { aedesOptions: {}, close: async () => {} };
  if (kind.kind !== 'redis') throw new Error(`unknown persistence "${(kind as { kind: string }).kind}": use "memory" or "redis"`);
  // Aedes 1.x calls persistence methods as promises: use the package's async class, not its callback wrapper.
  const requireHere = createRequire(import.meta.url);
  const requireRedisPkg = createRequire(requireHere.resolve('aedes-persistence-redis/package.json'));
  const AsyncRedisPersistence = requireRedisPkg('./asyncPersistence.js') as new (opts: { conn: unknown }) => {
    destroy(): Promise<void>;
  };
  const Redis = requireRedisPkg('ioredis') as new (url: string, opts: object) => RedisConnection;
  const mqemitterRedis = requireHere('mqemitter-redis') as (opts: { subConn: unknown; pubConn: unknown }) => {
    close(cb: () => void): void;
  };

  // Probe once without retries, so a wrong URL fails now with a clear message instead of retrying forever.
  const probe = new Redis(kind.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  let probeError: Error | undefined;
  probe.on('error', (err: Error) => (probeError = err)); // reported below, with connect()'s rejection
  try {
    await withTimeout(probe.connect(), 5000, 'no answer within 5 s');
    await probe.quit();
  } catch (err) {
    // disconnect() on a connection that already ended would leave a 2 s timer behind
    if (probe.status !== 'end') probe.disconnect();
    throw new Error(`cannot reach Redis at ${redactUrl(kind.url)} (${(probeError ?? (err as Error)).message}): is it running? (--redis redis://host:port)`, {
      cause: err,
    });
  }
  const conn = new Redis(kind.url, { maxRetriesPerRequest: 3 });
  conn.on('error', (err: Error) => log.error({ err: err.message }, 'redis connection error'));
  const subConn = conn.duplicate();
  const pubConn = conn.duplicate();
  for (const c of [subConn, pubConn]) c.on('error', (err: Error) => log.error({ err: err.message }, 'redis connection error'));
  const persistence = streamsAsReadables(new AsyncRedisPersistence({ conn }));
  const mq = mqemitterRedis({ subConn, pubConn });
  log.info({ redis: redactUrl(kind.url) }, 'persistence and message routing shared through Redis');
  return {
    aedesOptions: { persistence, mq },
    // aedes.close() closes the emitter (both of its connections); the persistence is ours to end. Its
    // destroy() drops the connection at once, failing any command still in flight (a client's last
    // session update, say) with an unhandled "Connection is closed": let those finish first (≤ 1 s).
    close: async () => {
      for (const deadline = Date.now() + 1000; (conn.commandQueue?.length ?? 0) > 0 && Date.now() < deadline; ) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await persistence.destroy().catch((err: Error) => log.warn({ err: err.message }, 'closing redis persistence'));
    },
  };
}

/**
 * aedes-persistence-redis 12 returns async generators where Aedes 1.2 pipes Node
 * streams (retained messages on SUBSCRIBE, the offline queue): adapt those methods.
 * Methods are bound to the instance because it keeps its state in #private fields.
 */
const STREAM_METHODS = new Set(['createRetainedStream', 'createRetainedStreamCombi', 'outgoingStream', 'streamWill', 'getClientList']);
function streamsAsReadables<T extends object>(persistence: T): T {
  return new Proxy(persistence, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      const bound = (value as (...args: unknown[]) => unknown).bind(target);
      if (typeof prop !== 'string' || !STREAM_METHODS.has(prop)) return bound;
      return (...args: unknown[]) => {
        const result = bound(...args);
        if (result && typeof (result as { pipe?: unknown }).pipe === 'function') return result;
        return Readable.from(result as AsyncIterable<unknown>);
      };
    },
  });
}

interface RedisConnection {
  status: string;
  /** ioredis: commands sent and not yet answered. */
  commandQueue?: { length: number };
  connect(): Promise<void>;
  quit(): Promise<unknown>;
  disconnect(): void;
  duplicate(): RedisConnection;
  on(event: 'error', listener: (err: Error) => void): void;
}

function redactUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]);
}
