/**
 * ModelService: one onnxruntime session per active model, activation with hot swap, rollback, removal,
 * anti-rollback bookkeeping, health counters. The contract is the `ModelService` interface below.
 *
 * A large model's session lives on a worker thread of its own (session.ts), so building a new version
 * of it and running it do not pause this thread's MQTT and HTTP traffic or the other models.
 *
 * Hot swap: the new version is loaded beside the old one and smoke-tested, state.json is written, then
 * `serving.set(name, next)` switches every later request in one step. A request takes its session
 * reference and counts itself in-flight in the same synchronous step, so the old session is released only
 * after the requests that took it have answered. Any failure before the switch releases the new session
 * and leaves the old one serving.
 */
import { readFile, stat, unlink } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import ort from 'onnxruntime-node';
import { createHash } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { FleetError, activationCheck, checkAcceptance, isRollbackBelow, verifiedManifest } from '@edgefleet/protocol';
import type {
  CommandResult,
  DeviceIdentity,
  Manifest,
  ModelHealth,
  ModelState,
  Processing,
  SignedManifest,
  TensorInfo,
} from '@edgefleet/protocol';
import type { Logger } from 'pino';
import { readOnnxMetadata } from '@edgefleet/onnx';
import { checkProcessing } from '../processing/index.js';
import { checkActivation } from './check.js';
import { answerRequest, prepareRequest } from './infer.js';
import type { InferAnswer, InferParams, OipParams, TensorMapParams, TensorMapResult } from './infer.js';
import { HealthCounters } from './health.js';
import { ModelStore } from './store.js';
import type { StepHook } from './store.js';
import { openSession } from './session.js';
import type { Session } from './session.js';
import { tensorInfo } from './tensors.js';
import type { OrtTensor } from './tensors.js';

export type ActivationResult = { model: string; version: number; previous: number | null };
export type GraphOptimizationLevel = 'disabled' | 'basic' | 'extended' | 'all';

export interface ModelService {
  list(): ModelState[];
  describe(name: string, version?: number): { name: string; version: number; inputs: TensorInfo[]; outputs: TensorInfo[] };
  /** One request (either form, see infer.ts), its outputs as JSON. */
  infer(params: TensorMapParams): Promise<TensorMapResult>;
  infer(params: OipParams, binary?: Uint8Array): Promise<Extract<CommandResult<'infer'>, { model_name: string }>>;
  infer(params: InferParams, binary?: Uint8Array): Promise<CommandResult<'infer'>>;
  /** One request with its binary part (the Open Inference Protocol's binary tensors); binary outputs where asked. */
  answer(params: InferParams, binary?: Uint8Array): Promise<InferAnswer>;
  /** Stores (part of) the sample request a version's manifest names by hash, delivered with models.sample. */
  receiveSample(name: string, version: number, offset: number, bytes: Uint8Array | undefined): Promise<CommandResult<'models.sample'>>;
  /** Moves a verified file into the store atomically (fsync + rename); does not activate. */
  install(manifest: Manifest, stagedFile: string): Promise<void>;
  /** Load beside the old session, smoke-test, switch atomically, drain the old one. Failure leaves the old serving. */
  activate(name: string, version: number): Promise<ActivationResult>;
  rollback(name: string, signed?: SignedManifest): Promise<ActivationResult>;
  remove(name: string, version: number): Promise<{ removed: boolean }>;
  highestAccepted(name: string): number;
  /** The highest rollback sequence number this device used for the model (persisted), or 0. */
  lastRollbackSeq(name: string): number;
  recordAccepted(name: string, version: number): Promise<void>;
  active(): { name: string; version: number }[];
  drainHealth(): Record<string, ModelHealth>;
  runtime(): { version: string; executionProviders: string[] };
  close(): Promise<void>;
}

