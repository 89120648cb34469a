/**
 * The embedded broker: Aedes behind our own listeners, with every connection
 * wrapped by a PacketGuard, every CONNECT authenticated against a CredentialStore,
 * and every PUBLISH and SUBSCRIBE decided by the protocol's access rules.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Aedes, AedesOptions, Client } from 'aedes';
import { pino, type Logger } from 'pino';
import { mayRetain, type AccessOptions } from '@edgefleet/protocol';
import { BrokerConfigError, validateAdmission, validateLimits, validateOutbound } from './config.js';
import type { CredentialStore } from './credentials.js';
import { Admission, DEFAULT_ADMISSION_LIMITS, type AdmissionLimits, type AdmissionStats } from './admission.js';
import { createGatekeeper } from './gatekeeper.js';
import { DEFAULT_LIMITS, MAX_CLIENT_ID_BYTES, PacketGuard, guardStream, type GuardLimits, type Violation } from './guard.js';
import { startListeners, type Accept, type Listeners } from './listeners.js';
import { DEFAULT_OUTBOUND_LIMITS, StallWatch, watchOutbound, type OutboundLimits, type OutboundOptions, type OutboundStats, type Transport } from './outbound.js';
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
  /**
   * Bytes queued for one connection (written, not yet taken by the peer) from which its QoS 0
   * deliveries are dropped; twice this with QoS 1 still coming closes it. Default 64 MiB.
   */
  maxQueuedBytes?: number;
  /** A delivery waits at most this long for a subscriber that takes no byte; then nothing waits for it until it catches up. Default 2 s. */
  stallMs?: number;
  /** A stalled connection that takes no byte for this long is closed. Default 30 s. */
  stallTimeoutMs?: number;
  /**
   * Redis: how often this instance tells the others it is alive. An instance not heard from for
   * 3 heartbeats is dead; every 4 heartbeats the others publish the wills of its clients that
   * have not connected again. Default 10 s (Aedes' own default is 60 s).
   */
  heartbeatMs?: number;
  /** What a CONNECT's token check may cost (concurrency, per-address backoff, cache of verified tokens); see admission.ts. */
  admission?: Partial<AdmissionLimits>;
  persistence?: PersistenceOption;
  logger?: Logger;
}

/** Counters since the broker started. */
export interface BrokerStats extends OutboundStats, AdmissionStats {}

