/** Per-model inference counters and latency percentiles, drained once per telemetry interval. */
import type { ModelHealth } from '@edgefleet/protocol';

/** Latencies kept per interval; beyond this a uniform reservoir sample keeps percentiles honest in bounded memory. */
const RESERVOIR = 10_000;

interface Bucket {
  requests: number;
  errors: number;
  latencies: number[];
}

export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

export class HealthCounters {
  private buckets = new Map<string, Bucket>();

  record(key: string, latencyMs: number, ok: boolean): void {
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = { requests: 0, errors: 0, latencies: [] }));
    b.requests++;
    if (!ok) b.errors++;
    if (b.latencies.length < RESERVOIR) b.latencies.push(latencyMs);
    else {
      const slot = Math.floor(Math.random() * b.requests);
      if (slot < RESERVOIR) b.latencies[slot] = latencyMs;
    }
  }

  /** Counts since the previous call, keyed `name@version`; resets them. */
  drain(): Record<string, ModelHealth> {
    const out: Record<string, ModelHealth> = {};
    for (const [key, b] of this.buckets) {
      const sorted = b.latencies.sort((x, y) => x - y);
      const round = (v: number | null) => (v === null ? null : Math.round(v * 1000) / 1000);
      out[key] = {
        requests: b.requests,
        errors: b.errors,
        p50Ms: round(percentile(sorted, 50)),
        p95Ms: round(percentile(sorted, 95)),
        p99Ms: round(percentile(sorted, 99)),
      };
    }
    this.buckets = new Map();
    return out;
  }
}