export interface ModelServiceOptions {
  dataDir: string;
  /** Intra-op threads per session; default max(1, cores - 1). Spinning is always off. */
  threads?: number;
  /** Models of at least this many bytes are built and run on a worker thread of their own (session.ts); default 8 MiB. */
  workerSessionBytes?: number;
  /** Previously active versions kept on disk for instant rollback; default 2. */
  keepVersions?: number;
  logger: Logger;
  graphOptimizationLevel?: GraphOptimizationLevel;
  /** Default ['cpu']. */
  executionProviders?: string[];
  /** The fleet public key: needed (with `identity`) to accept an operator-signed rollback below the highest accepted version. */
  publicKeyPem?: string;
  /** This device, to check a signed rollback manifest's target (checkAcceptance). */
  identity?: DeviceIdentity;
  /** Called at named points of installs and activations (crash tests kill the process from here). */
  onStep?: StepHook;
  /** A session from another runtime (a container) when the manifest names one; undefined: onnxruntime in-process. */
  openRuntime?: (request: { name: string; version: number; manifest: Manifest; modelFile: string }) => Promise<Session> | undefined;
  now?: () => Date;
}

interface Loaded {
  /** Time to build the session (on a worker: including starting it; inline: this thread was blocked meanwhile). */
  loadMs: number;
  name: string;
  version: number;
  key: string;
  session: Session;
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  outputNames: readonly string[];
  processing: Processing | undefined;
  inflight: number;
  idle: (() => void) | undefined;
}

const firstLine = (error: unknown) => String((error as Error)?.message ?? error).split('\n')[0]?.slice(0, 300) ?? '';

/** sha256 of a large buffer, 1 MiB at a time, yielding between slices so requests keep being served. */
async function hashInSlices(bytes: Uint8Array): Promise<string> {
  const hash = createHash('sha256');
  const slice = 1024 * 1024;
  for (let offset = 0; offset < bytes.length; offset += slice) {
    hash.update(bytes.subarray(offset, offset + slice));
    if (offset + slice < bytes.length) await nextTurn();
  }
  return hash.digest('hex');
}

export async function createModelService(opts: ModelServiceOptions): Promise<ModelService> {
  const store = await ModelStore.open(opts.dataDir, opts.logger, opts.onStep);
  const service = new OnnxModelService(store, opts);
  await service.start();
  return service;
}

class OnnxModelService implements ModelService {
  private readonly serving = new Map<string, Loaded>();
  private readonly draining = new Set<Loaded>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly health = new HealthCounters();
  private readonly logger: Logger;
  private readonly keepVersions: number;
  private readonly executionProviders: string[];
  private readonly sessionOptions: ort.InferenceSession.SessionOptions;
  private closing = false;

  constructor(
    private readonly store: ModelStore,
    private readonly opts: ModelServiceOptions,
  ) {
    this.logger = opts.logger;
    this.keepVersions = Math.max(0, opts.keepVersions ?? 2);
    this.executionProviders = opts.executionProviders ?? ['cpu'];
    this.sessionOptions = {
      executionProviders: this.executionProviders,
      intraOpNumThreads: Math.max(1, opts.threads ?? availableParallelism() - 1),
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: opts.graphOptimizationLevel ?? 'all',
      // Failures reach the caller as FleetErrors with onnxruntime's message; keep its own logging quiet.
      logSeverityLevel: 4,
      // Idle intra-op threads must not spin: on 2-4 core boards they would keep cores busy after every run.
      extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    };
  }

  /** Loads the active version of every model; falls back to earlier versions if one no longer loads. */
  async start(): Promise<void> {
    for (const [name, record] of Object.entries(this.store.state.models)) {
      if (record.active === null) continue;
      const candidates = [record.active, ...[...record.history].reverse()];
      for (const version of candidates) {
        const stored = this.store.get(name, version);
        if (!stored) {
          this.logger.error({ model: name, version }, 'active model version is missing from the store');
          continue;
        }
        try {
          const loaded = await this.load(name, version, stored.manifest);
          await this.check(loaded, stored.manifest).catch(async (error: unknown) => {
            await loaded.session.release();
            throw error;
          });
          this.serving.set(name, loaded);
          if (version !== record.active) {
            this.logger.error({ model: name, version, wanted: record.active }, 'serving an earlier version: the active one no longer loads');
            await this.store.updateRecord(name, (r) => ({ ...r, active: version, history: r.history.filter((v) => v !== version) }));
          }
          this.logger.info({ model: name, version }, 'model loaded');
          break;
        } catch (error) {
          this.logger.error({ err: error, model: name, version }, 'stored model version does not load');
        }
      }
    }
  }

  // ---------------------------------------------------------------- queries

