/**
 * The recent telemetry of each device as columns for the dashboard's charts: CPU, memory,
 * temperature and, per model, requests, errors and p95 latency. Bounded by construction
 * whatever a device sends: SLOTS samples per device in preallocated typed arrays (a ring,
 * oldest overwritten) and at most MODELS model columns (a new `model@version` takes the column
 * heard from longest ago), about 12 KiB per device. The rollout gates read their own history
 * (telemetry-history.ts); this one is only shown.
 */
import type { TelemetrySample } from '@edgefleet/protocol';

/** Samples kept per device: 30 minutes at the agent's default 10 s interval. */
export const VITALS_SLOTS = 180;
/** Model columns kept per device. */
export const VITALS_MODELS = 4;

/** A device's recent series, oldest first; `null` where a value was not reported. */
export interface VitalsSeries {
  at: number[];
  cpuPercent: number[];
  memoryPercent: number[];
  temperatureC: (number | null)[];
  /** Per `model@version`: counts per interval (not rates) and p95 in ms. */
  models: Record<string, { requests: (number | null)[]; errors: (number | null)[]; p95Ms: (number | null)[] }>;
}

class DeviceVitals {
  readonly at = new Float64Array(VITALS_SLOTS);
  /** cpu %, memory %, temperature °C per slot. */
  readonly vitals = new Float32Array(VITALS_SLOTS * 3);
  /** requests, errors, p95 per slot and model column (NaN: that column's model was not in the sample). */
  readonly perModel = new Float32Array(VITALS_SLOTS * VITALS_MODELS * 3).fill(Number.NaN);
  readonly keys: (string | undefined)[] = new Array<string | undefined>(VITALS_MODELS).fill(undefined);
  readonly lastSeen = new Float64Array(VITALS_MODELS);
  next = 0;
  size = 0;

  column(key: string, at: number): number {
    let col = this.keys.indexOf(key);
    if (col < 0) {
      col = this.keys.indexOf(undefined);
      if (col < 0) col = this.lastSeen.indexOf(Math.min(...this.lastSeen));
      this.keys[col] = key;
      for (let slot = 0; slot < VITALS_SLOTS; slot++) this.perModel.fill(Number.NaN, (slot * VITALS_MODELS + col) * 3, (slot * VITALS_MODELS + col) * 3 + 3);
    }
    this.lastSeen[col] = at;
    return col;
  }

  push(sample: TelemetrySample, at: number): void {
    const slot = this.next;
    this.at[slot] = at;
    this.vitals[slot * 3] = sample.cpuPercent;
    this.vitals[slot * 3 + 1] = sample.memoryTotalBytes > 0 ? (100 * sample.memoryUsedBytes) / sample.memoryTotalBytes : Number.NaN;
    this.vitals[slot * 3 + 2] = sample.temperatureC ?? Number.NaN;
    this.perModel.fill(Number.NaN, slot * VITALS_MODELS * 3, (slot + 1) * VITALS_MODELS * 3);
    // the busiest models first, so a sample with more models than columns keeps the ones that matter
    // (sorted only then: a device runs one or two models, and this runs for every sample of the fleet)
    let entries = Object.entries(sample.models);
    if (entries.length > VITALS_MODELS) entries = entries.sort((a, b) => b[1].requests - a[1].requests).slice(0, VITALS_MODELS);
    for (const [key, h] of entries) {
      const i = (slot * VITALS_MODELS + this.column(key, at)) * 3;
      this.perModel[i] = h.requests;
      this.perModel[i + 1] = h.errors;
      this.perModel[i + 2] = h.p95Ms ?? Number.NaN;
    }
    this.next = (slot + 1) % VITALS_SLOTS;
    this.size = Math.min(VITALS_SLOTS, this.size + 1);
  }

  series(from: number): VitalsSeries {
    const num = (v: number): number | null => (Number.isNaN(v) ? null : Math.round(v * 1000) / 1000);
    const out: VitalsSeries = { at: [], cpuPercent: [], memoryPercent: [], temperatureC: [], models: {} };
    const slots: number[] = [];
    for (let k = 0; k < this.size; k++) {
      const slot = (this.next - this.size + k + VITALS_SLOTS) % VITALS_SLOTS;
      if (this.at[slot]! >= from) slots.push(slot);
    }
    for (const slot of slots) {
      out.at.push(this.at[slot]!);
      out.cpuPercent.push(num(this.vitals[slot * 3]!) ?? 0);
      out.memoryPercent.push(num(this.vitals[slot * 3 + 1]!) ?? 0);
      out.temperatureC.push(num(this.vitals[slot * 3 + 2]!));
    }
    this.keys.forEach((key, col) => {
      if (key === undefined) return;
      const pick = (field: number): (number | null)[] => slots.map((slot) => num(this.perModel[(slot * VITALS_MODELS + col) * 3 + field]!));
      const series = { requests: pick(0), errors: pick(1), p95Ms: pick(2) };
      if (series.requests.some((v) => v !== null)) out.models[key] = series;
    });
    return out;
  }
}

export class VitalsHistory {
  readonly #byDevice = new Map<string, DeviceVitals>();

  push(device: string, sample: TelemetrySample, at = Date.now()): void {
    let d = this.#byDevice.get(device);
    if (!d) this.#byDevice.set(device, (d = new DeviceVitals()));
    d.push(sample, at);
  }

  /** The device's samples received at or after `from` (controller clock), as columns. */
  series(device: string, from = 0): VitalsSeries {
    return this.#byDevice.get(device)?.series(from) ?? { at: [], cpuPercent: [], memoryPercent: [], temperatureC: [], models: {} };
  }

  forget(device: string): void {
    this.#byDevice.delete(device);
  }
}
