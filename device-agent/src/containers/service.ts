/**
 * ContainerService: the agent's containers half. Image installs (install.ts), deploys, rollbacks, stops and
 * starts as plans (plan.ts) carried out by the executor (executor.ts), one operation per app at a time;
 * state for status and telemetry; the inference runtime (runtime.ts) the model service uses.
 */
import type { Logger } from 'pino';
import { FleetError, makeEvent } from '@edgefleet/protocol';
import type { CommandResult, ContainerState, FleetEvent, Manifest } from '@edgefleet/protocol';
import { openEngine } from './engine.js';
import type { Engine, EngineStatus, OwnedContainer } from './engine.js';
import { PlanFailed, executePlan } from './executor.js';
import type { ExecutorDeps } from './executor.js';
import { checkImageManifest, installImage } from './install.js';
import type { InstallResult } from './install.js';
import { describePlan, planDeploy, planMakeRoom, planStop } from './plan.js';
import type { Plan, Strategy } from './plan.js';
import { boardPlatform } from './platform.js';
import type { BoardPlatform } from './platform.js';
import { createContainerRuntime } from './runtime.js';
import type { ContainerRuntime } from './runtime.js';
import { modelVersionDir } from './spec.js';
import { AppStore, failed, releaseOf } from './state.js';

export interface ContainerServiceOptions {
  device: string;
  dataDir: string;
  logger: Logger;
  /** The engine's unix socket (default: DOCKER_HOST, else /var/run/docker.sock). */
  socketPath?: string | undefined;
  /** The engine's data root as this agent sees it, for the free-space check (default: what the engine says). */
  engineRoot?: string | undefined;
  /** This board's platform (default: from process.arch and Node's arm version). */
  board?: BoardPlatform;
  publishEvent?: (event: FleetEvent) => void;
}

export interface DeployResult {
  app: string;
  version: number;
  previous: number | null;
  strategy: Strategy;
}

export interface ContainerService {
  readonly engine: Engine;
  readonly runtime: ContainerRuntime;
  readonly board: BoardPlatform;
  /**
   * Removes inference containers of an earlier run, then (in the background) brings each app back to its
   * recorded version. Runs once; later calls share it. Resolves with the engine's status.
   */
  start(): Promise<EngineStatus>;
  engineStatus(): Promise<EngineStatus>;
  /** The manifest-only checks, for a transfer offer (before a byte of the image is sent). */
  checkManifest(manifest: Manifest): FleetError | undefined;
  /** stop-then-download: make room before the download (stop the app, drop kept images); no-op for download-then-replace. */
  prepareDownload(manifest: Manifest): Promise<void>;
  installImage(manifest: Manifest, archivePath: string): Promise<InstallResult>;
  deploy(app: string, version: number): Promise<DeployResult>;
  rollback(app: string): Promise<DeployResult>;
  stop(app: string): Promise<CommandResult<'containers.stop'>>;
  startApp(app: string): Promise<CommandResult<'containers.start'>>;
  logs(app: string, lines: number): Promise<CommandResult<'containers.logs'>>;
  list(): Promise<CommandResult<'containers.list'>>;
  /** The fleet's containers for status and telemetry; empty without an engine. */
  states(): Promise<ContainerState[]>;
  highestAccepted(app: string): number;
  recordAccepted(app: string, version: number): Promise<void>;
  /** How a `model` mount finds a model's active version (set by the agent once its model service runs). */
  useModels(activeVersion: (model: string) => number | undefined): void;
  close(): Promise<void>;
}

function publicState(c: OwnedContainer): ContainerState {
  const { ports: _ports, ...state } = c;
  return state;
}

