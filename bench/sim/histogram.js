/** Latencies in whole milliseconds, counted per millisecond up to 60 s (beyond: the last bucket). */
export class Histogram {
  constructor(maxMs = 60_000) {
    this.counts = new Uint32Array(maxMs + 1);
    this.n = 0;
  }
  record(ms) {
    const i = Math.max(0, Math.min(this.counts.length - 1, Math.round(ms)));
    this.counts[i]++;
    this.n++;
  }
  reset() {
    this.counts.fill(0);
    this.n = 0;
  }
  /** Sparse form for IPC: [[ms, count], ...]. */
  snapshot() {
    const out = [];
    for (let i = 0; i < this.counts.length; i++) if (this.counts[i]) out.push([i, this.counts[i]]);
    return out;
  }
}

/** p50/p99/max from a sparse snapshot (or several merged). */
export function percentiles(sparse) {
  const all = sparse.slice().sort((a, b) => a[0] - b[0]);
  const n = all.reduce((s, [, c]) => s + c, 0);
  const at = (q) => {
    let seen = 0;
    for (const [ms, c] of all) {
      seen += c;
      if (seen >= q * n) return ms;
    }
    return null;
  };
  return { n, p50: at(0.5), p99: at(0.99), max: all.length ? all[all.length - 1][0] : null };
}
