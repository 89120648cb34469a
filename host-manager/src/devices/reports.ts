/**
 * What devices say about themselves (activation results and failures of models and containers, log
 * lines), kept apart from
 * the operator audit: a device's word is not a fact the controller saw, and a device must not be
 * able to push operator actions out of the audit by talking a lot.
 *
 * Bounded per device: a ring of REPORT_LIMITS.perDevice entries (oldest overwritten), texts cut
 * to REPORT_LIMITS.textChars, and a rate of REPORT_LIMITS.perMinute events (bursts up to that
 * many); events over the rate are dropped (not kept, not shown on the live feed) and counted.
 * Kept in memory only: after a restart the controller's own records (the audit's model.deliver,
 * model.rollback, rollout.* entries) are what remains. Every entry says who reported it, and its
 * text starts with "reported by device <id>:".
 */
import type { FleetEvent } from '@edgefleet/protocol';
import { RateLimiter } from '../access/rate-limit.js';
import { printableText } from '../text.js';

export const REPORT_LIMITS = { perDevice: 16, perMinute: 60, textChars: 240 } as const;

export interface DeviceReport {
  ts: string;
  /** `device:<id>`: what follows is that device's word. */
  reportedBy: string;
  event: Exclude<FleetEvent['event'], 'transfer.progress'>;
  /** One line for people: `reported by device <id>: …`. */
  text: string;
  /** The event's fields other than its free text (which is in `text`, once): model, version, previous, error code, log level. */
  data: Record<string, unknown>;
}

export interface DroppedCounts {
  /** Events over the device's rate. */
  events: number;
  /** Telemetry entries for models the controller does not know that device runs. */
  telemetryModels: number;
}

interface Ring {
  entries: (DeviceReport | undefined)[];
  next: number;
  dropped: DroppedCounts;
}

/** A device's text made safe to show and to keep (text.ts): printable, at most `max` characters. */
export function cut(text: string, max: number = REPORT_LIMITS.textChars): string {
  return printableText(text, max);
}

type ReportedEvent = Extract<FleetEvent, { event: DeviceReport['event'] }>;

/** The one-line text of a device's event, marked as the device's. */
function describeEvent(device: string, e: ReportedEvent): string {
  const by = `reported by device ${device}:`;
  switch (e.event) {
    case 'model.activated':
      return cut(`${by} ${e.event} ${e.data.model}@${e.data.version}${e.data.previous !== null ? ` (previous ${e.data.previous})` : ''}`);
    case 'model.failed':
      return cut(`${by} ${e.event} ${e.data.model}@${e.data.version}: ${e.data.error.code}: ${e.data.error.message}`);
    case 'container.activated':
      return cut(`${by} ${e.event} ${e.data.app}@${e.data.version} (${e.data.strategy}${e.data.previous !== null ? `, previous ${e.data.previous}` : ''})`);
    case 'container.failed':
      return cut(`${by} ${e.event} ${e.data.app}@${e.data.version}: ${e.data.error.code}: ${e.data.error.message}${e.data.restored !== null ? ` (running ${e.data.restored} again)` : ''}`);
    case 'log':
      return cut(`${by} log ${e.data.level}: ${e.data.message}`);
  }
}

/** The structured fields of an event, without the free text already in the report's `text`. */
function fieldsOf(e: ReportedEvent): Record<string, unknown> {
  switch (e.event) {
    case 'model.activated':
      return { model: e.data.model, version: e.data.version, previous: e.data.previous };
    case 'model.failed':
      return { model: e.data.model, version: e.data.version, error: { code: e.data.error.code } };
    case 'container.activated':
      return { app: e.data.app, version: e.data.version, previous: e.data.previous, strategy: e.data.strategy };
    case 'container.failed':
      return { app: e.data.app, version: e.data.version, restored: e.data.restored, error: { code: e.data.error.code } };
    case 'log':
      return { level: cut(e.data.level, 16) };
  }
}

export class DeviceReports {
  readonly #rings = new Map<string, Ring>();
  readonly #rate = new RateLimiter(REPORT_LIMITS.perMinute, REPORT_LIMITS.perMinute, Number.MAX_SAFE_INTEGER); // one bucket per device of the fleet

  /** Whether one more event of this device is within its rate; counts it as dropped when not. */
  admit(device: string, now = Date.now()): boolean {
    if (this.#rate.take(device, now)) return true;
    this.#ring(device).dropped.events++;
    return false;
  }

  /** Keeps an admitted event that is worth keeping (not transfer progress); returns the entry. */
  record(device: string, e: FleetEvent, now = Date.now()): DeviceReport | undefined {
    if (e.event === 'transfer.progress') return undefined;
    const report: DeviceReport = { ts: new Date(now).toISOString(), reportedBy: `device:${device}`, event: e.event, text: describeEvent(device, e), data: fieldsOf(e) };
    const ring = this.#ring(device);
    ring.entries[ring.next] = report;
    ring.next = (ring.next + 1) % REPORT_LIMITS.perDevice;
    return report;
  }

  countDroppedModels(device: string, n: number): void {
    if (n > 0) this.#ring(device).dropped.telemetryModels += n;
  }

  /** One device's reports, oldest first, and what was dropped; or every device's newest `limit`, merged by time. */
  list(device?: string, limit = 100): { reports: DeviceReport[]; dropped: DroppedCounts } {
    const rings = device === undefined ? [...this.#rings.values()] : [this.#rings.get(device)].filter((r): r is Ring => r !== undefined);
    const reports = rings.flatMap(ordered).sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));
    const dropped = { events: 0, telemetryModels: 0 };
    for (const r of rings) (dropped.events += r.dropped.events), (dropped.telemetryModels += r.dropped.telemetryModels);
    return { reports: reports.slice(-Math.max(1, Math.min(limit, 5000))), dropped };
  }

  forget(device: string): void {
    this.#rings.delete(device);
    this.#rate.forget(device);
  }

  #ring(device: string): Ring {
    let ring = this.#rings.get(device);
    if (!ring) this.#rings.set(device, (ring = { entries: new Array<DeviceReport | undefined>(REPORT_LIMITS.perDevice), next: 0, dropped: { events: 0, telemetryModels: 0 } }));
    return ring;
  }
}

function ordered(ring: Ring): DeviceReport[] {
  const out: DeviceReport[] = [];
  for (let k = 0; k < REPORT_LIMITS.perDevice; k++) {
    const e = ring.entries[(ring.next + k) % REPORT_LIMITS.perDevice];
    if (e) out.push(e);
  }
  return out;
}
