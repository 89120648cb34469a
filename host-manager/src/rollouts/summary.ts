/** Short views of a rollout, for lists, the live feed and progress bars. */
import type { RolloutRecord, RolloutWave } from '../state/schema.js';
import { formatTarget } from './target.js';
import { inWindow, nextWindowOpen } from './window.js';

/** When a running rollout's current soak ends and when it is likely to finish (absolute times, so a reader counts down itself). */
export interface RolloutTiming {
  /** The wave in progress. */
  wave: number | null;
  soakUntil: string | null;
  /** Estimated end: remaining soaks plus, per wave still to deliver, the mean delivery time so far. */
  etaAt: string | null;
  /** No wave has been delivered yet (or a maintenance window may interrupt): the estimate leaves that time out. */
  etaLowerBound: boolean;
  /** Set while deliveries wait for the maintenance window to open. */
  windowOpensAt: string | null;
}

const NO_TIMING: RolloutTiming = { wave: null, soakUntil: null, etaAt: null, etaLowerBound: false, windowOpensAt: null };

function deliverySeconds(w: RolloutWave): number | undefined {
  if (!w.startedAt || !w.switchedAt) return undefined;
  return Math.max(0, (Date.parse(w.switchedAt) - Date.parse(w.startedAt)) / 1000);
}

/** Timing of a running rollout at `now` (pure). */
export function rolloutTiming(r: RolloutRecord, now: Date): RolloutTiming {
  if (r.status !== 'running') return NO_TIMING;
  const current = r.waves.find((w) => w.state !== 'passed' && w.state !== 'failed');
  if (!current) return NO_TIMING;
  const measured = r.waves.map(deliverySeconds).filter((s): s is number => s !== undefined);
  const perWave = measured.length ? measured.reduce((a, b) => a + b, 0) / measured.length : undefined;
  let lowerBound = perWave === undefined || r.policy.window !== undefined;
  let remaining = 0;
  let windowOpensAt: string | null = null;
  if (current.state === 'soaking') {
    remaining += current.soakUntil ? Math.max(0, (Date.parse(current.soakUntil) - now.getTime()) / 1000) : 0;
  } else {
    const elapsed = current.startedAt ? (now.getTime() - Date.parse(current.startedAt)) / 1000 : 0;
    remaining += Math.max(0, (perWave ?? 0) - elapsed) + r.policy.soakS;
    if (r.policy.window && !inWindow(r.policy.window, now)) {
      const opens = nextWindowOpen(r.policy.window, now);
      windowOpensAt = opens.toISOString();
      remaining += (opens.getTime() - now.getTime()) / 1000;
    }
  }
  // an empty wave (a dynamic target's last, before anyone joined) passes at once: it adds no time
  const later = r.waves.filter((w) => w.index > current.index && w.state === 'pending' && w.devices.length > 0).length;
  remaining += later * ((perWave ?? 0) + r.policy.soakS);
  if (later > 0 && perWave === undefined) lowerBound = true;
  return {
    wave: current.index,
    soakUntil: current.state === 'soaking' ? (current.soakUntil ?? null) : null,
    etaAt: new Date(now.getTime() + remaining * 1000).toISOString(),
    etaLowerBound: lowerBound,
    windowOpensAt,
  };
}

export interface RolloutSummary {
  id: string;
  kind: 'model' | 'image';
  model: string;
  version: number;
  target: string;
  status: RolloutRecord['status'];
  reason: string | null;
  createdAt: string;
  finishedAt: string | null;
  waves: { index: number; label: string; state: string; devices: number; soakUntil: string | null }[];
  devices: { total: number; pending: number; delivering: number; switched: number; failed: number; waiting: number; skipped: number; rolledBack: number };
  timing: RolloutTiming;
}

/** A short view of a rollout for lists, the live feed and progress bars. */
export function summarize(r: RolloutRecord): RolloutSummary {
  const devices = Object.values(r.devices);
  const count = (s: string): number => devices.filter((d) => d.state === s).length;
  return {
    id: r.id,
    kind: r.kind ?? 'model',
    model: r.model,
    version: r.version,
    target: formatTarget(r.target),
    status: r.status,
    reason: r.reason ?? null,
    createdAt: r.createdAt,
    finishedAt: r.finishedAt ?? null,
    waves: r.waves.map((w) => ({ index: w.index, label: w.label, state: w.state, devices: w.devices.length, soakUntil: w.soakUntil ?? null })),
    devices: {
      total: devices.length,
      pending: count('pending'),
      delivering: count('delivering'),
      switched: count('switched'),
      failed: count('failed'),
      waiting: count('waiting'),
      skipped: count('skipped'),
      rolledBack: count('rolled-back'),
    },
    timing: rolloutTiming(r, new Date()),
  };
}
