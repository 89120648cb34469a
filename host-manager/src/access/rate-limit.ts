/**
 * Token buckets keyed by a source (a device, an address): `perMinute` sustained, `burst` at
 * once. The table of keys is bounded too (the key heard from longest ago goes first), so a
 * source that invents keys cannot grow it.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    readonly perMinute: number,
    readonly burst: number = perMinute,
    readonly maxKeys = 10_000,
  ) {}

  /** Takes one token for `key`; false when the key is over its rate (nothing is taken then). */
  take(key: string, now = Date.now()): boolean {
    const b = this.#refilled(key, now);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Milliseconds until `key` has a token again (0 when it has one now). */
  retryAfterMs(key: string, now = Date.now()): number {
    const b = this.#refilled(key, now);
    return b.tokens >= 1 ? 0 : Math.ceil(((1 - b.tokens) * 60_000) / this.perMinute);
  }

  forget(key: string): void {
    this.#buckets.delete(key);
  }

  #refilled(key: string, now: number): { tokens: number; at: number } {
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size >= this.maxKeys) this.#buckets.delete(this.#buckets.keys().next().value!);
      b = { tokens: this.burst, at: now };
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) * this.perMinute) / 60_000);
      b.at = now;
      this.#buckets.delete(key); // re-inserted below: the map's order is "heard from longest ago" first
    }
    this.#buckets.set(key, b);
    return b;
  }
}
