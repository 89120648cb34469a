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

export type PersistenceOption = { kind: 'memory' } | { kind: 'redis'; url: string };

export interface PersistenceSetup {
  aedesOptions: Pick<AedesOptions, 'persistence' | 'mq'>;
  close(): Promise<void>;
}

export async function createPersistence(
  kind: PersistenceOption,
  log: Logger,
): Promise<PersistenceSetup> {
  // in memory: Aedes' own store, with retained messages indexed by topic level (retained.ts)
  if (kind.kind === 'memory') return { aedesOptions: { persistence: indexedMemoryPersistence() }, close: async () => {} };
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
