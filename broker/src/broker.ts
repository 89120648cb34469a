/**
 * The embedded broker: Aedes behind our own listeners, with every connection
 * wrapped by a PacketGuard, every CONNECT authenticated against a CredentialStore,
 * and every PUBLISH and SUBSCRIBE decided by the protocol's access rules.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Aedes, AedesOptions } from 'aedes';
import { pino, type Logger } from 'pino';
import { mayRetain, type AccessOptions } from '@edgefleet/protocol';
import { BrokerConfigError, validateLimits } from './config.js';
import type { CredentialStore } from './credentials.js';
import { createGatekeeper } from './gatekeeper.js';
import { DEFAULT_LIMITS, MAX_CLIENT_ID_BYTES, PacketGuard, guardStream, type GuardLimits, type Violation } from './guard.js';
import { startListeners, type Accept, type Listeners } from './listeners.js';
import { createPersistence, type PersistenceOption, type PersistenceSetup } from './persistence.js';

export { BrokerConfigError };

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
  /** The original plain-text channel (e.g. 'hello'): operators publish, devices subscribe; never retained. */
  legacyTopic?: string;
  persistence?: PersistenceOption;
  logger?: Logger;
}

export interface RunningBroker {
  aedes: Aedes;
  ports: { tcp?: number; tls?: number; ws?: number };
  /** mqtt://127.0.0.1:<tcp> (or the TCP listener's host when it is not a wildcard address). */
  url: string;
  close(): Promise<void>;
}

function defaultLogger(): Logger {
  return pino({ name: 'broker' }, pino.destination(2));
}

function limitsOf(options: BrokerOptions): GuardLimits {
  const limits: GuardLimits = {
    maxPacketSize: options.maxPacketSize ?? DEFAULT_LIMITS.maxPacketSize,
    maxTopicLength: options.maxTopicLength ?? DEFAULT_LIMITS.maxTopicLength,
    maxTopicLevels: options.maxTopicLevels ?? DEFAULT_LIMITS.maxTopicLevels,
  };
  validateLimits(limits);
  return limits;
}

export async function createBroker(options: BrokerOptions): Promise<RunningBroker> {
  const log = (options.logger ?? defaultLogger()).child({ component: 'broker' });
  const limits = limitsOf(options);
  const access: AccessOptions = { legacyTopic: options.legacyTopic };
  const allowAnonymous = options.allowAnonymous === true;
  if (allowAnonymous) {
    log.warn(
      'ANONYMOUS CLIENTS ALLOWED: any client without a user name connects with operator rights. ' +
        'Development only; never expose this broker beyond localhost.',
    );
  }
  const gatekeeper = createGatekeeper({ store: options.credentials, allowAnonymous, access, log });
  const persistence = await createPersistence(options.persistence ?? { kind: 'memory' }, log);
  const { Aedes } = await import('aedes');
  const aedesOptions: AedesOptions = {
    ...persistence.aedesOptions,
    ...gatekeeper.hooks,
    maxClientsIdLength: MAX_CLIENT_ID_BYTES,
    // a socket that has not sent CONNECT after 10 s is closed (Aedes' default is 30 s)
    connectTimeout: 10_000,
    maxTopicLevels: Math.min(limits.maxTopicLevels, 100),
  };
  const aedes = await Aedes.createBroker(aedesOptions);
  gatekeeper.attach(aedes);
  completeAsynchronously(aedes);
  aedes.on('clientError', (client, err) => log.debug({ clientId: client.id, err: err.message }, 'client error'));
  aedes.on('connectionError', (_client, err) => log.debug({ err: err.message }, 'connection error'));

  const connections = new Set<Duplex>();
  let listeners: Listeners;
  try {
    await sweepRetained(aedes, access, log);
    listeners = await startListeners(
      { tcp: options.tcp === undefined ? { host: '0.0.0.0', port: 1883 } : options.tcp, tls: options.tls, ws: options.ws, maxPacketSize: limits.maxPacketSize },
      guardedAccept(aedes, limits, connections, log),
      log,
    );
  } catch (err) {
    await closeAedes(aedes, persistence);
    throw err;
  }
  log.info({ ports: listeners.ports, persistence: options.persistence?.kind ?? 'memory', limits }, 'broker listening');

  let closing: Promise<void> | undefined;
  return {
    aedes,
    ports: listeners.ports,
    url: listeners.url,
    close() {
      closing ??= (async () => {
        const closed = listeners.close();
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

/** Every connection gets its own PacketGuard in front of Aedes. */
function guardedAccept(aedes: Aedes, limits: GuardLimits, connections: Set<Duplex>, log: Logger): Accept {
  return (stream: Duplex, remote: string, req?: IncomingMessage) => {
    connections.add(stream);
    stream.once('close', () => connections.delete(stream));
    stream.on('error', () => {
      /* resets and EPIPEs end the connection; Aedes sees them too (clientError) and closes the client */
    });
    const guard = new PacketGuard(limits);
    const onViolation = (v: Violation) => {
      log.warn({ remote, clientId: guard.clientId, username: guard.username, packet: v.packetType, reason: v.reason }, v.connack === undefined ? 'closing connection: invalid packet' : 'refusing connection');
    };
    aedes.handle(guardStream(stream, guard, onViolation), req);
  };
}

/**
 * Removes retained messages the rules no longer allow (mayRetain), which a shared Redis may
 * still hold from an older broker: a retained `exit` on the legacy topic would stop every
 * agent that subscribes, on every restart.
 */
async function sweepRetained(aedes: Aedes, access: AccessOptions, log: Logger): Promise<void> {
  const store = (aedes as unknown as { persistence: unknown }).persistence as {
    createRetainedStream(pattern: string): AsyncIterable<{ topic: string }>;
    storeRetained(packet: object): Promise<void>;
  };
  const stale: string[] = [];
  for await (const packet of store.createRetainedStream('#')) if (!mayRetain(packet.topic, access)) stale.push(packet.topic);
  for (const topic of stale) {
    // a zero-length retained payload deletes the retained message [MQTT-3.3.1-10]
    await store.storeRetained({ cmd: 'publish', topic, payload: Buffer.alloc(0), qos: 0, retain: true });
    log.warn({ topic }, 'removed a retained message that only presence may have');
  }
}

/**
 * Aedes routes every message through mqemitter, which holds at most `concurrency` (100)
 * messages in flight and queues the rest; a message completes when all its subscribers took
 * it. When a queued message has none that waits (nobody subscribes to it, or only in-process
 * listeners), the next one starts inside the completion of the one before, so a long queue
 * drains as one recursion and overflows the stack ("Maximum call stack size exceeded",
 * mqemitter#204). A queue builds whenever subscribers' sockets are full (a frozen device, a
 * loaded controller), and drains at once when they close: the broker crashed that way on
 * SIGTERM with thousands of devices connected. One listener on every topic that finishes on
 * the next tick makes every completion asynchronous; process.nextTick drains the queue in a
 * loop, without a stack per message and without waiting for the event loop.
 */
function completeAsynchronously(aedes: Aedes): void {
  aedes.subscribe('#', (_packet, done) => process.nextTick(done), () => undefined);
}

async function closeAedes(aedes: Aedes, persistence: PersistenceSetup): Promise<void> {
  await new Promise<void>((resolve) => aedes.close(() => resolve()));
  await persistence.close();
}
