/**
 * How the CLI shows a rollout: the final text (each reason said once), the one-line state of a
 * wave (with its soak countdown), the ETA, and the progress while `--wait` follows it
 * (bars on a terminal, a line per change otherwise).
 */
import cliProgress from 'cli-progress';
import type { RolloutTiming } from '../rollouts/summary.js';
import { formatDuration } from './io.js';
import type { CliIO } from './io.js';

export interface RolloutView {
  id: string;
  kind?: string;
  model: string;
  version: number;
  status: string;
  reason?: string;
  target: { kind: string; name?: string; match?: { key: string; op: string; value: string }[] };
  policy?: { window?: { start: string; end: string; timeZone: string } };
  waves: { index: number; label: string; devices: string[]; state: string; soakUntil?: string; gate?: { pass: boolean; reasons: string[] } }[];
  devices: Record<string, { id: string; state: string; wave: number; error?: { code: string; message: string } }>;
  progress?: Record<string, { received: number; total: number }>;
  timing?: RolloutTiming;
}

export const FINAL_DEVICE_STATES = new Set(['switched', 'failed', 'rolled-back', 'skipped']);

export function targetText(t: RolloutView['target']): string {
  if (t.kind === 'all') return 'all';
  if (t.kind === 'group') return `group:${t.name}`;
  if (t.kind === 'selector') return (t.match ?? []).map((m) => `${m.key}${m.op}${m.value}`).join(',');
  return t.name ?? '';
}

/** A wave's state for people: `soaking, 42 s left`, `delivering 40%`, `passed`. */
export function waveState(r: RolloutView, w: RolloutView['waves'][number], now: Date): string {
  if (w.state === 'soaking' && w.soakUntil) return `soaking, ${formatDuration((Date.parse(w.soakUntil) - now.getTime()) / 1000)} left`;
  if (w.state === 'delivering') {
    let received = 0;
    let total = 0;
    for (const d of w.devices) {
      const p = r.progress?.[d];
      if (p) {
        received += p.received;
        total += p.total;
      }
    }
    return total > 0 ? `delivering ${Math.floor((100 * received) / total)}%` : 'delivering';
  }
  return w.state;
}

/** `ETA 3 min 20 s`, `ETA ≥ 1 min 00 s`, `waiting for the maintenance window (opens in 2 h 10 min)`; '' when not running. */
export function etaText(timing: RolloutTiming | undefined, now: Date): string {
  if (!timing?.etaAt) return '';
  const left = (Date.parse(timing.etaAt) - now.getTime()) / 1000;
  const eta = `ETA ${timing.etaLowerBound ? '≥ ' : ''}${formatDuration(left)}`;
  if (timing.windowOpensAt) return `waiting for the maintenance window (opens in ${formatDuration((Date.parse(timing.windowOpensAt) - now.getTime()) / 1000)}); ${eta}`;
  return eta;
}

/** The whole rollout as text; a reason already printed above (the rollout's, a gate's) is not repeated below it. */
export function rolloutText(r: RolloutView, now = new Date()): string {
  const said: string[] = [];
  const fresh = (text: string): boolean => !said.some((s) => s.includes(text));
  const lines = [`rollout ${r.id}: ${r.kind === 'image' ? 'image ' : ''}${r.model}@${r.version} → ${targetText(r.target)}  [${r.status}]`];
  if (r.reason) {
    lines.push(`  ${r.reason}`);
    said.push(r.reason);
  }
  const eta = r.status === 'running' ? etaText(r.timing, now) : '';
  if (eta) lines.push(`  ${eta}`);
  if (r.policy?.window) lines.push(`  maintenance window ${r.policy.window.start}-${r.policy.window.end} ${r.policy.window.timeZone}`);
  for (const w of r.waves) {
    let gate = '';
    if (w.gate) {
      const findings = w.gate.reasons.filter(fresh);
      gate = ` — gate ${w.gate.pass ? 'passed' : 'FAILED'}${findings.length ? `: ${findings.join('; ')}` : w.gate.pass ? '' : ' (above)'}`;
      said.push(...findings);
    }
    const size = w.devices.length ? `${w.devices.length} device(s)` : 'no devices (those matching the target when it starts join it)';
    lines.push(`  wave ${w.index} (${w.label}): ${waveState(r, w, now)}, ${size}${w.devices.length ? gate : ''}`);
    for (const id of w.devices) {
      const dev = r.devices[id];
      if (!dev) continue;
      const error = dev.error ? `${dev.error.code}: ${dev.error.message}` : '';
      const shown = error && fresh(dev.error!.message) ? ` (${error})` : '';
      if (shown) said.push(error);
      lines.push(`    ${id}: ${dev.state}${shown}`);
    }
  }
  return lines.join('\n');
}

export interface RolloutProgress {
  update(r: RolloutView, now: Date): void;
  stop(): void;
}

/** Bars on a terminal (one per wave and one for the whole rollout with its ETA), otherwise a line whenever the phase changes. */
export function rolloutProgress(io: CliIO, json: boolean): RolloutProgress {
  if (json) return { update: () => undefined, stop: () => undefined };
  if (!io.isTTY) {
    let last = '';
    return {
      update(r, now) {
        const w = r.waves.find((x) => x.index === r.timing?.wave);
        const phase = `${r.status}${w ? ` wave ${w.index} ${w.state}` : ''}`;
        if (phase === last) return;
        last = phase;
        const eta = etaText(r.timing, now);
        io.err(`rollout ${r.id}: ${r.status}${w ? `, wave ${w.index} (${w.label}) ${waveState(r, w, now)}` : ''}${eta ? `; ${eta}` : ''}`);
      },
      stop: () => undefined,
    };
  }
  const bars = new cliProgress.MultiBar({ format: ' {label} |{bar}| {value}/{total} devices  {state}', hideCursor: true, clearOnComplete: false }, cliProgress.Presets.shades_classic);
  const waveBars = new Map<number, cliProgress.SingleBar>();
  let overall: cliProgress.SingleBar | undefined;
  return {
    update(r, now) {
      const total = Object.keys(r.devices).length;
      const done = Object.values(r.devices).filter((d) => FINAL_DEVICE_STATES.has(d.state)).length;
      overall ??= bars.create(total, 0, { label: 'rollout'.padEnd(16), state: '' });
      overall.setTotal(total);
      overall.update(done, { state: r.status === 'running' ? etaText(r.timing, now) : r.status });
      for (const w of r.waves) {
        const finished = w.devices.filter((d) => FINAL_DEVICE_STATES.has(r.devices[d]?.state ?? '')).length;
        let bar = waveBars.get(w.index);
        if (!bar) waveBars.set(w.index, (bar = bars.create(w.devices.length, 0, { label: `wave ${w.index} ${w.label}`.padEnd(16), state: '' })));
        bar.setTotal(w.devices.length);
        bar.update(finished, { state: waveState(r, w, now) });
      }
    },
    stop: () => bars.stop(),
  };
}
