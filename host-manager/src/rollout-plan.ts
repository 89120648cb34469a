/**
 * Rollout decisions, all pure: which devices go in which wave, whether a wave's
 * gate passes, and what the executor must do next given a rollout's persisted
 * record. The executor (rollout.ts) only carries steps out, so the same record
 * read back after a controller restart yields the same next step.
 */
import { z } from 'zod';
import type { ModelHealth } from '@edgefleet/protocol';
import type {
  GateResult,
  HealthSummary,
  RolloutDevice,
  RolloutPolicy,
  RolloutRecord,
  RolloutStatus,
  RolloutTarget,
  RolloutWave,
} from './state.js';

export const DEFAULT_POLICY: RolloutPolicy = {
  canary: 1,
  waves: [10, 50, 100],
  maxFailuresPercent: 0,
  soakS: 60,
  maxErrorRate: 0.05,
  maxErrorRateIncrease: 0.01,
  maxLatencyRatio: 1.5,
  latencyFloorMs: 5,
  minRequests: 20,
  offlineDeadlineS: 3600,
  rollbackOnFailure: true,
};

export const RolloutPolicySchema = z
  .object({
    canary: z.number().int().min(0).max(10_000),
    waves: z.array(z.number().gt(0).max(100)).max(20),
    maxFailuresPercent: z.number().min(0).max(100),
    soakS: z.number().min(0).max(7 * 24 * 3600),
    maxErrorRate: z.number().min(0).max(1),
    maxErrorRateIncrease: z.number().min(0).max(1),
    maxLatencyRatio: z.number().min(1),
    latencyFloorMs: z.number().min(0),
    minRequests: z.number().int().min(0),
    offlineDeadlineS: z.number().min(0),
    rollbackOnFailure: z.boolean(),
  })
  .partial()
  .strict();
export type PolicyInput = z.infer<typeof RolloutPolicySchema>;

export function resolvePolicy(input: PolicyInput = {}): RolloutPolicy {
  const merged = { ...DEFAULT_POLICY, ...Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) };
  const waves = [...merged.waves].sort((a, b) => a - b);
  if (waves.length === 0 || waves[waves.length - 1] !== 100) waves.push(100);
  return { ...merged, waves: [...new Set(waves)] };
}

/** `pi-1`, `group:lab`, `all` → a target. */
export function parseTarget(text: string): RolloutTarget {
  if (text === 'all') return { kind: 'all' };
  if (text.startsWith('group:')) return { kind: 'group', name: text.slice('group:'.length) };
  return { kind: 'device', name: text };
}

export function formatTarget(target: RolloutTarget): string {
  return target.kind === 'all' ? 'all' : target.kind === 'group' ? `group:${target.name}` : target.name;
}

export interface PlanDevice {
  id: string;
  groups: readonly string[];
  online: boolean;
}

