/**
 * What a CONNECT may cost before it is known to be genuine. Every token check is one scrypt
 * run (~20-40 ms on libuv's thread pool, which file I/O shares), and anyone who can reach
 * the port can ask for one. So:
 *
 * - at most `maxConcurrent` checks run at once, at most `maxWaiting` wait; beyond that a
 *   CONNECT gets CONNACK 3 (server unavailable) at once and the client retries later;
 * - an address (an IPv4 address, an IPv6 /64) that failed `freeFailures` checks within
 *   `failureWindowMs` gets CONNACK 5 at once, without a check, for a backoff that doubles with
 *   every further failure (`backoffMs` up to `maxBackoffMs`);
 * - a token that passed is remembered for `cacheTtlMs` (0: not at all), so the next CONNECT with it (a
 *   device reconnecting, a fleet coming back after a network blip) costs no scrypt and is
 *   admitted even while its address is limited.
 *
 * Why the cache is safe: it holds only positive results, keyed by an HMAC of the presented
 * token under a key that never leaves this process (so it cannot be matched against guesses
 * from outside), together with the credential's stored hash, which the lookup compares with
 * the store's current one: a credential that is removed or gets a new token misses at once,
 * with no invalidation to forget. A wrong token never hits and always pays the full check;
 * a hit is faster than a check, which tells a client that already has the right token
 * nothing it did not know. Entries expire, and there are at most `cacheSize`.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';

export interface AdmissionLimits {
  maxConcurrent: number;
  maxWaiting: number;
  freeFailures: number;
  failureWindowMs: number;
  backoffMs: number;
  maxBackoffMs: number;
  cacheTtlMs: number;
  cacheSize: number;
}

/**
 * Two checks at once leave half of libuv's default four threads to file I/O; 10 failures a
 * minute per address before backing off (a device with a stale token retries far less often);
 * verified tokens remembered for 10 minutes.
 */
export const DEFAULT_ADMISSION_LIMITS: AdmissionLimits = {
  maxConcurrent: 2,
  maxWaiting: 1000,
  freeFailures: 10,
  failureWindowMs: 60_000,
  backoffMs: 1_000,
  maxBackoffMs: 60_000,
  cacheTtlMs: 10 * 60_000,
  cacheSize: 100_000,
};

export interface AdmissionStats {
  /** Token checks run (scrypt). */
  tokenChecks: number;
  /** CONNECTs admitted from the cache of verified tokens, without a check. */
  tokenCacheHits: number;
  /** CONNECTs refused at once because their address failed too often (CONNACK 5). */
  refusedBackoff: number;
  /** CONNECTs refused at once because too many checks were waiting (CONNACK 3). */
  refusedBusy: number;
}

export type AdmissionOutcome = 'ok' | 'wrong' | { refused: 'backoff'; retryAfterMs: number } | { refused: 'busy' };

interface AddressRecord {
  failures: number;
  blockedUntil: number;
}

/** The part of an address that one party controls: the address itself for IPv4, its /64 for IPv6. */
export function addressKey(address: string | undefined): string {
  if (!address) return 'unknown';
  const v4 = /^(?:::ffff:)?(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (v4) return v4[1]!;
  const groups = expandIpv6(address);
  return groups ? `${groups.slice(0, 4).join(':')}::/64` : address;
}

function expandIpv6(address: string): string[] | undefined {
  const [head, tail, extra] = address.split('%')[0]!.split('::');
  if (extra !== undefined) return undefined;
  const left = head ? head.split(':') : [];
  const right = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const missing = 8 - left.length - right.length;
  if (missing < 0 || (tail === undefined && missing !== 0)) return undefined;
  return [...left, ...Array<string>(missing).fill('0'), ...right].map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''));
}

export class Admission {
  readonly stats: AdmissionStats = { tokenChecks: 0, tokenCacheHits: 0, refusedBackoff: 0, refusedBusy: 0 };
  private readonly cacheKey = randomBytes(32);
  private readonly verified: LRUCache<string, string>;
  private readonly addresses: LRUCache<string, AddressRecord>;
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  /** Set from the first busy refusal until the waiting checks have all run, so a flood is reported once. */
  private busy = false;

  /** `events` hear when an address starts a backoff (not each refusal), and when checks first overflow. */
  constructor(
    private readonly limits: AdmissionLimits,
    private readonly events: { limited?(address: string, failures: number, backoffMs: number): void; busy?(waiting: number): void } = {},
  ) {
    this.verified = new LRUCache({ max: limits.cacheSize, ttl: limits.cacheTtlMs });
    // a bounded table: an attacker with many addresses pushes out old records, never memory up
    this.addresses = new LRUCache({ max: 100_000, ttl: Math.max(limits.failureWindowMs, limits.maxBackoffMs) });
  }

  /**
   * Checks `token` against `secretHash` (the credential's, or a decoy for an unknown user, which
   * is never cached) for a CONNECT from `address`; `check` runs the real verification.
   */
  async admit(args: { address: string | undefined; username: string; token: Buffer; secretHash: string; known: boolean; check: () => Promise<boolean> }): Promise<AdmissionOutcome> {
    const key = args.known && this.limits.cacheTtlMs > 0 ? this.keyOf(args.username, args.token) : undefined;
    if (key !== undefined && this.verified.get(key) === args.secretHash) {
      this.stats.tokenCacheHits++;
      return 'ok';
    }
    const where = addressKey(args.address);
    const record = this.addresses.get(where);
    const now = Date.now();
    if (record && record.blockedUntil > now) {
      this.stats.refusedBackoff++;
      return { refused: 'backoff', retryAfterMs: record.blockedUntil - now };
    }
    if (this.running >= this.limits.maxConcurrent && this.waiting.length >= this.limits.maxWaiting) {
      this.stats.refusedBusy++;
      if (!this.busy) this.events.busy?.(this.waiting.length);
      this.busy = true;
      return { refused: 'busy' };
    }
    const ok = await this.withSlot(args.check);
    if (ok) {
      if (key !== undefined) this.verified.set(key, args.secretHash);
      return 'ok';
    }
    this.failed(where);
    return 'wrong';
  }

  private keyOf(username: string, token: Buffer): string {
    return createHmac('sha256', this.cacheKey).update(username).update('\0').update(token).digest('base64');
  }

  private failed(where: string): void {
    const record = this.addresses.get(where) ?? { failures: 0, blockedUntil: 0 };
    record.failures++;
    const over = record.failures - this.limits.freeFailures;
    if (over > 0) {
      const backoff = Math.min(this.limits.maxBackoffMs, this.limits.backoffMs * 2 ** Math.min(over - 1, 30));
      record.blockedUntil = Date.now() + backoff;
      this.events.limited?.(where, record.failures, backoff);
    }
    // the window restarts with each failure: a record lives while failures keep coming
    this.addresses.set(where, record, { ttl: Math.max(this.limits.failureWindowMs, record.blockedUntil - Date.now()) });
  }

  private async withSlot<T>(task: () => Promise<T>): Promise<T> {
    // a finished check hands its slot straight to the next waiter, so `running` never exceeds the cap
    if (this.running >= this.limits.maxConcurrent) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    this.stats.tokenChecks++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
      if (this.waiting.length === 0) this.busy = false;
    }
  }
}
