/**
 * Where the broker keeps sessions, retained messages and QoS 1/2 state: in memory, or in
 * Redis (aedes-persistence-redis for state and mqemitter-redis for routing), so that several
 * broker instances act as one.
 */
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import type { AedesOptions } from 'aedes';
import type { Logger } from 'pino';
import { indexedMemoryPersistence } from './retained.js';
import { ClusterMember, type ClusterRedis } from './cluster.js';

export type PersistenceOption = { kind: 'memory' } | { kind: 'redis'; url: string };

export interface PersistenceSetup {
  aedesOptions: Pick<AedesOptions, 'persistence' | 'mq'>;
  /**
   * Whether a publish waits for its local deliveries (Aedes' own emitter). mqemitter-redis
   * finishes a publish once Redis has it, and delivers what arrives from Redis without waiting.
   */
  paced: boolean;
  /** Redis only: what this instance does so that the cluster acts as one broker. */
  cluster?: ClusterMember;
  close(): Promise<void>;
}

/** `brokerId`: the Aedes id this instance will have (other instances see it in wills and in the connection record). */
export async function createPersistence(kind: PersistenceOption, log: Logger, brokerId: string): Promise<PersistenceSetup> {
  // in memory: Aedes' own store, with retained messages indexed by topic level (retained.ts)
  if (kind.kind === 'memory') return { aedesOptions: { persistence: indexedMemoryPersistence() }, paced: true, close: async () => {} };
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
  const cluster = new ClusterMember(conn, brokerId, log);
  const persistence = oneStorePerSubscribe(streamsAsReadables(new AsyncRedisPersistence({ conn })));
  const mq = mqemitterRedis({ subConn, pubConn });
  log.info({ redis: redactUrl(kind.url), brokerId }, 'persistence and message routing shared through Redis');
  return {
    aedesOptions: { persistence: cluster.freshWills(persistence), mq },
    paced: false,
    cluster,
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

/**
 * Aedes 1.2 stores the subscriptions of a SUBSCRIBE once per filter, each time with the whole
 * list, all at once; aedes-persistence-redis then waits for the echo of each broadcast under one
 * key (client, first filter), so only one of those waits ever ends and a persistent client that
 * subscribes to two filters in one packet never gets its SUBACK. One store per list instead.
 */
function oneStorePerSubscribe<T extends object>(persistence: T): T {
  const add = (persistence as unknown as { addSubscriptions(client: unknown, subs: object): Promise<unknown> }).addSubscriptions.bind(persistence);
  const inFlight = new WeakMap<object, Promise<unknown>>();
  const addSubscriptions = (client: unknown, subs: object) => {
    let stored = inFlight.get(subs);
    if (!stored) {
      stored = add(client, subs);
      inFlight.set(subs, stored);
    }
    return stored;
  };
  return new Proxy(persistence, { get: (target, prop) => (prop === 'addSubscriptions' ? addSubscriptions : Reflect.get(target, prop, target)) });
}

interface RedisConnection extends ClusterRedis {
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
