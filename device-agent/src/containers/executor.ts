/**
 * Carries out a plan (plan.ts), step by step, against the engine and the state file. When a critical step
 * fails, the undo steps of the completed ones run in reverse (the new container is stopped and removed, the
 * old one started again) and the failure is thrown with what was restored.
 */
import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { FleetError } from '@edgefleet/protocol';
import type { Engine } from './engine.js';
import { waitHealthy } from './health.js';
import { imageTag } from './labels.js';
import type { Plan, PlannedStep, Step } from './plan.js';
import { createOptions, volumeDir } from './spec.js';
import { activated, emptyRecord } from './state.js';
import type { AppStore } from './state.js';
import type { AppTraffic } from './traffic.js';

export interface ExecutorDeps {
  device: string;
  dataDir: string;
  engine: Engine;
  store: AppStore;
  logger: Logger;
  modelDir: (model: string) => string | undefined;
  stopTimeoutS?: number;
  signal?: AbortSignal;
  /** Where an inference app's requests go (route steps). */
  traffic?: AppTraffic;
}

/** A plan that failed and was undone: the error, and whether undoing it fully worked. */
export class PlanFailed extends FleetError {
  constructor(
    readonly failure: FleetError,
    readonly restored: boolean,
    readonly undoErrors: string[],
  ) {
    super(failure.code, restored ? failure.message : `${failure.message}; undoing it also failed: ${undoErrors.join('; ')}`);
  }
}

function asFleetError(error: unknown): FleetError {
  if (error instanceof FleetError) return error;
  const code = (error as NodeJS.ErrnoException).code === 'ENOSPC' ? 'disk_full' : 'internal';
  return new FleetError(code, (error as Error).message ?? String(error));
}

export async function runStep(step: Step, deps: ExecutorDeps): Promise<void> {
  const { engine, store } = deps;
  switch (step.action) {
    case 'remove': {
      // absent (or not ours, which inspectOwned does not return): nothing to remove
      if (await engine.inspectOwned(step.container)) await engine.remove(step.container);
      return;
    }
    case 'create': {
      for (const m of step.release.spec.mounts) {
        if (m.kind === 'volume') await mkdir(volumeDir(deps.dataDir, step.release.app, m.name), { recursive: true });
      }
      await engine.create(createOptions({ device: deps.device, dataDir: deps.dataDir, role: 'app', name: step.container, release: step.release, modelDir: deps.modelDir }));
      return;
    }
    case 'start':
      return engine.start(step.container);
    case 'stop':
      return engine.stop(step.container, deps.stopTimeoutS ?? 10);
    case 'waitHealthy': {
      const { spec } = step.release;
      // an inference app must also say it is ready to serve, as a runtime container must
      const ready = spec.inference ? { port: spec.inference.port, path: '/v2/health/ready' } : undefined;
      return waitHealthy({ engine, container: step.container, health: spec.health, deadlineMs: spec.healthyWithinMs, ready, signal: deps.signal });
    }
    case 'route':
      await deps.traffic?.route(step.release.app, step.release.version, step.container, step.release.spec);
      return;
    case 'forget':
      await deps.traffic?.unroute(step.app);
      await store.update(step.app, (r) => ({ ...emptyRecord(), highestAccepted: r.highestAccepted }));
      return;
    case 'record':
      await store.update(step.app, (r) => ({ ...activated(r, step.version, step.mode, step.keepPrevious), lastFailure: null }));
      return;
    case 'markStopped':
      await store.update(step.app, (r) => ({ ...r, stopped: step.stopped, stoppedForUpdate: step.forUpdate }));
      return;
    case 'removeImage': {
      const { repo, tag } = imageTag(deps.device, step.app, step.version);
      await engine.removeImage(`${repo}:${tag}`);
      await store.update(step.app, (r) => {
        const releases = { ...r.releases };
        delete releases[String(step.version)];
        return { ...r, releases };
      });
      deps.logger.info({ app: step.app, version: step.version, image: step.image }, 'old image pruned');
      return;
    }
  }
}

/** What undoes the completed steps, in the order to run it: the last step's undo first. Pure. */
export function undoSteps(completed: readonly PlannedStep[]): Step[] {
  return [...completed].reverse().flatMap((p) => p.undo);
}

/** Runs the plan; on a critical failure undoes what was done and throws PlanFailed. */
export async function executePlan(plan: Plan, deps: ExecutorDeps): Promise<void> {
  const log = deps.logger.child({ app: plan.app, target: plan.target, strategy: plan.strategy });
  const done: PlannedStep[] = [];
  for (const planned of plan.steps) {
    try {
      await runStep(planned.step, deps);
      done.push(planned);
    } catch (error) {
      const failure = asFleetError(error);
      if (!planned.critical) {
        log.warn({ err: failure, step: planned.step.action }, 'a clean-up step failed; carrying on');
        continue;
      }
      log.warn({ err: failure, step: planned.step.action }, 'step failed; undoing the plan');
      const undoErrors: string[] = [];
      for (const undo of undoSteps(done)) {
        try {
          await runStep(undo, deps);
        } catch (undoError) {
          undoErrors.push(`${undo.action}: ${asFleetError(undoError).message}`);
        }
      }
      throw new PlanFailed(failure, undoErrors.length === 0, undoErrors);
    }
  }
}
