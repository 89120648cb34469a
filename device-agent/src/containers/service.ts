/**
 * ContainerService: the agent's containers half. Image installs (install.ts), deploys, rollbacks, stops and
 * starts as plans (plan.ts) carried out by the executor (executor.ts), one operation per app at a time;
 * state for status and telemetry; the inference runtime (runtime.ts) the model service uses; inference
 * through image apps that serve it (traffic.ts).
 */
import type { Logger } from 'pino';
import { FleetError, makeEvent } from '@edgefleet/protocol';
import type { CommandResult, ContainerState, FleetEvent, Manifest, ModelHealth } from '@edgefleet/protocol';
import type { InferAnswer, InferParams } from '../models/index.js';
import { BUSY_ENGINE_MS, openEngine } from './engine.js';
import type { Engine, EngineStatus, OwnedContainer } from './engine.js';
import { PlanFailed, executePlan } from './executor.js';
import type { ExecutorDeps } from './executor.js';
import { checkImageManifest, installImage } from './install.js';
import type { InstallOptions, InstallResult } from './install.js';
import { describePlan, planDeploy, planMakeRoom, planRemove, planStop } from './plan.js';
import type { Plan, Strategy } from './plan.js';
import { boardPlatform } from './platform.js';
import type { BoardPlatform } from './platform.js';
import { createContainerRuntime } from './runtime.js';
import type { ContainerRuntime } from './runtime.js';
import { modelVersionDir } from './spec.js';
import { AppStore, failed, releaseOf } from './state.js';
import { AppTraffic } from './traffic.js';

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
  /** checkManifest, and an engine that answers: what an offer of an image must pass. */
  checkOffer(manifest: Manifest): Promise<void>;
  /** Whether this version's image (this ID) is installed for the app. */
  isInstalled(app: string, version: number, image: string): boolean;
  /** The app's active version (null: none). */
  active(app: string): number | null;
  /** Drops an installed version that is not active nor kept for rollback (one that failed to deploy). */
  discard(app: string, version: number): Promise<void>;
  /** `containers.remove`: the app's containers and images gone from this device. */
  removeApp(app: string): Promise<CommandResult<'containers.remove'>>;
  /** Whether `infer {model}` names an image app that serves inference here. */
  serves(model: string): boolean;
  /** An inference through the app's container, in the form of the request (see traffic.ts). */
  answer(params: InferParams, binary?: Uint8Array): Promise<InferAnswer>;
  /** Inference counts through image apps since the previous call, keyed `app@version`. */
  drainHealth(): Record<string, ModelHealth>;
  /** stop-then-download: make room before the download (stop the app, drop kept images); no-op for download-then-replace. */
  prepareDownload(manifest: Manifest): Promise<void>;
  installImage(manifest: Manifest, archivePath: string, opts?: InstallOptions): Promise<InstallResult>;
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
  return new Containers(opts, await AppStore.open(opts.dataDir));
}

class Containers implements ContainerService {
  readonly engine: Engine;
  readonly runtime: ContainerRuntime;
  readonly board: BoardPlatform;
  readonly traffic: AppTraffic;
  private readonly log: Logger;
  private modelDir: (model: string) => string | undefined = () => undefined;
  private readonly locks = new Map<string, Promise<unknown>>();
  private closing = false;
  private reconciling: Promise<void> = Promise.resolve();
  private starting: Promise<EngineStatus> | undefined;
  /** Aborted by close(): a deploy waiting for a health check gives up (and is undone) instead of holding up the shutdown. */
  private readonly shutdown = new AbortController();

  constructor(
    private readonly opts: ContainerServiceOptions,
    private readonly store: AppStore,
  ) {
    this.log = opts.logger.child({ part: 'containers' });
    this.engine = openEngine({ device: opts.device, socketPath: opts.socketPath });
    this.board = opts.board ?? boardPlatform();
    this.traffic = new AppTraffic(this.engine, this.log);
    // a runtime container is created only after start() removed those an earlier run left behind
    this.runtime = createContainerRuntime({ device: opts.device, dataDir: opts.dataDir, engine: this.engine, board: this.board, logger: this.log, ready: () => this.start() });
  }