  list(): ModelState[] {
    const names = new Set([...this.store.installed.keys(), ...Object.keys(this.store.state.models), ...this.serving.keys()]);
    return [...names].sort().map((name) => {
      const loaded = this.serving.get(name);
      const state: ModelState = { name, active: loaded?.version ?? null, versions: this.store.versions(name) };
      if (loaded) {
        state.inputs = loaded.inputs;
        state.outputs = loaded.outputs;
      }
      return state;
    });
  }

  describe(name: string, version?: number): { name: string; version: number; inputs: TensorInfo[]; outputs: TensorInfo[] } {
    const loaded = this.serving.get(name);
    const v = version ?? loaded?.version;
    if (v === undefined) {
      throw new FleetError('not_found', `model "${name}" has no active version on this device${this.installedText(name)}`);
    }
    if (loaded?.version === v) return { name, version: v, inputs: loaded.inputs, outputs: loaded.outputs };
    const stored = this.store.get(name, v);
    if (!stored) throw new FleetError('not_found', `${name}@${v} is not installed on this device${this.installedText(name)}`);
    return { name, version: v, inputs: stored.info.inputs, outputs: stored.info.outputs };
  }

  active(): { name: string; version: number }[] {
    return [...this.serving.values()].map((l) => ({ name: l.name, version: l.version })).sort((a, b) => a.name.localeCompare(b.name));
  }

  highestAccepted(name: string): number {
    return this.store.record(name).highestAccepted;
  }

  drainHealth(): Record<string, ModelHealth> {
    return this.health.drain();
  }

  runtime(): { version: string; executionProviders: string[] } {
    return { version: ort.env.versions.node ?? ort.env.versions.common, executionProviders: [...this.executionProviders] };
  }

  private installedText(name: string): string {
    const versions = this.store.versions(name);
    return versions.length > 0 ? ` (installed versions: ${versions.join(', ')})` : '';
  }

  // ---------------------------------------------------------------- inference

  infer(params: TensorMapParams): Promise<TensorMapResult>;
  infer(params: OipParams, binary?: Uint8Array): Promise<Extract<CommandResult<'infer'>, { model_name: string }>>;
  infer(params: InferParams, binary?: Uint8Array): Promise<CommandResult<'infer'>>;
  async infer(params: InferParams, binary?: Uint8Array): Promise<CommandResult<'infer'>> {
    return (await this.serve(params, binary, false)).result;
  }

  answer(params: InferParams, binary?: Uint8Array): Promise<InferAnswer> {
    return this.serve(params, binary, true);
  }

  private async serve(params: InferParams, binary: Uint8Array | undefined, binaryAllowed: boolean): Promise<InferAnswer> {
    if (this.closing) throw new FleetError('unavailable', 'the model service is shutting down; retry on another device or later');
    const loaded = this.serving.get(params.model);
    if (!loaded) throw new FleetError('not_found', `model "${params.model}" is not active on this device${this.installedText(params.model)}`);
    if (params.version !== undefined && params.version !== loaded.version) {
      throw new FleetError('not_found', `${params.model}@${params.version} is not being served; the active version is ${loaded.version}`);
    }
    // Taking the reference and counting in-flight happen in one synchronous step: a swap cannot fall between.
    loaded.inflight++;
    const t0 = performance.now();
    let ok = false;
    try {
      const prepared = await prepareRequest(loaded, params, binary);
      let results: Record<string, OrtTensor>;
      try {
        results = await loaded.session.run(prepared.feeds);
      } catch (error) {
        throw new FleetError('internal', `${loaded.key} failed at run time: ${firstLine(error)}`);
      }
      const answer = answerRequest(loaded, params, prepared, results, performance.now() - t0, binaryAllowed);
      ok = true;
      return answer;
    } finally {
      this.health.record(loaded.key, performance.now() - t0, ok);
      if (--loaded.inflight === 0) loaded.idle?.();
    }
  }

  receiveSample(name: string, version: number, offset: number, bytes: Uint8Array | undefined): Promise<CommandResult<'models.sample'>> {
    return this.exclusive(name, async () => {
      this.assertOpen();
      const stored = this.store.get(name, version);
      if (!stored) {
        throw new FleetError('not_found', `${name}@${version} is not installed on this device; send the version first (transfer.commit with activate: false), then its sample`);
      }
      const sample = activationCheck(stored.manifest).sample;
      if (!sample || !('sha256' in sample)) {
        throw new FleetError('invalid_params', `${name}@${version}'s manifest names no sample by hash (check.sample.sha256); an inline sample needs no delivery`);
      }
      if (bytes === undefined) throw new FleetError('invalid_params', "send the sample's bytes as the binary part of a framed payload");
      return this.store.receiveSample(name, version, offset, bytes, sample);
    });
  }

