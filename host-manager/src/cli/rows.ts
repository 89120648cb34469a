/** The rows the CLI prints for devices and rollouts, shared by `list` and `watch`. */
import { formatDuration } from './io.js';

/** A device as the API returns it (the fields the rows read). */
export interface DeviceView {
  id: string;
  online: boolean;
  groups: string[];
  labels?: Record<string, string>;
  lastSeen: string | null;
  offlineReason?: string | null;
  info: { models?: { name: string; version: number }[]; arch?: string; runtime?: unknown; hostname?: string } | null;
  telemetry: { cpuPercent?: number; memoryUsedBytes?: number; memoryTotalBytes?: number; temperatureC?: number | null } | null;
}

export const DEVICE_COLUMNS = ['id', 'status', 'groups', 'labels', 'models', 'arch', 'runtime', 'cpu', 'mem', 'temp', 'lastSeen'];

/** `12 s ago`, `4 min ago`, `3 h ago`, `2 d ago`, or `never`. */
export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

function runtimeText(runtime: unknown): string {
  if (typeof runtime === 'string') return runtime;
  if (runtime && typeof runtime === 'object') {
    const r = runtime as { kind?: unknown; name?: unknown; version?: unknown };
    const name = typeof r.kind === 'string' ? r.kind : typeof r.name === 'string' ? r.name : '';
    return typeof r.version === 'string' && name ? `${name} ${r.version}` : name;
  }
  return '';
}

export function deviceRow(d: DeviceView, now = Date.now()): Record<string, string> {
  const t = d.telemetry;
  return {
    id: d.id,
    status: d.online ? 'online' : 'offline',
    groups: d.groups.join(','),
    labels: Object.entries(d.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(','),
    models: (d.info?.models ?? []).map((m) => `${m.name}@${m.version}`).join(','),
    arch: d.info?.arch ?? '',
    runtime: runtimeText(d.info?.runtime),
    cpu: t?.cpuPercent !== undefined ? `${t.cpuPercent.toFixed(0)}%` : '',
    mem: t?.memoryTotalBytes ? `${Math.round((100 * (t.memoryUsedBytes ?? 0)) / t.memoryTotalBytes)}%` : '',
    temp: t?.temperatureC !== undefined && t.temperatureC !== null ? `${t.temperatureC.toFixed(0)}°C` : '',
    lastSeen: ago(d.lastSeen, now),
  };
}

/** A rollout summary as the API and the feed give it. */
export interface RolloutSummaryView {
  id: string;
  model: string;
  version: number;
  target: string;
  status: string;
  reason: string | null;
  waves: { index: number; label: string; state: string }[];
  devices: { switched: number; failed: number; total: number };
  timing?: { wave: number | null; etaAt: string | null; etaLowerBound: boolean } | null;
}

export const ROLLOUT_COLUMNS = ['id', 'model', 'target', 'status', 'wave', 'switched', 'eta', 'reason'];

export function rolloutRow(r: RolloutSummaryView, now = Date.now()): Record<string, string> {
  const wave = r.waves.find((w) => w.index === r.timing?.wave);
  const eta = r.timing?.etaAt ? Math.max(0, Math.round((Date.parse(r.timing.etaAt) - now) / 1000)) : null;
  return {
    id: r.id,
    model: `${r.model}@${r.version}`,
    target: r.target,
    status: r.status,
    wave: wave ? `${wave.label} ${wave.state}` : '',
    switched: `${r.devices.switched}/${r.devices.total}${r.devices.failed ? ` (${r.devices.failed} failed)` : ''}`,
    eta: eta === null ? '' : `${r.timing?.etaLowerBound ? '≥ ' : ''}${formatDuration(eta)}`,
    reason: r.reason ?? '',
  };
}