export function targetDevices<D extends PlanDevice>(devices: readonly D[], target: RolloutTarget): D[] {
  const chosen =
    target.kind === 'all'
      ? devices
      : target.kind === 'group'
        ? devices.filter((d) => d.groups.includes(target.name))
        : devices.filter((d) => d.id === target.name);
  return [...chosen].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export interface PlannedWave {
  label: string;
  devices: string[];
}

/**
 * Splits the target into waves: `canary` devices first (online ones preferred,
 * so the canary actually runs the model), then growing cumulative percentages of
 * the whole target. Deterministic: the same fleet and policy give the same plan.
 */
export function planWaves(devices: readonly PlanDevice[], policy: RolloutPolicy): PlannedWave[] {
  const byId = (a: PlanDevice, b: PlanDevice): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const ordered = [...devices.filter((d) => d.online).sort(byId), ...devices.filter((d) => !d.online).sort(byId)];
  const total = ordered.length;
  const waves: PlannedWave[] = [];
  let next = 0;
  const canary = Math.min(policy.canary, total);
  if (canary > 0) {
    waves.push({ label: 'canary', devices: ordered.slice(0, canary).map((d) => d.id) });
    next = canary;
  }
  const percentages = policy.waves.length > 0 ? policy.waves : [100];
  for (const pct of percentages) {
    const upTo = pct >= 100 ? total : Math.min(total, Math.ceil((pct / 100) * total));
    if (upTo <= next) continue;
    waves.push({ label: `${pct}%`, devices: ordered.slice(next, upTo).map((d) => d.id) });
    next = upTo;
  }
  if (next < total) waves.push({ label: '100%', devices: ordered.slice(next).map((d) => d.id) });
  return waves;
}

/** Builds the record a new rollout starts from. */
export function newRollout(args: {
  id: string;
  model: string;
  version: number;
  target: RolloutTarget;
  policy: RolloutPolicy;
  devices: readonly PlanDevice[];
  previous: (device: string) => number | null;
  createdBy: string;
  now: Date;
}): RolloutRecord {
  const waves = planWaves(args.devices, args.policy);
  const now = args.now.toISOString();
  const devices: Record<string, RolloutDevice> = {};
  waves.forEach((wave, index) => {
    for (const id of wave.devices) devices[id] = { id, wave: index, state: 'pending', previous: args.previous(id), attempts: 0 };
  });
  return {
    id: args.id,
    model: args.model,
    version: args.version,
    target: args.target,
    policy: args.policy,
    status: 'running',
    createdAt: now,
    updatedAt: now,
    createdBy: args.createdBy,
    waves: waves.map((w, index): RolloutWave => ({ index, label: w.label, devices: w.devices, state: 'pending' })),
    devices,
    deadline: new Date(args.now.getTime() + args.policy.offlineDeadlineS * 1000).toISOString(),
  };
}

// ---------------------------------------------------------------- health

export const EMPTY_HEALTH: HealthSummary = { requests: 0, errors: 0, errorRate: null, p95Ms: null, samples: 0 };

/** Sums per-interval model health; p95 is the request-weighted mean of the intervals' p95. */
export function summarizeHealth(samples: readonly ModelHealth[]): HealthSummary {
  let requests = 0;
  let errors = 0;
  let weighted = 0;
  let weight = 0;
  for (const s of samples) {
    requests += s.requests;
    errors += s.errors;
    if (s.p95Ms !== null && s.requests > 0) {
      weighted += s.p95Ms * s.requests;
      weight += s.requests;
    }
  }
  return {
    requests,
    errors,
    errorRate: requests > 0 ? errors / requests : null,
    p95Ms: weight > 0 ? weighted / weight : null,
    samples: samples.length,
  };
}

export function combineHealth(parts: readonly HealthSummary[]): HealthSummary {
  let requests = 0;
  let errors = 0;
  let samples = 0;
  let weighted = 0;
  let weight = 0;
  for (const p of parts) {
    requests += p.requests;
    errors += p.errors;
    samples += p.samples;
    if (p.p95Ms !== null && p.requests > 0) {
      weighted += p.p95Ms * p.requests;
      weight += p.requests;
    }
  }
  return { requests, errors, errorRate: requests > 0 ? errors / requests : null, p95Ms: weight > 0 ? weighted / weight : null, samples };
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
const ms = (x: number): string => `${x.toFixed(1)} ms`;

/**
 * The gate of one wave: install results first, then the inference health of
 * the new version on the switched devices during the soak against the old
 * version on the same devices before the switch.
 */
export function evaluateGate(
  policy: RolloutPolicy,
  waveDevices: readonly RolloutDevice[],
  before: HealthSummary,
  after: HealthSummary,
): GateResult {
  const switched = waveDevices.filter((d) => d.state === 'switched').length;
  const failed = waveDevices.filter((d) => d.state === 'failed').length;
  const waiting = waveDevices.filter((d) => d.state === 'waiting' || d.state === 'skipped').length;
  const reasons: string[] = [];
  let pass = true;
  const allowed = Math.floor((policy.maxFailuresPercent / 100) * waveDevices.length);
  if (failed > allowed) {
    pass = false;
    const first = waveDevices.find((d) => d.state === 'failed' && d.error);
    reasons.push(
      `${failed} of ${waveDevices.length} devices failed to install (allowed ${allowed})` +
        (first?.error ? `: ${first.id}: ${first.error.code}: ${first.error.message}` : ''),
    );
  }
  if (after.requests < policy.minRequests) {
    reasons.push(`only ${after.requests} requests during the soak (minimum ${policy.minRequests}): gated on install results only`);
  } else {
    const rate = after.errorRate ?? 0;
    if (rate > policy.maxErrorRate) {
      pass = false;
      reasons.push(`error rate ${pct(rate)} after the switch is above the ${pct(policy.maxErrorRate)} ceiling`);
    }
    if (before.errorRate !== null && rate > before.errorRate + policy.maxErrorRateIncrease) {
      pass = false;
      reasons.push(`error rate rose from ${pct(before.errorRate)} to ${pct(rate)} (allowed +${pct(policy.maxErrorRateIncrease)})`);
    }
    if (
      after.p95Ms !== null &&
      before.p95Ms !== null &&
      after.p95Ms > policy.latencyFloorMs &&
      after.p95Ms > before.p95Ms * policy.maxLatencyRatio
    ) {
      pass = false;
      reasons.push(`p95 latency rose from ${ms(before.p95Ms)} to ${ms(after.p95Ms)} (allowed ×${policy.maxLatencyRatio})`);
    }
    if (before.requests === 0) reasons.push('no traffic on the previous version before the switch: compared with absolute limits only');
  }
  if (pass && reasons.length === 0) reasons.push('install results and inference health within limits');
  return { pass, reasons, install: { switched, failed, waiting }, before, after };
}

// ---------------------------------------------------------------- next step

export type RolloutStep =
  | { kind: 'idle' } // not running (aborted or finished)
  | { kind: 'deliver'; wave: number; devices: string[] }
  | { kind: 'mark-waiting'; devices: string[] }
  | { kind: 'start-soak'; wave: number }
  | { kind: 'gate'; wave: number }
  | { kind: 'rollback'; devices: string[] }
  | { kind: 'skip'; devices: string[] }
  | { kind: 'wait'; until: Date | null; reason: string }
  | { kind: 'finish'; status: Extract<RolloutStatus, 'succeeded' | 'failed' | 'rolled-back'>; reason: string };

/**
 * What to do next. `online` answers from the fleet's current presence; `now` is
 * the clock. Every step's effect is written to the record before the next call.
 */
export function nextStep(r: RolloutRecord, online: (device: string) => boolean, now: Date): RolloutStep {
  if (r.status !== 'running') return { kind: 'idle' };
  const devices = Object.values(r.devices);
  const failedWave = r.waves.find((w) => w.state === 'failed');
  if (failedWave) {
    if (r.policy.rollbackOnFailure) {
      const switched = devices.filter((d) => d.state === 'switched');
      const toUndo = switched.filter((d) => online(d.id)).map((d) => d.id);
      if (toUndo.length > 0) return { kind: 'rollback', devices: toUndo.sort() };
      if (switched.length > 0 && now.getTime() < Date.parse(r.deadline)) {
        return { kind: 'wait', until: new Date(r.deadline), reason: `waiting for ${switched.length} offline device(s) to return to roll them back` };
      }
    }
    const why = failedWave.gate?.reasons.filter((x) => !x.startsWith('only ')).join('; ') || 'gate failed';
    return {
      kind: 'finish',
      status: 'failed',
      reason: `wave ${failedWave.index} (${failedWave.label}) failed its gate: ${why}` + (r.policy.rollbackOnFailure ? '; switched devices rolled back' : ''),
    };
  }
  const pastDeadline = now.getTime() >= Date.parse(r.deadline);
  const current = r.waves.find((w) => w.state !== 'passed');
  // Devices that were offline in an earlier (or the current) wave and are back: retry them first.
  const upTo = current ? current.index : r.waves.length - 1;
  const returned = devices.filter((d) => d.state === 'waiting' && d.wave <= upTo && online(d.id)).map((d) => d.id);
  if (returned.length > 0 && !pastDeadline) return { kind: 'deliver', wave: upTo, devices: returned.sort() };

  if (!current) {
    const waiting = devices.filter((d) => d.state === 'waiting').map((d) => d.id);
    if (waiting.length > 0) {
      if (pastDeadline) return { kind: 'skip', devices: waiting.sort() };
      return { kind: 'wait', until: new Date(r.deadline), reason: `waiting for ${waiting.length} offline device(s) to return` };
    }
    const switched = devices.filter((d) => d.state === 'switched').length;
    const failed = devices.filter((d) => d.state === 'failed').length;
    const skipped = devices.filter((d) => d.state === 'skipped').length;
    return {
      kind: 'finish',
      status: 'succeeded',
      reason: `${switched} of ${devices.length} devices run ${r.model}@${r.version}` +
        (failed ? `; ${failed} failed to install` : '') + (skipped ? `; ${skipped} offline until the deadline` : ''),
    };
  }

  const inWave = current.devices.map((id) => r.devices[id]).filter((d): d is RolloutDevice => d !== undefined);
  if (current.state === 'pending' || current.state === 'delivering') {
    const todo = inWave.filter((d) => d.state === 'pending' || d.state === 'delivering');
    const reachable = todo.filter((d) => online(d.id)).map((d) => d.id);
    if (reachable.length > 0) return { kind: 'deliver', wave: current.index, devices: reachable.sort() };
    if (todo.length > 0) return { kind: 'mark-waiting', devices: todo.map((d) => d.id).sort() };
    // Everything in the wave has an outcome or is waiting.
    const switched = inWave.filter((d) => d.state === 'switched').length;
    const waiting = inWave.filter((d) => d.state === 'waiting');
    const failed = inWave.filter((d) => d.state === 'failed').length;
    const allowed = Math.floor((r.policy.maxFailuresPercent / 100) * inWave.length);
    if (failed > allowed) return { kind: 'gate', wave: current.index }; // fails on install results, no need to soak
    if (switched === 0 && waiting.length > 0) {
      if (pastDeadline) return { kind: 'skip', devices: waiting.map((d) => d.id).sort() };
      return { kind: 'wait', until: new Date(r.deadline), reason: `wave ${current.index} (${current.label}): all its devices are offline` };
    }
    return { kind: 'start-soak', wave: current.index };
  }
  // soaking
  const until = current.soakUntil ? new Date(current.soakUntil) : now;
  if (now.getTime() < until.getTime()) {
    return { kind: 'wait', until, reason: `wave ${current.index} (${current.label}) soaking until ${until.toISOString()}` };
  }
  return { kind: 'gate', wave: current.index };
}
