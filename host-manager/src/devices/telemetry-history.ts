/**
 * The last minutes of telemetry per device, in memory, for rollout gates. Times are the
 * controller's clock.
 *
 * Bounded by construction, whatever a device sends: per device at most MODELS_PER_DEVICE
 * series (`model@version`; a new one replaces one that has gone quiet), each a ring of
 * SLOTS samples in one preallocated buffer that is overwritten, never grown. A slot keeps what
 * the gates read (requests, errors, p95) in 20 bytes, so a series is 5 KiB and a device at most
 * 20 KiB (about 23 KiB with the objects around them, measured by test/bounds.test.ts). The
 * caller (presence.ts) only passes models the controller knows that device runs.
 */
import type { ModelHealth } from '@edgefleet/protocol';

/** Samples kept per series: 42 minutes at the agent's default 10 s interval. */
export const SLOTS = 256;
/** Series kept per device: the models it runs plus the version a rollout is switching to. */
export const MODELS_PER_DEVICE = 4;
/** Bytes of one slot: time (float64), requests and errors (uint32), p95 (float32). */
const SLOT_BYTES = 8 + 4 + 4 + 4;
/** Bytes of telemetry history one device can make the controller hold, at most (the buffers; a few hundred bytes of objects beside). */
export const HISTORY_BYTES_PER_DEVICE = MODELS_PER_DEVICE * SLOTS * SLOT_BYTES;

/** What a gate reads of one interval. */
export type IntervalHealth = Pick<ModelHealth, 'requests' | 'errors' | 'p95Ms'>;

const UINT32_MAX = 0xffff_ffff;

/** One `model@version` of one device: a ring of SLOTS samples, oldest overwritten. */
class Series {
  readonly at: Float64Array;
  readonly requests: Uint32Array;
  readonly errors: Uint32Array;
  readonly p95: Float32Array;
  next = 0;
  size = 0;
  lastAt = 0;

  constructor() {
    const buffer = new ArrayBuffer(SLOTS * SLOT_BYTES);
    this.at = new Float64Array(buffer, 0, SLOTS);
    this.requests = new Uint32Array(buffer, SLOTS * 8, SLOTS);
    this.errors = new Uint32Array(buffer, SLOTS * 12, SLOTS);
    this.p95 = new Float32Array(buffer, SLOTS * 16, SLOTS);
  }

  push(at: number, h: ModelHealth): void {
    const i = this.next;
    this.at[i] = at;
    this.requests[i] = Math.min(UINT32_MAX, h.requests);
    this.errors[i] = Math.min(UINT32_MAX, h.errors);
    this.p95[i] = h.p95Ms ?? Number.NaN;
    this.next = (i + 1) % SLOTS;
    this.size = Math.min(SLOTS, this.size + 1);
    this.lastAt = at;
  }

  /** Intervals received in [from, to), oldest first. */
  between(from: number, to: number): IntervalHealth[] {
    const out: IntervalHealth[] = [];
    for (let k = 0; k < this.size; k++) {
      const i = (this.next - this.size + k + SLOTS) % SLOTS;
      const at = this.at[i]!;
      if (at < from || at >= to) continue;
      const p95 = this.p95[i]!;
      out.push({ requests: this.requests[i]!, errors: this.errors[i]!, p95Ms: Number.isNaN(p95) ? null : p95 });
    }
    return out;
  }
}

export class TelemetryHistory {
  readonly #byDevice = new Map<string, Map<string, Series>>();
  /** Entries not kept because their device already had MODELS_PER_DEVICE series heard in the same sample. */
  dropped = 0;

  constructor(readonly keepMs = 30 * 60_000) {}

  /**
   * Records the models of one sample (already limited to those the device runs). A model new to the
   * device takes the place of a series that was not in this sample (e.g. the version a rollout switched
   * away from); when every series was, it is dropped, so a device cannot make the history churn.
   */
  push(device: string, models: Readonly<Record<string, ModelHealth>>, at = Date.now()): void {
    let series = this.#byDevice.get(device);
    for (const key of Object.keys(models)) {
      series ??= this.#byDevice.set(device, new Map()).get(device)!;
      let s = series.get(key);
      if (!s) {
        if (series.size >= MODELS_PER_DEVICE && !this.#replaceStale(series, at)) {
          this.dropped++;
          continue;
        }
        series.set(key, (s = new Series()));
      }
      s.push(at, models[key]!);
    }
  }

  /** Per-interval health of `model@version` on a device, received in [from, to) and within keepMs. */
  health(device: string, modelKey: string, from: number, to = Number.POSITIVE_INFINITY): IntervalHealth[] {
    const s = this.#byDevice.get(device)?.get(modelKey);
    return s ? s.between(Math.max(from, Date.now() - this.keepMs), to) : [];
  }

  forget(device: string): void {
    this.#byDevice.delete(device);
  }

  /** Removes the series heard from longest ago, if it was not heard at `at`; whether it did. */
  #replaceStale(series: Map<string, Series>, at: number): boolean {
    let oldest: string | undefined;
    let oldestAt = at;
    for (const [key, s] of series) {
      if (s.lastAt < oldestAt) (oldest = key), (oldestAt = s.lastAt);
    }
    if (oldest === undefined) return false;
    series.delete(oldest);
    return true;
  }
}