  private deps(): ExecutorDeps {
    return {
      device: this.opts.device,
      dataDir: this.opts.dataDir,
      engine: this.engine,
      store: this.store,
      logger: this.log,
      modelDir: this.modelDir,
      signal: this.shutdown.signal,
      traffic: this.traffic,
    };
  }

  /** One operation per app at a time (install, deploy, rollback, stop, start). */
  private exclusive<T>(app: string, fn: () => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(new FleetError('unavailable', 'the agent is shutting down'));
    const run = (this.locks.get(app) ?? Promise.resolve()).then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(app, tail);
    void tail.then(() => this.locks.get(app) === tail && this.locks.delete(app));
    return run;
  }

  private async appContainers(app: string): Promise<OwnedContainer[]> {
    return (await this.engine.listOwned(app)).filter((c) => c.role === 'app');
  }

  /**
   * Images that pruning this app leaves alone: those other containers run (inference containers, other apps).
   * Images shared with other apps' releases need no care here: pruning removes only this app's own tag.
   */
  private async imagesInUse(app: string): Promise<Set<string>> {
    const ids = new Set<string>();
    for (const c of await this.engine.listOwned()) if (c.app !== app || c.role !== 'app') ids.add(c.image);
    return ids;
  }

  private async runDeploy(app: string, version: number, mode: 'activate' | 'rollback'): Promise<DeployResult> {
    const record = this.store.record(app);
    const target = releaseOf(app, record, version);
    if (!target) {
      const installed = record.releases[String(version)];
      throw new FleetError('not_found', installed ? `${app}@${version} was installed without a container spec; nothing to run` : `${app}@${version} is not installed on this device; deliver the image first`);
    }
    const plan: Plan = planDeploy({ device: this.opts.device, target, mode, record, observed: await this.appContainers(app), imagesInUse: await this.imagesInUse(app) });
    this.log.info({ app, version, strategy: plan.strategy, steps: describePlan(plan) }, 'deploying');
    try {
      await executePlan(plan, this.deps());
    } catch (error) {
      await this.syncRoute(app);
      throw await this.deployFailed(plan, version, record.active, error);
    }
    await this.syncRoute(app);
    if (plan.strategy !== 'none') this.opts.publishEvent?.(makeEvent('container.activated', { app, version, previous: plan.previous, strategy: plan.strategy }));
    this.log.info({ app, version, previous: plan.previous, strategy: plan.strategy }, 'deployed');
    return { app, version, previous: plan.previous, strategy: plan.strategy };
  }

  /** Records and announces a failed deploy; the error to throw says which version runs now. */
  private async deployFailed(plan: Plan, version: number, active: number | null, error: unknown): Promise<FleetError> {
    const app = plan.app;
    const e = error instanceof FleetError ? error : new FleetError('internal', String(error));
    const restored = error instanceof PlanFailed && error.restored && plan.strategy !== 'start' ? active : null;
    await this.store.update(app, (r) => failed(r, version, e.toJSON(), Date.now())).catch((writeError: unknown) => this.log.warn({ err: writeError }, 'could not record the failure'));
    this.opts.publishEvent?.(makeEvent('container.failed', { app, version, error: e.toJSON(), restored }));
    const back = restored !== null ? `; version ${restored} was restored and keeps running` : plan.strategy === 'start' ? '' : '; the previous version could not be restored';
    return new FleetError(e.code, `${app}@${version}: ${e.message}${back}`);
  }

  /**
   * Points an inference app's requests at its active running container (a restarted one may have another
   * port), or nowhere when none runs. Called after every plan, so a route never outlives its container.
   */
  private async syncRoute(app: string): Promise<void> {
    const record = this.store.record(app);
    const release = releaseOf(app, record, record.active);
    const running = release?.spec.inference && !record.stopped ? (await this.appContainers(app)).find((c) => c.version === release.version && c.running) : undefined;
    if (!release || !running) return this.traffic.unroute(app);
    await this.traffic.route(app, release.version, running.name, release.spec).catch(async (error: unknown) => {
      this.log.warn({ err: error, app }, 'the active container does not serve inference; requests to the app are refused');
      await this.traffic.unroute(app);
    });
  }

