/**
 * Reconnect delays: exponential backoff with full jitter (AWS architecture
 * blog, "Exponential Backoff and Jitter"). After a broker restart a whole
 * fleet spreads its reconnects over the window instead of arriving at once,
 * which MQTT.js's fixed one-second retry would do.
 */
export interface BackoffOptions {
  minMs: number;
  maxMs: number;
}

/** The ceiling for attempt n (0-based): min(max, min * 2^n). */
export function backoffCeiling(attempt: number, { minMs, maxMs }: BackoffOptions): number {
  return Math.min(maxMs, minMs * 2 ** Math.min(attempt, 52));
}

/** Full jitter: uniform in [0, ceiling]; `random` in [0, 1) is injectable for tests. */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCeiling(attempt, options));
}

/** Stateful helper: next() gives the next delay, reset() after a successful connection. */
export class Backoff {
  private attempt = 0;
  constructor(
    private readonly options: BackoffOptions,
    private readonly random: () => number = Math.random,
  ) {}
  next(): number {
    return backoffDelay(this.attempt++, this.options, this.random);
  }
  reset(): void {
    this.attempt = 0;
  }
  get attempts(): number {
    return this.attempt;
  }
}
