/**
 * The decisions, with no I/O: (what the engine runs, what the state file says, the target) → steps.
 * The executor (executor.ts) carries the steps out; each step lists what undoes it, and when a critical
 * step fails the executor undoes the completed ones in reverse, which is the automatic rollback.
 *
 *   blue-green       the old container serves until the new one is healthy, then stops: when no fixed host
 *                    port of the new spec is bound by the old container
 *   stop-then-start  the old one stops first (a fixed host port both need): undone by starting it again
 *   start            nothing of the app runs (first deploy, or stopped by the operator)
 */
import type { ContainerSpec } from '@edgefleet/protocol';
import { containerName } from './labels.js';
import { fixedHostPorts } from './spec.js';
import type { Release } from './spec.js';
import { activated, releaseOf } from './state.js';
import type { AppRecord } from './state.js';

export type Step =
  | { action: 'remove'; container: string; reason: string }
  | { action: 'create'; container: string; release: Release }
  | { action: 'start'; container: string }
  | { action: 'waitHealthy'; container: string; release: Release }
  | { action: 'stop'; container: string }
  | { action: 'record'; app: string; version: number; mode: 'activate' | 'rollback'; keepPrevious: number }
  | { action: 'markStopped'; app: string; stopped: boolean; forUpdate: boolean }
  | { action: 'removeImage'; app: string; version: number; image: string }
  /** An inference app: its requests go to this container from now on (after those with the old one finished). */
  | { action: 'route'; container: string; release: Release }
  /** The app is gone from this device: no releases, nothing active; the highest version accepted stays. */
  | { action: 'forget'; app: string };

export interface PlannedStep {
  step: Step;
  /** Run in reverse order of the completed steps when a later critical step fails. */
  undo: Step[];
  /** A failing non-critical step (clean-up, pruning) is logged; it neither fails nor undoes the plan. */
  critical: boolean;
}

export type Strategy = 'blue-green' | 'stop-then-start' | 'start' | 'none';

export interface Plan {
  app: string;
  strategy: Strategy;
  /** The version running when the plan has run, and the one before (null: none). */
  target: number | null;
  previous: number | null;
  steps: PlannedStep[];
}

/** What the plan needs to know of an owned container. */
export interface ObservedContainer {
  name: string;
  version: number;
  running: boolean;
}

export interface DeployInput {
  device: string;
  target: Release;
  mode: 'activate' | 'rollback';
  record: AppRecord;
  /** The app's containers on the engine. */
  observed: readonly ObservedContainer[];
  /** Images other apps' records or containers still use (never pruned). */
  imagesInUse: ReadonlySet<string>;
}

const critical = (step: Step, undo: Step[] = []): PlannedStep => ({ step, undo, critical: true });
const cleanup = (step: Step): PlannedStep => ({ step, undo: [], critical: false });

/** Whether two specs can run side by side: they share no fixed host port. */
export function sideBySide(a: ContainerSpec, b: ContainerSpec): boolean {
  const taken = new Set(fixedHostPorts(a));
  return !fixedHostPorts(b).some((p) => taken.has(p));
}

/**
 * Image removals once `record` is what the state file holds: versions below the active one that are neither
 * active nor kept for rollback. Removal takes the agent's own tag (edgefleet/<device>:<app>.v<n>), so an image
 * another tag still names (a kept version, another app, the operator) only loses that tag, and the engine
 * refuses to delete one a container still uses. Images that were on the engine before the agent installed
 * them are never removed.
 */
export function planPrune(app: string, record: AppRecord, imagesInUse: ReadonlySet<string>): PlannedStep[] {
  const active = record.active;
  if (active === null) return [];
  const keep = new Set<number>([active, ...record.history]);
  return Object.entries(record.releases)
    .map(([v, installed]) => ({ version: Number(v), installed }))
    .filter(({ version, installed }) => !keep.has(version) && version < active && !installed.preexisting && !imagesInUse.has(installed.image))
    .sort((a, b) => a.version - b.version)
    .map(({ version, installed }) => cleanup({ action: 'removeImage', app, version, image: installed.image }));
}