  private activeOrThrow(app: string): number {
    const active = this.store.record(app).active;
    if (active === null) throw new FleetError('not_found', `app ${app} has no active version on this device${this.store.apps().length ? ` (apps: ${this.store.apps().join(', ')})` : ''}`);
    return active;
  }

  start(): Promise<EngineStatus> {
    this.starting ??= (async () => {
      const status = await this.engine.status();
      if (!status.available) {
        this.log.warn({ reason: status.reason }, 'no Docker engine: containers are off until one answers');
        this.starting = undefined; // the next call tries again
        return status;
      }
      await this.runtime.removeStale();
      // in the background: bringing an app back may wait for its health check, which must not hold up the agent
      this.reconciling = this.reconcile();
      return status;
    })();
    return this.starting;
  }

  private async reconcile(): Promise<void> {
    for (const app of this.store.apps()) {
      if (this.closing) break;
      const r = this.store.record(app);
      if (r.active === null || r.stopped) continue;
      const version = r.active;
      await this.exclusive(app, () => this.runDeploy(app, version, 'activate')).catch((error: unknown) => this.log.error({ err: error, app }, 'could not bring the app back to its recorded version'));
    }
  }

  engineStatus(): Promise<EngineStatus> {
    return this.engine.status();
  }

  checkManifest(manifest: Manifest): FleetError | undefined {
    return checkImageManifest(manifest, this.board);
  }

  async checkOffer(manifest: Manifest): Promise<void> {
    const refusal = this.checkManifest(manifest);
    if (refusal) throw refusal;
    const status = await this.engine.status(BUSY_ENGINE_MS);
    if (!status.available) throw new FleetError('unavailable', `no Docker engine answers on this device (${status.reason ?? 'unknown reason'}); start it, then deliver ${manifest.name}@${manifest.version} again`);
  }

  isInstalled(app: string, version: number, image: string): boolean {
    return this.store.record(app).releases[String(version)]?.image === image;
  }

  active(app: string): number | null {
    return this.store.record(app).active;
  }

  discard(app: string, version: number): Promise<void> {
    return this.exclusive(app, async () => {
      const record = this.store.record(app);
      const installed = record.releases[String(version)];
      if (!installed || record.active === version || record.history.includes(version)) return;
      if (installed.preexisting || (await this.imagesInUse(app)).has(installed.image)) {
        await this.store.update(app, (r) => {
          const releases = { ...r.releases };
          delete releases[String(version)];
          return { ...r, releases };
        });
        return;
      }
      await executePlan({ app, strategy: 'none', target: record.active, previous: null, steps: [{ step: { action: 'removeImage', app, version, image: installed.image }, undo: [], critical: false }] }, this.deps());
    });
  }

  removeApp(app: string): Promise<CommandResult<'containers.remove'>> {
    return this.exclusive(app, async () => {
      const record = this.store.record(app);
      const observed = await this.appContainers(app);
      if (observed.length === 0 && Object.keys(record.releases).length === 0 && record.active === null) return { app, removed: false, containers: 0, images: 0 };
      const plan = planRemove(app, record, observed, await this.imagesInUse(app));
      this.log.info({ app, steps: describePlan(plan) }, 'removing the app');
      await executePlan(plan, this.deps());
      return { app, removed: true, containers: observed.length, images: plan.steps.filter((p) => p.step.action === 'removeImage').length };
    });
  }

  serves(model: string): boolean {
    if (this.traffic.serves(model)) return true;
    // an inference app that is stopped or between containers is still this app: its requests are refused as unavailable
    const record = this.store.record(model);
    return releaseOf(model, record, record.active)?.spec.inference !== undefined;
  }

  answer(params: InferParams, binary?: Uint8Array): Promise<InferAnswer> {
    if (this.closing) return Promise.reject(new FleetError('unavailable', 'the agent is shutting down'));
    return this.traffic.answer(params, binary);
  }

  drainHealth(): Record<string, ModelHealth> {
    return this.traffic.drainHealth();
  }

