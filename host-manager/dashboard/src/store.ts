/**
 * What the page knows of the fleet: the snapshot and every feed event applied to it, the
 * rollouts' details it fetched, and recent events per device. Views read it and subscribe to
 * changes (coalesced to one render per frame).
 */
import { call } from './api.js';
import { short } from './format.js';
import type { DeviceView, FeedEvent, RolloutSummary, RolloutView } from './types.js';

type Sample = NonNullable<DeviceView['telemetry']>;

export interface DeviceEvent {
  ts: number;
  kind: 'ok' | 'bad' | 'info';
  text: string;
}

/** Inference health of a device's latest sample: rate needs the sample before it (its interval). */
export interface DeviceStats {
  requests: number;
  ratePerS: number | null;
  errorRate: number | null;
  p95Ms: number | null;
}

const EVENTS_PER_DEVICE = 50;

export class Store {
  readonly devices = new Map<string, DeviceView>();
  readonly rollouts = new Map<string, RolloutSummary>();
  readonly details = new Map<string, RolloutView>();
  readonly events = new Map<string, DeviceEvent[]>();
  /** When each device's latest sample arrived here (the page's clock). */
  readonly sampleSeenAt = new Map<string, number>();
  /** Counts model additions and removals seen on the feed. */
  registryChanges = 0;
  readonly #previous = new Map<string, Sample>();
  readonly #listeners = new Set<() => void>();
  #scheduled = false;
  #telemetryListeners = new Set<(device: string, sample: Sample) => void>();

  onChange(fn: () => void): () => void {
    this.#listeners.add(fn);
    return () => void this.#listeners.delete(fn);
  }

  /** Called for every telemetry sample as it arrives (charts append without a re-render). */
  onTelemetry(fn: (device: string, sample: Sample) => void): () => void {
    this.#telemetryListeners.add(fn);
    return () => void this.#telemetryListeners.delete(fn);
  }

  changed(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    requestAnimationFrame(() => {
      this.#scheduled = false;
      for (const fn of [...this.#listeners]) fn();
    });
  }

  clear(): void {
    this.devices.clear();
    this.rollouts.clear();
    this.details.clear();
    this.events.clear();
    this.#previous.clear();
    this.changed();
  }

  apply(e: FeedEvent): void {
    switch (e.type) {
      case 'snapshot':
        this.clear();
        for (const d of e.devices) this.devices.set(d.id, d);
        for (const r of e.rollouts) this.rollouts.set(r.id, r);
        void this.refreshDetails([...this.rollouts.values()].slice(0, 10));
        break;
      case 'device': {
        const was = this.devices.get(e.device);
        this.devices.set(e.device, { ...was, ...e.record });
        if (was && was.online !== e.online) this.#event(e.device, e.online ? 'ok' : 'bad', e.online ? 'online' : `offline${e.record.offlineReason ? ` (reported by device ${e.device}: ${e.record.offlineReason})` : ''}`);
        break;
      }
      case 'telemetry': {
        const d = this.devices.get(e.device);
        if (!d) return;
        if (d.telemetry) this.#previous.set(e.device, d.telemetry);
        d.telemetry = e.sample;
        d.lastSeen = new Date().toISOString();
        this.sampleSeenAt.set(e.device, Date.now());
        for (const fn of this.#telemetryListeners) fn(e.device, e.sample);
        break;
      }
      case 'event':
        this.#onDeviceEvent(e.device, e.event, e.text);
        break;
      case 'rollout':
        this.rollouts.set(e.id, e.summary);
        if (this.details.has(e.id) || e.summary.devices.failed > 0 || e.summary.devices.rolledBack > 0) void this.refreshDetails([e.summary]);
        break;
      case 'audit':
        // a model added or removed: views that list the registry read it again
        if (e.entry.actor.startsWith('operator:') && /^model\.(add|remove)$/.test(e.entry.action)) this.registryChanges += 1;
        else return;
        break;
    }
    this.changed();
  }

  /** Fetches rollouts' full records (per-device states, gates, transfer progress). */
  async refreshDetails(list: RolloutSummary[]): Promise<void> {
    await Promise.all(
      list.map(async (r) => {
        try {
          this.details.set(r.id, await call<RolloutView>('GET', `/api/rollouts/${encodeURIComponent(r.id)}`));
        } catch {
          return; // shown again from the summary; the next event fetches it once more
        }
      }),
    );
    this.changed();
  }

  stats(id: string): DeviceStats {
    const s = this.devices.get(id)?.telemetry;
    if (!s) return { requests: 0, ratePerS: null, errorRate: null, p95Ms: null };
    let requests = 0;
    let errors = 0;
    let weighted = 0;
    for (const h of Object.values(s.models)) {
      requests += h.requests;
      errors += h.errors;
      if (h.p95Ms !== null) weighted += h.p95Ms * h.requests;
    }
    const prev = this.#previous.get(id);
    const interval = prev ? (s.ts - prev.ts) / 1000 : 0;
    return { requests, ratePerS: interval > 0 ? requests / interval : null, errorRate: requests > 0 ? errors / requests : null, p95Ms: requests > 0 ? weighted / requests : null };
  }

  /** The latest rollout state of a device that needs attention (failed, rolled back), from the fetched details. */
  attention(id: string): { state: string; rollout: string; model: string } | undefined {
    for (const r of [...this.details.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1))) {
      const d = Object.hasOwn(r.devices, id) ? r.devices[id] : undefined;
      if (d) return d.state === 'failed' || d.state === 'rolled-back' ? { state: d.state, rollout: r.id, model: `${r.model}@${r.version}` } : undefined;
    }
    return undefined;
  }

  #event(device: string, kind: DeviceEvent['kind'], text: string, ts = Date.now()): void {
    const list = this.events.get(device) ?? [];
    list.unshift({ ts, kind, text });
    if (list.length > EVENTS_PER_DEVICE) list.length = EVENTS_PER_DEVICE;
    this.events.set(device, list);
  }

  /**
   * A device's own event, shown as its word: the controller's line for it (marked "reported by device
   * <id>:", printable, cut), or one marked the same way here for a controller that sends none.
   */
  #onDeviceEvent(device: string, e: { event: string; ts: number; data: Record<string, unknown> }, text?: string): void {
    const d = e.data;
    const kind: DeviceEvent['kind'] = e.event.endsWith('.failed') || (e.event === 'log' && (d['level'] === 'error' || d['level'] === 'warn')) ? 'bad' : e.event === 'log' ? 'info' : 'ok';
    if (e.event === 'transfer.progress') return;
    if (text !== undefined) return this.#event(device, kind, text, e.ts);
    const by = `reported by device ${device}:`;
    if (e.event === 'model.activated') this.#event(device, kind, `${by} activated ${String(d['model'])}@${String(d['version'])}${d['previous'] ? ` (was ${String(d['previous'])})` : ''}`, e.ts);
    else if (e.event === 'model.failed') {
      const error = d['error'] as { code?: string; message?: string } | undefined;
      this.#event(device, kind, `${by} ${String(d['model'])}@${String(d['version'])} failed: ${error?.code ?? ''} ${short(String(error?.message ?? ''), 240)}`, e.ts);
    } else if (e.event === 'log') this.#event(device, kind, `${by} ${String(d['level'])}: ${short(String(d['message']), 240)}`, e.ts);
    else if (e.event.startsWith('container.')) this.#event(device, kind, `${by} ${e.event} ${String(d['app'] ?? '')}@${String(d['version'] ?? '')}`, e.ts);
  }
}