/** Replace (or first start) of an app with the target release; undone automatically if the new one is not healthy. */
export function planDeploy(input: DeployInput): Plan {
  const { device, target, record, observed } = input;
  const app = target.app;
  const name = containerName(device, app, target.version, 'app');
  const current = releaseOf(app, record, record.active);
  const currentContainer = current ? observed.find((c) => c.version === current.version) : undefined;
  const existing = observed.find((c) => c.name === name);
  const keepPrevious = target.spec.update.keepPrevious;
  const after = activated(record, target.version, input.mode, keepPrevious);
  const steps: PlannedStep[] = [];

  // Leftovers: containers of the app that are neither the one serving nor the target's (a crash mid-replace).
  for (const c of observed) {
    if (c !== currentContainer && c !== existing) steps.push(cleanup({ action: 'remove', container: c.name, reason: 'a leftover of an earlier deploy' }));
  }

  if (current?.version === target.version && currentContainer?.running && record.active === target.version) {
    return { app, strategy: 'none', target: target.version, previous: record.history.at(-1) ?? null, steps: [...steps, ...planPrune(app, after, input.imagesInUse)] };
  }
  if (existing && existing !== currentContainer) steps.push(critical({ action: 'remove', container: existing.name, reason: 'a failed attempt at this version' }));

  const oldServing = currentContainer !== undefined && currentContainer !== existing && (currentContainer.running || record.stoppedForUpdate);
  const strategy: Strategy = !oldServing ? 'start' : currentContainer!.running && current && sideBySide(current.spec, target.spec) ? 'blue-green' : 'stop-then-start';
  // undone by starting it again and waiting until it serves, so "restored" means it answers again
  const stopOld = (): PlannedStep =>
    critical({ action: 'stop', container: currentContainer!.name }, [
      { action: 'start', container: currentContainer!.name },
      ...(current ? [{ action: 'waitHealthy' as const, container: currentContainer!.name, release: current }] : []),
    ]);

  if (strategy === 'stop-then-start') steps.push(stopOld());
  if (existing && existing === currentContainer) {
    // the target's container exists and is the recorded one (e.g. stopped by the operator): start it again
    steps.push(critical({ action: 'start', container: name }, [{ action: 'stop', container: name }]));
  } else {
    steps.push(critical({ action: 'create', container: name, release: target }, [{ action: 'remove', container: name, reason: 'it did not become healthy' }]));
    steps.push(critical({ action: 'start', container: name }, [{ action: 'stop', container: name }]));
  }
  steps.push(critical({ action: 'waitHealthy', container: name, release: target }));
  if (target.spec.inference) {
    // requests move once the new one is healthy, before the old one stops; undone by moving them back
    const back = current && currentContainer && current.spec.inference ? [{ action: 'route' as const, container: currentContainer.name, release: current }] : [];
    steps.push(critical({ action: 'route', container: name, release: target }, back));
  }
  if (strategy === 'blue-green') steps.push(stopOld());
  steps.push(critical({ action: 'record', app, version: target.version, mode: input.mode, keepPrevious }));
  if (oldServing || (currentContainer && currentContainer !== existing)) {
    steps.push(cleanup({ action: 'remove', container: currentContainer!.name, reason: `replaced by version ${target.version}` }));
  }
  steps.push(...planPrune(app, after, input.imagesInUse));
  return { app, strategy, target: target.version, previous: record.active === target.version ? (record.history.at(-1) ?? null) : record.active, steps };
}

/** `containers.stop`: stop the active version's container and remember that the operator wants it stopped. */
export function planStop(device: string, app: string, record: AppRecord, observed: readonly ObservedContainer[]): Plan {
  const c = observed.find((o) => o.version === record.active);
  const steps: PlannedStep[] = [critical({ action: 'markStopped', app, stopped: true, forUpdate: false })];
  if (c?.running) steps.push(critical({ action: 'stop', container: c.name }));
  return { app, strategy: 'none', target: record.active, previous: null, steps };
}

/**
 * `containers.remove`: every container of the app stopped and removed, the images of its releases untagged
 * (except those that were on the engine before the agent, or that something else runs), the record emptied.
 */
export function planRemove(app: string, record: AppRecord, observed: readonly ObservedContainer[], imagesInUse: ReadonlySet<string>): Plan {
  const steps: PlannedStep[] = [];
  for (const c of observed) steps.push(critical({ action: 'remove', container: c.name, reason: 'the app is removed from this device' }));
  const releases = Object.entries(record.releases).sort(([a], [b]) => Number(a) - Number(b));
  for (const [v, installed] of releases) {
    if (!installed.preexisting && !imagesInUse.has(installed.image)) steps.push(cleanup({ action: 'removeImage', app, version: Number(v), image: installed.image }));
  }
  steps.push(critical({ action: 'forget', app }));
  return { app, strategy: 'none', target: null, previous: record.active, steps };
}

/**
 * stop-then-download, before the image arrives: stop the active container (it stays, stopped, to be
 * started again if the update fails) and drop the images kept for rollback, so the new image has room.
 */
export function planMakeRoom(app: string, record: AppRecord, observed: readonly ObservedContainer[], imagesInUse: ReadonlySet<string>): Plan {
  const c = observed.find((o) => o.version === record.active);
  const steps: PlannedStep[] = [];
  if (c?.running) {
    steps.push(critical({ action: 'markStopped', app, stopped: false, forUpdate: true }));
    steps.push(critical({ action: 'stop', container: c.name }, [{ action: 'start', container: c.name }]));
  }
  steps.push(...planPrune(app, { ...record, history: [] }, imagesInUse));
  return { app, strategy: 'none', target: record.active, previous: null, steps };
}

/** The steps that will change something on the engine or in the state file (for logs and `--json` answers). */
export function describePlan(plan: Plan): string[] {
  return plan.steps.map(({ step, critical: c }) => {
    const what = 'container' in step ? step.container : 'image' in step ? `${step.app}@${step.version} ${step.image.slice(0, 19)}` : step.app;
    return `${step.action} ${what}${c ? '' : ' (clean-up)'}`;
  });
}