export async function createContainerService(opts: ContainerServiceOptions): Promise<ContainerService> {
  const log = opts.logger.child({ part: 'containers' });
  const engine = openEngine({ device: opts.device, socketPath: opts.socketPath });
  const board = opts.board ?? boardPlatform();
  const store = await AppStore.open(opts.dataDir);
  // a runtime container is created only after start() removed those an earlier run left behind
  const runtime = createContainerRuntime({ device: opts.device, dataDir: opts.dataDir, engine, board, logger: log, ready: () => service.start() });
  let modelDir: (model: string) => string | undefined = () => undefined;
  const locks = new Map<string, Promise<unknown>>();
  let closing = false;
  let reconciling: Promise<void> = Promise.resolve();
  let starting: Promise<EngineStatus> | undefined;
  // aborted by close(): a deploy waiting for a health check gives up (and is undone) instead of holding up the shutdown
  const shutdown = new AbortController();
  const deps = (): ExecutorDeps => ({ device: opts.device, dataDir: opts.dataDir, engine, store, logger: log, modelDir, signal: shutdown.signal });

  /** One operation per app at a time (install, deploy, rollback, stop, start). */
  function exclusive<T>(app: string, fn: () => Promise<T>): Promise<T> {
    if (closing) return Promise.reject(new FleetError('unavailable', 'the agent is shutting down'));
    const run = (locks.get(app) ?? Promise.resolve()).then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    locks.set(app, tail);
    void tail.then(() => locks.get(app) === tail && locks.delete(app));
    return run;
  }

  async function appContainers(app: string): Promise<OwnedContainer[]> {
    return (await engine.listOwned(app)).filter((c) => c.role === 'app');
  }

  /**
   * Images that pruning this app leaves alone: those other containers run (inference containers, other apps).
   * Images shared with other apps' releases need no care here: pruning removes only this app's own tag.
   */
  async function imagesInUse(app: string): Promise<Set<string>> {
    const ids = new Set<string>();
    for (const c of await engine.listOwned()) if (c.app !== app || c.role !== 'app') ids.add(c.image);
    return ids;
  }

  async function runDeploy(app: string, version: number, mode: 'activate' | 'rollback'): Promise<DeployResult> {
    const record = store.record(app);
    const target = releaseOf(app, record, version);
    if (!target) {
      const installed = record.releases[String(version)];
      throw new FleetError('not_found', installed ? `${app}@${version} was installed without a container spec; nothing to run` : `${app}@${version} is not installed on this device; deliver the image first`);
    }
    const plan: Plan = planDeploy({ device: opts.device, target, mode, record, observed: await appContainers(app), imagesInUse: await imagesInUse(app) });
    log.info({ app, version, strategy: plan.strategy, steps: describePlan(plan) }, 'deploying');
    try {
      await executePlan(plan, deps());
    } catch (error) {
      const e = error instanceof FleetError ? error : new FleetError('internal', String(error));
      const restored = error instanceof PlanFailed && error.restored && plan.strategy !== 'start' ? record.active : null;
      await store.update(app, (r) => failed(r, version, e.toJSON(), Date.now())).catch((writeError: unknown) => log.warn({ err: writeError }, 'could not record the failure'));
      opts.publishEvent?.(makeEvent('container.failed', { app, version, error: e.toJSON(), restored }));
      const back = restored !== null ? `; version ${restored} was restored and keeps running` : plan.strategy === 'start' ? '' : '; the previous version could not be restored';
      throw new FleetError(e.code, `${app}@${version}: ${e.message}${back}`);
    }
    if (plan.strategy !== 'none') opts.publishEvent?.(makeEvent('container.activated', { app, version, previous: plan.previous, strategy: plan.strategy }));
    log.info({ app, version, previous: plan.previous, strategy: plan.strategy }, 'deployed');
    return { app, version, previous: plan.previous, strategy: plan.strategy };
  }

  async function activeOrThrow(app: string): Promise<number> {
    const active = store.record(app).active;
    if (active === null) throw new FleetError('not_found', `app ${app} has no active version on this device${store.apps().length ? ` (apps: ${store.apps().join(', ')})` : ''}`);
    return active;
  }

  const service: ContainerService = {
    engine,
    runtime,
    board,
    start() {
      starting ??= (async () => {
        const status = await engine.status();
        if (!status.available) {
          log.warn({ reason: status.reason }, 'no Docker engine: containers are off until one answers');
          starting = undefined; // the next call tries again
          return status;
        }
        await runtime.removeStale();
        // in the background: bringing an app back may wait for its health check, which must not hold up the agent
        reconciling = (async () => {
          for (const app of store.apps()) {
            if (closing) break;
            const r = store.record(app);
            if (r.active === null || r.stopped) continue;
            await exclusive(app, () => runDeploy(app, r.active!, 'activate')).catch((error: unknown) => log.error({ err: error, app }, 'could not bring the app back to its recorded version'));
          }
        })();
        return status;
      })();
      return starting;
    },
    engineStatus: () => engine.status(),
    checkManifest: (manifest) => checkImageManifest(manifest, board),
    prepareDownload(manifest) {
      if (manifest.container?.update.strategy !== 'stop-then-download') return Promise.resolve();
      return exclusive(manifest.name, async () => {
        const record = store.record(manifest.name);
        const plan = planMakeRoom(manifest.name, record, await appContainers(manifest.name), await imagesInUse(manifest.name));
        log.info({ app: manifest.name, steps: describePlan(plan) }, 'making room before the download');
        await executePlan(plan, deps());
      });
    },
    installImage: (manifest, archivePath) =>
      exclusive(manifest.name, () => installImage(manifest, archivePath, { device: opts.device, board, engine, store, logger: log, engineRoot: opts.engineRoot })),
    deploy: (app, version) => exclusive(app, () => runDeploy(app, version, 'activate')),
    rollback: (app) =>
      exclusive(app, async () => {
        const record = store.record(app);
        const previous = [...record.history].reverse().find((v) => releaseOf(app, record, v));
        if (previous === undefined) throw new FleetError('not_found', `${app} has no previous version whose image is kept on this device`);
        return runDeploy(app, previous, 'rollback');
      }),
    stop: (app) =>
      exclusive(app, async () => {
        const version = await activeOrThrow(app);
        const observed = await appContainers(app);
        const wasRunning = observed.some((c) => c.version === version && c.running);
        await executePlan(planStop(opts.device, app, store.record(app), observed), deps());
        return { app, version, stopped: wasRunning };
      }),
    startApp: (app) =>
      exclusive(app, async () => {
        const version = await activeOrThrow(app);
        const wasRunning = (await appContainers(app)).some((c) => c.version === version && c.running);
        await runDeploy(app, version, 'activate');
        return { app, version, started: !wasRunning };
      }),
    async logs(app, lines) {
      const active = store.record(app).active;
      const mine = await engine.listOwned(app);
      const c = mine.find((o) => o.role === 'app' && o.version === active) ?? mine.at(-1);
      if (!c) throw new FleetError('not_found', `no container of ${app} runs on this device`);
      return { app, container: c.name, lines: await engine.logs(c.id, lines) };
    },
    async list() {
      const status = await engine.status();
      const containers = status.available ? (await engine.listOwned()).map(publicState) : [];
      const apps = store.apps().map((app) => {
        const r = store.record(app);
        const images = Object.entries(r.releases).map(([v, i]) => ({ version: Number(v), image: i.image })).sort((a, b) => a.version - b.version);
        return { app, active: r.active, images, lastFailure: r.lastFailure };
      });
      return { engine: { available: status.available, version: status.version, reason: status.reason }, containers, apps };
    },
    async states() {
      if (!(await engine.status()).available) return [];
      return (await engine.listOwned()).map(publicState);
    },
    highestAccepted: (app) => store.record(app).highestAccepted,
    async recordAccepted(app, version) {
      if (version <= store.record(app).highestAccepted) return;
      await store.update(app, (r) => ({ ...r, highestAccepted: Math.max(r.highestAccepted, version) }));
    },
    useModels(activeVersion) {
      modelDir = (model) => {
        const version = activeVersion(model);
        return version === undefined ? undefined : modelVersionDir(opts.dataDir, model, version);
      };
    },
    async close() {
      closing = true;
      shutdown.abort();
      await reconciling;
      await Promise.all([...locks.values()]);
    },
  };
  return service;
}