  prepareDownload(manifest: Manifest): Promise<void> {
    if (manifest.container?.update.strategy !== 'stop-then-download') return Promise.resolve();
    return this.exclusive(manifest.name, async () => {
      const plan = planMakeRoom(manifest.name, this.store.record(manifest.name), await this.appContainers(manifest.name), await this.imagesInUse(manifest.name));
      this.log.info({ app: manifest.name, steps: describePlan(plan) }, 'making room before the download');
      await executePlan(plan, this.deps());
      await this.syncRoute(manifest.name);
    });
  }

  installImage(manifest: Manifest, archivePath: string, opts: InstallOptions = {}): Promise<InstallResult> {
    const deps = { device: this.opts.device, board: this.board, engine: this.engine, store: this.store, logger: this.log, engineRoot: this.opts.engineRoot };
    return this.exclusive(manifest.name, () => installImage(manifest, archivePath, deps, opts));
  }

  deploy(app: string, version: number): Promise<DeployResult> {
    return this.exclusive(app, () => this.runDeploy(app, version, 'activate'));
  }

  rollback(app: string): Promise<DeployResult> {
    return this.exclusive(app, async () => {
      const record = this.store.record(app);
      const previous = [...record.history].reverse().find((v) => releaseOf(app, record, v));
      if (previous === undefined) throw new FleetError('not_found', `${app} has no previous version whose image is kept on this device`);
      return this.runDeploy(app, previous, 'rollback');
    });
  }

  stop(app: string): Promise<CommandResult<'containers.stop'>> {
    return this.exclusive(app, async () => {
      const version = this.activeOrThrow(app);
      const observed = await this.appContainers(app);
      const wasRunning = observed.some((c) => c.version === version && c.running);
      await executePlan(planStop(this.opts.device, app, this.store.record(app), observed), this.deps());
      await this.syncRoute(app);
      return { app, version, stopped: wasRunning };
    });
  }

  startApp(app: string): Promise<CommandResult<'containers.start'>> {
    return this.exclusive(app, async () => {
      const version = this.activeOrThrow(app);
      const wasRunning = (await this.appContainers(app)).some((c) => c.version === version && c.running);
      await this.runDeploy(app, version, 'activate');
      return { app, version, started: !wasRunning };
    });
  }

  async logs(app: string, lines: number): Promise<CommandResult<'containers.logs'>> {
    const active = this.store.record(app).active;
    const mine = await this.engine.listOwned(app);
    const c = mine.find((o) => o.role === 'app' && o.version === active) ?? mine.at(-1);
    if (!c) throw new FleetError('not_found', `no container of ${app} runs on this device`);
    return { app, container: c.name, lines: await this.engine.logs(c.id, lines) };
  }

  async list(): Promise<CommandResult<'containers.list'>> {
    const status = await this.engine.status();
    const containers = status.available ? (await this.engine.listOwned()).map(publicState) : [];
    const apps = this.store.apps().map((app) => {
      const r = this.store.record(app);
      const images = Object.entries(r.releases)
        .map(([v, i]) => ({ version: Number(v), image: i.image }))
        .sort((a, b) => a.version - b.version);
      return { app, active: r.active, images, lastFailure: r.lastFailure };
    });
    return { engine: { available: status.available, version: status.version, reason: status.reason }, containers, apps };
  }

  async states(): Promise<ContainerState[]> {
    if (!(await this.engine.status()).available) return [];
    return (await this.engine.listOwned()).map(publicState);
  }

  highestAccepted(app: string): number {
    return this.store.record(app).highestAccepted;
  }

  async recordAccepted(app: string, version: number): Promise<void> {
    if (version <= this.store.record(app).highestAccepted) return;
    await this.store.update(app, (r) => ({ ...r, highestAccepted: Math.max(r.highestAccepted, version) }));
  }

  useModels(activeVersion: (model: string) => number | undefined): void {
    this.modelDir = (model) => {
      const version = activeVersion(model);
      return version === undefined ? undefined : modelVersionDir(this.opts.dataDir, model, version);
    };
  }

  async close(): Promise<void> {
    this.closing = true;
    this.shutdown.abort();
    await this.reconciling;
    await Promise.all([...this.locks.values()]);
    await this.traffic.close();
  }
}