export interface RunningBroker {
  aedes: Aedes;
  ports: { tcp?: number; tls?: number; ws?: number };
  /** mqtt://127.0.0.1:<tcp> (or the TCP listener's host when it is not a wildcard address). */
  url: string;
  stats(): BrokerStats;
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

function outboundOf(options: BrokerOptions): OutboundLimits {
  const limits: OutboundLimits = {
    maxQueuedBytes: options.maxQueuedBytes ?? DEFAULT_OUTBOUND_LIMITS.maxQueuedBytes,
    stallMs: options.stallMs ?? DEFAULT_OUTBOUND_LIMITS.stallMs,
    stallTimeoutMs: options.stallTimeoutMs ?? DEFAULT_OUTBOUND_LIMITS.stallTimeoutMs,
  };
  validateOutbound(limits);
  return limits;
}

function heartbeatOf(options: BrokerOptions): number {
  const ms = options.heartbeatMs ?? 10_000;
  if (!Number.isInteger(ms) || ms < 100 || ms > 3_600_000) throw new BrokerConfigError(`heartbeatMs must be an integer from 100 to 3600000, got ${ms}`);
  return ms;
}

export async function createBroker(options: BrokerOptions): Promise<RunningBroker> {
  const log = (options.logger ?? defaultLogger()).child({ component: 'broker' });
  const limits = limitsOf(options);
  const outbound = outboundOf(options);
  const stats: OutboundStats = { droppedQos0: 0, stalled: 0, closedBehind: 0 };
  const stallWatch = new StallWatch(Math.max(10, Math.floor(outbound.stallMs / 4)));
  const access: AccessOptions = { legacyTopic: options.legacyTopic };
  const allowAnonymous = options.allowAnonymous === true;
  if (allowAnonymous) {
    log.warn(
      'ANONYMOUS CLIENTS ALLOWED: any client without a user name connects with operator rights. ' +
        'Development only; never expose this broker beyond localhost.',
    );
  }
  const admissionLimits: AdmissionLimits = { ...DEFAULT_ADMISSION_LIMITS, ...options.admission };
  validateAdmission(admissionLimits);
  const admission = new Admission(admissionLimits, {
    limited: (address, failures, backoffMs) =>
      log.warn({ address, failures, backoffMs }, 'too many failed logins from one address: refusing its CONNECTs without a token check for a while'),
    busy: (waiting) => log.warn({ waiting, limit: admissionLimits.maxWaiting }, 'too many token checks waiting: refusing new CONNECTs with "server unavailable" until they are done'),
  });
  const addresses = new WeakMap<Client, string | undefined>();
  const gatekeeper = createGatekeeper({ store: options.credentials, allowAnonymous, access, admission, addressOf: (c) => addresses.get(c), log });
  const brokerId = randomUUID();
  const persistence = await createPersistence(options.persistence ?? { kind: 'memory' }, log, brokerId);
  const { Aedes } = await import('aedes');
  const aedesOptions: AedesOptions = {
    id: brokerId,
    ...(options.persistence?.kind === 'redis' ? { heartbeatInterval: heartbeatOf(options) } : {}),
    ...persistence.aedesOptions,
    ...gatekeeper.hooks,
    ...persistence.cluster?.hooks(gatekeeper.hooks.authorizePublish),
    maxClientsIdLength: MAX_CLIENT_ID_BYTES,
    // a socket that has not sent CONNECT after 10 s is closed (Aedes' default is 30 s)
    connectTimeout: 10_000,
    maxTopicLevels: Math.min(limits.maxTopicLevels, 100),
    // slow and frozen subscribers are handled per connection (outbound.ts), by progress rather than
    // by "drained within 60 s", which a live device on a slow link fails with a window of 1 MiB chunks;
    // a day rather than 0 (no timeout) keeps Aedes' one coalesced drain listener per connection
    drainTimeout: 86_400_000,
  };
  const aedes = await Aedes.createBroker(aedesOptions);
  gatekeeper.attach(aedes);
  completeAsynchronously(aedes);
  persistence.cluster?.attach(aedes);
  // Aedes reports failures of its persistence here (a Redis command that failed, the will sweep); unheard, they would end the process
  (aedes as unknown as NodeJS.EventEmitter).on('error', (err: Error) => log.error({ err: err.message }, 'broker error'));
  aedes.on('clientError', (client, err) => log.debug({ clientId: client.id, err: err.message }, 'client error'));
  aedes.on('connectionError', (_client, err) => log.debug({ err: err.message }, 'connection error'));

  const connections = new Set<Duplex>();
  let listeners: Listeners;
  try {
    await sweepRetained(aedes, access, log);
    listeners = await startListeners(
      { tcp: options.tcp === undefined ? { host: '0.0.0.0', port: 1883 } : options.tcp, tls: options.tls, ws: options.ws, maxPacketSize: limits.maxPacketSize },
      guardedAccept(aedes, { limits, outbound: { limits: outbound, watch: stallWatch, pace: persistence.paced, stats, log }, addresses }, connections, log),
      log,
    );
  } catch (err) {
    await closeAedes(aedes, persistence);
    throw err;
  }
  log.info({ ports: listeners.ports, persistence: options.persistence?.kind ?? 'memory', limits, outbound }, 'broker listening');

  let closing: Promise<void> | undefined;
  return {
    aedes,
    ports: listeners.ports,
    url: listeners.url,
    stats: () => ({ ...stats, ...admission.stats }),
    close() {
      closing ??= (async () => {
        const closed = listeners.close();
        for (const c of connections) c.destroy();
        stallWatch.stop();
        await new Promise<void>((resolve) => aedes.close(() => resolve()));
        await closed;
        await persistence.close();
        log.info('broker closed');
      })();
      return closing;
    },
  };
}

interface ConnectionRules {
  limits: GuardLimits;
  outbound: OutboundOptions;
  /** Each client's peer address, for the gatekeeper. */
  addresses: WeakMap<Client, string | undefined>;
}

/** Every connection gets its own PacketGuard in front of Aedes, and its own bound on what is queued for it. */
function guardedAccept(aedes: Aedes, rules: ConnectionRules, connections: Set<Duplex>, log: Logger): Accept {
  const { limits } = rules;
  return (stream: Duplex, remote: string, req?: IncomingMessage, transport?: Socket) => {
    connections.add(stream);
    stream.once('close', () => connections.delete(stream));
    stream.on('error', () => {
      /* resets and EPIPEs end the connection; Aedes sees them too (clientError) and closes the client */
    });
    const guard = new PacketGuard(limits);
    const onViolation = (v: Violation) => {
      log.warn({ remote, clientId: guard.clientId, username: guard.username, packet: v.packetType, reason: v.reason }, v.connack === undefined ? 'closing connection: invalid packet' : 'refusing connection');
    };
    const client = aedes.handle(guardStream(stream, guard, onViolation), req as IncomingMessage);
    rules.addresses.set(client, transport?.remoteAddress);
    watchOutbound(client, stream, transport as Transport | undefined, rules.outbound);
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