  // ---------------------------------------------------------------- install / activate / rollback / remove

  install(manifest: Manifest, stagedFile: string): Promise<void> {
    return this.exclusive(manifest.name, async () => {
      this.assertOpen();
      const { name, version } = manifest;
      if (manifest.kind !== 'model') throw new FleetError('invalid_params', `${name}@${version} is a ${manifest.kind} manifest, not a model`);
      this.store.versionDir(name, version); // validates the name and version before touching the disk
      let size: number;
      try {
        size = (await stat(stagedFile)).size;
      } catch {
        throw new FleetError('not_found', `staged file for ${name}@${version} is missing (${stagedFile}); send the model again`);
      }
      if (size < manifest.length) {
        throw new FleetError('truncated', `${name}@${version} is ${size} bytes, the manifest says ${manifest.length}; resume the transfer`);
      }
      if (size > manifest.length) {
        throw new FleetError('too_long', `${name}@${version} is ${size} bytes, longer than the ${manifest.length} the manifest declares`);
      }
      const bytes = await readFile(stagedFile);
      const sha256 = await hashInSlices(bytes);
      if (sha256 !== manifest.sha256) {
        throw new FleetError('corrupt_chunk', `${name}@${version} has sha256 ${sha256}, the manifest says ${manifest.sha256}; send it again`);
      }
      const onnxInfo = readOnnxMetadata(bytes, `${name}@${version}`);
      const existing = this.store.get(name, version);
      if (existing) {
        if (existing.info.sha256 === sha256) {
          await unlink(stagedFile).catch(() => undefined); // already stored: the staged copy is surplus
          return;
        }
        if (this.serving.get(name)?.version === version) {
          throw new FleetError('conflict', `${name}@${version} is active with different bytes; a new build needs a new version number`);
        }
        await this.store.deleteVersion(name, version);
      }
      await this.store.install(manifest, { ...onnxInfo, sha256, length: size }, stagedFile);
      this.logger.info({ model: name, version, bytes: size }, 'model installed');
    });
  }

  activate(name: string, version: number): Promise<ActivationResult> {
    return this.exclusive(name, () => this.switchTo(name, version, 'activate'));
  }

  rollback(name: string, signed?: SignedManifest): Promise<ActivationResult> {
    return this.exclusive(name, async () => {
      this.assertOpen();
      const record = this.store.record(name);
      if (!signed) {
        const previous = [...record.history].reverse().find((v) => this.store.has(name, v));
        if (previous === undefined) throw new FleetError('not_found', `${name} has no previous version on this device to roll back to`);
        // Below the highest accepted only with a fresh signed rollback: a stored rollback manifest was used up when it was used.
        if (previous < record.highestAccepted) {
          throw new FleetError(
            'lower_version',
            `rolling ${name} back to version ${previous}, below version ${record.highestAccepted} already accepted, needs a fresh rollback manifest signed by the operator`,
          );
        }
        return this.switchTo(name, previous, 'rollback');
      }
      const manifest = this.verifyRollback(name, signed, record);
      const stored = this.store.get(name, manifest.version);
      if (!stored) {
        throw new FleetError('not_found', `${name}@${manifest.version} is no longer stored on this device; deliver it again with the signed rollback manifest`);
      }
      if (stored.info.sha256 !== manifest.sha256) {
        throw new FleetError('bad_signature', `the signed manifest for ${name}@${manifest.version} names sha256 ${manifest.sha256}, but the stored file is ${stored.info.sha256}`);
      }
      if (isRollbackBelow(manifest, record.highestAccepted)) {
        // Used up before the switch, durably (fsync), so a crash in between cannot leave it usable again.
        const seq = manifest.rollbackSeq ?? 0;
        await this.store.updateRecord(name, (r) => ({ ...r, rollbackSeq: Math.max(r.rollbackSeq, seq) }), 'rollback:seq');
      }
      return this.switchTo(name, manifest.version, 'rollback');
    });
  }

