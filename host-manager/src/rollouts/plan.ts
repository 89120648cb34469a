/**
 * Rollout decisions, all pure: which devices go in which wave, and what the executor
 * must do next given a rollout's persisted record (the gate itself is gate.ts). The
 * executor (executor.ts) only carries steps out, so the same record read back after a
 * controller restart yields the same next step.
 */
import { nameRecord, ownEntry } from '@edgefleet/protocol';
import type { ArtifactKind, RolloutDevice, RolloutPolicy, RolloutRecord, RolloutStatus, RolloutTarget, RolloutWave } from '../state/schema.js';
import { gateFailureReason } from './gate.js';
import { isDynamicTarget } from './target.js';
import type { PlanDevice } from './target.js';
import { formatWindow, inWindow, nextWindowOpen } from './window.js';

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
  /** Default 'model'. */
  kind?: ArtifactKind;
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
  // A target chosen again as each wave starts keeps a last wave after the canary, even an empty one,
  // so that devices which match later have a wave to join.
  if (isDynamicTarget(args.target) && (waves.length === 0 || waves[waves.length - 1]!.label === 'canary')) waves.push({ label: '100%', devices: [] });
  const now = args.now.toISOString();
  const devices = nameRecord<RolloutDevice>();
  waves.forEach((wave, index) => {
    for (const id of wave.devices) devices[id] = { id, wave: index, state: 'pending', previous: args.previous(id), attempts: 0 };
  });
  return {
    id: args.id,
    ...(args.kind === 'image' ? { kind: 'image' as const } : {}),
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

export type RolloutStep =
  | { kind: 'idle' } // not running (aborted or finished)
  | { kind: 'deliver'; wave: number; devices: string[] }
  /** A dynamic target's wave about to start: devices that match now join it, pending ones that no longer match leave it. */
  | { kind: 'rewave'; wave: number; join: string[]; leave: string[] }
  | { kind: 'mark-waiting'; devices: string[] }
  | { kind: 'start-soak'; wave: number }
  | { kind: 'gate'; wave: number }
  | { kind: 'rollback'; devices: string[] }
  | { kind: 'skip'; devices: string[] }
  | { kind: 'wait'; until: Date | null; reason: string }
  | { kind: 'finish'; status: Extract<RolloutStatus, 'succeeded' | 'failed' | 'rolled-back'>; reason: string };

/**
 * What to do next. `online` answers from the fleet's current presence; `now` is
 * the clock; `matching` (for group, selector and `all` targets) lists the devices that
 * match the target now. Every step's effect is written to the record before the next call.
 */
export function nextStep(r: RolloutRecord, online: (device: string) => boolean, now: Date, matching?: () => readonly PlanDevice[]): RolloutStep {
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
    const rolledBack = devices.filter((d) => d.state === 'rolled-back').length;
    return {
      kind: 'finish',
      status: 'failed',
      reason: gateFailureReason(failedWave) + (rolledBack > 0 ? `; ${rolledBack} switched device(s) rolled back` : ''),
    };
  }
  const pastDeadline = now.getTime() >= Date.parse(r.deadline);
  const current = r.waves.find((w) => w.state !== 'passed');
  // Devices that were offline in an earlier (or the current) wave and are back: retry them first.
  const upTo = current ? current.index : r.waves.length - 1;
  const returned = devices.filter((d) => d.state === 'waiting' && d.wave <= upTo && online(d.id)).map((d) => d.id);
  if (returned.length > 0 && !pastDeadline) return outsideWindow(r, now) ?? { kind: 'deliver', wave: upTo, devices: returned.sort() };

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

  const inWave = current.devices.map((id) => ownEntry(r.devices, id)).filter((d): d is RolloutDevice => d !== undefined);
  if (current.state === 'pending' && matching && isDynamicTarget(r.target)) {
    const rewave = rewaveStep(r, current, inWave, matching());
    if (rewave) return rewave;
  }
  if (current.state === 'pending' && inWave.every((d) => d.state === 'skipped')) {
    return { kind: 'gate', wave: current.index }; // nobody to deliver to or watch: nothing to soak
  }
  if (current.state === 'pending' || current.state === 'delivering') {
    const todo = inWave.filter((d) => d.state === 'pending' || d.state === 'delivering');
    const reachable = todo.filter((d) => online(d.id)).map((d) => d.id);
    if (reachable.length > 0) return outsideWindow(r, now) ?? { kind: 'deliver', wave: current.index, devices: reachable.sort() };
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

/** The wait until the rollout's maintenance window opens, or undefined when deliveries may start now. */
function outsideWindow(r: RolloutRecord, now: Date): RolloutStep | undefined {
  const window = r.policy.window;
  if (!window || inWindow(window, now)) return undefined;
  const opens = nextWindowOpen(window, now);
  return { kind: 'wait', until: opens, reason: `outside the maintenance window ${formatWindow(window)}; deliveries start at ${opens.toISOString()}` };
}

/** Who joins or leaves a dynamic target's wave as it starts; undefined when nothing changes. */
function rewaveStep(r: RolloutRecord, wave: RolloutWave, inWave: readonly RolloutDevice[], now: readonly PlanDevice[]): RolloutStep | undefined {
  const matchingIds = new Set(now.map((d) => d.id));
  const join = now.filter((d) => ownEntry(r.devices, d.id) === undefined).map((d) => d.id).sort();
  const leave = inWave.filter((d) => d.state === 'pending' && !matchingIds.has(d.id)).map((d) => d.id).sort();
  return join.length > 0 || leave.length > 0 ? { kind: 'rewave', wave: wave.index, join, leave } : undefined;
}

/**
 * Carries a `rewave` step out on the record (pure, on the record given): joining devices are
 * added to the wave as pending, leaving ones are skipped with the reason.
 */
export function applyRewave(r: RolloutRecord, step: Extract<RolloutStep, { kind: 'rewave' }>, previous: (device: string) => number | null): void {
  const wave = r.waves[step.wave];
  if (!wave) return;
  for (const id of step.join) {
    r.devices[id] = { id, wave: step.wave, state: 'pending', previous: previous(id), attempts: 0 };
    wave.devices.push(id);
  }
  for (const id of step.leave) {
    const d = ownEntry(r.devices, id);
    if (d) {
      d.state = 'skipped';
      d.error = { code: 'not_found', message: 'no longer matched the target when its wave started' };
    }
  }
}
