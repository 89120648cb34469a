/** Short views of a rollout, for lists, the live feed and progress bars. */
import type { RolloutRecord } from '../state/schema.js';
import { formatTarget } from './target.js';

export interface RolloutSummary {
  id: string;
  model: string;
  version: number;
  target: string;
  status: RolloutRecord['status'];
  reason: string | null;
  createdAt: string;
  finishedAt: string | null;
  waves: { index: number; label: string; state: string; devices: number }[];
  devices: { total: number; pending: number; delivering: number; switched: number; failed: number; waiting: number; skipped: number; rolledBack: number };
}

/** A short view of a rollout for lists, the live feed and progress bars. */
export function summarize(r: RolloutRecord): RolloutSummary {
  const devices = Object.values(r.devices);
  const count = (s: string): number => devices.filter((d) => d.state === s).length;
  return {
    id: r.id,
    model: r.model,
    version: r.version,
    target: formatTarget(r.target),
    status: r.status,
    reason: r.reason ?? null,
    createdAt: r.createdAt,
    finishedAt: r.finishedAt ?? null,
    waves: r.waves.map((w) => ({ index: w.index, label: w.label, state: w.state, devices: w.devices.length })),
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
  };
}