  remove(name: string, version: number): Promise<{ removed: boolean }> {
    return this.exclusive(name, async () => {
      this.assertOpen();
      this.store.versionDir(name, version);
      if (this.serving.get(name)?.version === version || this.store.record(name).active === version) {
        throw new FleetError('conflict', `${name}@${version} is the active version; activate or roll back to another version before removing it`);
      }
      if (!this.store.has(name, version)) return { removed: false };
      if (this.store.record(name).history.includes(version)) {
        await this.store.updateRecord(name, (r) => ({ ...r, history: r.history.filter((v) => v !== version) }), 'remove:state');
      }
      await this.store.deleteVersion(name, version);
      this.logger.info({ model: name, version }, 'model version removed');
      return { removed: true };
    });
  }

  lastRollbackSeq(name: string): number {
    return this.store.record(name).rollbackSeq;
  }

  async recordAccepted(name: string, version: number): Promise<void> {
    this.store.modelDir(name);
    if (version <= this.store.record(name).highestAccepted) return;
    await this.store.updateRecord(name, (r) => ({ ...r, highestAccepted: Math.max(r.highestAccepted, version) }), 'accept:state');
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.locks.values()]);
    const all = [...this.serving.values(), ...this.draining];
    await Promise.all(all.map((l) => this.drain(l)));
    await Promise.all(all.map((l) => l.session.release().catch(() => undefined))); // closing: nothing left to tell
    this.serving.clear();
    this.draining.clear();
  }

  // ---------------------------------------------------------------- internals

  private assertOpen(): void {
    if (this.closing) throw new FleetError('unavailable', 'the model service is shutting down');
  }

  /** Runs operations on one model one at a time (install, activate, rollback, remove). */
  private exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(name) ?? Promise.resolve();
    const run = previous.then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(name, tail);
    void tail.then(() => {
      if (this.locks.get(name) === tail) this.locks.delete(name);
    });
    return run;
  }

  private async switchTo(name: string, version: number, mode: 'activate' | 'rollback'): Promise<ActivationResult> {
    this.assertOpen();
    const record = this.store.record(name);
    const current = this.serving.get(name);
    if (current?.version === version) return { model: name, version, previous: record.history.at(-1) ?? null };
    const stored = this.store.get(name, version);
    if (!stored) throw new FleetError('not_found', `${name}@${version} is not installed on this device${this.installedText(name)}; send it first`);
    if (mode === 'activate' && version < record.highestAccepted) {
      throw new FleetError(
        'lower_version',
        `${name}@${version} is lower than version ${record.highestAccepted} already accepted; roll back with a fresh operator-signed manifest instead`,
      );
    }
    const next = await this.load(name, version, stored.manifest);
    try {
      await this.opts.onStep?.('activate:loaded');
      const smokeStart = performance.now();
      const checked = await this.check(next, stored.manifest);
      const smokeMs = performance.now() - smokeStart;
      const previous = current?.version ?? record.active;
      const t0 = performance.now();
      const updated = await this.store.updateRecord(
        name,
        (r) => {
          const history = r.history.filter((v) => v !== version);
          if (mode === 'activate' && previous !== null && previous !== version) history.push(previous);
          return {
            ...r,
            active: version,
            history: this.keepVersions > 0 ? history.slice(-this.keepVersions) : [],
            highestAccepted: Math.max(r.highestAccepted, version),
          };
        },
        'activate:state',
      );
      await this.opts.onStep?.('activate:state-saved');
      // The switch: every request from here on takes the new session.
      this.serving.set(name, next);
      const ms = (v: number) => Math.round(v * 100) / 100;
      this.logger.info(
        { model: name, version, previous, mode, check: checked.policy, loadMs: ms(next.loadMs), smokeMs: ms(smokeMs), stateWriteMs: ms(performance.now() - t0) },
        'model activated',
      );
      if (current) {
        this.draining.add(current);
        await this.drain(current);
        await current.session.release().catch((error: unknown) => this.logger.warn({ err: error, model: current.key }, 'releasing the old session failed'));
        this.draining.delete(current);
      }
      await this.prune(name, version, updated.history);
      return { model: name, version, previous };
    } catch (error) {
      if (this.serving.get(name) !== next) {
        await next.session.release().catch(() => undefined); // it never served; the original error is what matters
      }
      const serving = this.serving.get(name);
      const outcome = serving ? `the previous version, ${serving.key}, keeps serving` : `no version of ${name} was serving before, so none is serving now`;
      this.logger.warn({ err: error, model: name, version, serving: serving?.version ?? null }, `activation failed; ${outcome}`);
      if (error instanceof FleetError && (error.code === 'load_failed' || error.code === 'smoke_test_failed')) {
        throw new FleetError(error.code, `${error.message.replace(/\.?$/, '.')} ${outcome[0]!.toUpperCase()}${outcome.slice(1)}.`);
      }
      throw error;
    }
  }

  /** Deletes versions below the active one that are neither active nor kept for rollback. */
  private async prune(name: string, active: number, kept: readonly number[]): Promise<void> {
    for (const v of this.store.versions(name)) {
      if (v === active || kept.includes(v) || v > active) continue;
      try {
        await this.store.deleteVersion(name, v);
        this.logger.info({ model: name, version: v }, 'old model version pruned');
      } catch (error) {
        this.logger.warn({ err: error, model: name, version: v }, 'could not prune an old model version');
      }
    }
  }

  private drain(loaded: Loaded): Promise<void> {
    if (loaded.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = loaded.idle;
      loaded.idle = () => {
        previous?.();
        resolve();
      };
    });
  }

  private async load(name: string, version: number, manifest: Manifest): Promise<Loaded> {
    const key = `${name}@${version}`;
    let bytes: Buffer;
    try {
      bytes = await readFile(this.store.modelFile(name, version));
    } catch {
      throw new FleetError('not_found', `${key}: its model file is missing from the store; send it again`);
    }
    readOnnxMetadata(bytes, key);
    let session: Session;
    const loadStart = performance.now();
    try {
      const runtime = this.opts.openRuntime?.({ name, version, manifest, modelFile: this.store.modelFile(name, version) });
      session = await (runtime ?? openSession(bytes, this.sessionOptions, bytes.length >= (this.opts.workerSessionBytes ?? 8 * 1024 * 1024) ? 'worker' : 'inline'));
    } catch (error) {
      if (error instanceof FleetError) throw error; // a runtime's own reason (a container that did not start)
      throw new FleetError('load_failed', `${key} does not load in onnxruntime ${this.runtime().version}: ${firstLine(error)}`);
    }
    const inputs = session.inputMetadata.map(tensorInfo);
    const outputs = session.outputMetadata.map(tensorInfo);
    if (manifest.processing) {
      try {
        checkProcessing(manifest.processing, key, inputs, outputs);
      } catch (error) {
        await session.release();
        throw error;
      }
    }
    const loadMs = performance.now() - loadStart;
    return { name, version, key, session, inputs, outputs, outputNames: session.outputNames, processing: manifest.processing, inflight: 0, idle: undefined, loadMs };
  }

  /** The manifest's activation check (check.ts), with the sample it names by hash read from the store. */
  private async check(loaded: Loaded, manifest: Manifest): Promise<{ policy: string }> {
    const sample = activationCheck(manifest).sample;
    const stored = sample && 'sha256' in sample ? await this.store.readSample(loaded.name, loaded.version) : undefined;
    return checkActivation({ ...loaded, run: (feeds) => loaded.session.run(feeds) }, manifest, stored);
  }

  private verifyRollback(name: string, signed: SignedManifest, record: { highestAccepted: number; rollbackSeq: number }): Manifest {
    const { publicKeyPem, identity } = this.opts;
    if (!publicKeyPem || !identity) {
      throw new FleetError('bad_signature', 'this device has no fleet public key (and identity) to verify a rollback manifest; provision it with the key');
    }
    const manifest = verifiedManifest(signed, publicKeyPem);
    if (manifest.name !== name || manifest.kind !== 'model') {
      throw new FleetError('invalid_params', `the rollback manifest is for ${manifest.kind} ${manifest.name}, not model ${name}`);
    }
    // the protocol's acceptance rules: target, expiry, and a version below the highest accepted only as a signed rollback with an unused sequence number
    const refused = checkAcceptance(manifest, { device: identity, highestAccepted: record.highestAccepted, lastRollbackSeq: record.rollbackSeq, now: this.opts.now?.() ?? new Date() });
    if (refused) throw refused;
    return manifest;
  }
}
