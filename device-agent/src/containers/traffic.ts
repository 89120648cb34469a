/**
 * Inference through image apps whose container spec has `inference` (an OIP server): the agent answers
 * `infer {model: <app>}` by forwarding to the app's active container, and counts requests, errors and
 * latency per `app@version` exactly as it does for a model, so a rollout's gate reads the same figures.
 *
 * A replace moves the route once the new container is healthy and answers its metadata, then waits for the
 * requests still with the old one before the plan stops it: under load, no request fails (blue/green).
 */
import type { Logger } from 'pino';
import { FleetError } from '@edgefleet/protocol';
import type { ContainerSpec, TensorInfo } from '@edgefleet/protocol';
import { HealthCounters, answerRequest, prepareRequest, tensorInfo } from '../models/index.js';
import type { InferAnswer, InferParams, ServedModel } from '../models/index.js';
import type { Engine } from './engine.js';
import { hostPort } from './health.js';
import { OipClient } from './oip-client.js';
import { containerSession } from './runtime.js';
import type { ContainerSession } from './runtime.js';

/** How long a switch waits for requests still with the old container before the plan goes on and stops it. */
const DRAIN_MS = 30_000;

interface Route {
  app: string;
  version: number;
  container: string;
  /** The host port the route reaches the container on (a restarted container may get another one). */
  port: number;
  session: ContainerSession;
  inputs: TensorInfo[];
  inflight: number;
  drained: (() => void)[];
}

export class AppTraffic {
  private readonly routes = new Map<string, Route>();
  private readonly health = new HealthCounters();
  private readonly log: Logger;

  constructor(
    private readonly engine: Engine,
    logger: Logger,
  ) {
    this.log = logger.child({ part: 'traffic' });
  }

  /** Whether `infer {model: app}` goes to a container of this app. */
  serves(app: string): boolean {
    return this.routes.has(app);
  }

  /** The container the app's requests go to now (undefined: none). */
  routed(app: string): { version: number; container: string; port: number } | undefined {
    const r = this.routes.get(app);
    return r ? { version: r.version, container: r.container, port: r.port } : undefined;
  }

  /**
   * Sends the app's requests to `container` from now on (its OIP metadata must answer first, or this throws
   * and the route stays as it was), then waits until the previous container has answered what it holds.
   */
  async route(app: string, version: number, container: string, spec: ContainerSpec): Promise<void> {
    const inference = spec.inference;
    if (!inference) return;
    const running = await this.engine.inspectOwned(container);
    const port = running?.running ? hostPort(running, inference.port) : undefined;
    if (port === undefined) throw new FleetError('smoke_test_failed', `${container} does not publish its inference port ${inference.port}; nothing to send requests to`);
    const current = this.routes.get(app);
    if (current && current.container === container && current.port === port) return;
    const client = new OipClient(port);
    const model = inference.model ?? app;
    let next: Route;
    try {
      const [server, meta] = await Promise.all([client.server(), client.model(model)]);
      const binary = Array.isArray(server.extensions) && server.extensions.includes('binary_tensor_data');
      const session = containerSession(client, model, meta, binary, container, async () => client.close());
      next = { app, version, container, port, session, inputs: session.inputMetadata.map(tensorInfo), inflight: 0, drained: [] };
    } catch (error) {
      client.close();
      const reason = error instanceof FleetError ? error.message : String(error);
      throw new FleetError('smoke_test_failed', `${container} does not serve model ${model} over the Open Inference Protocol: ${reason}`);
    }
    this.routes.set(app, next);
    this.log.info({ app, version, container, port, previous: current?.container ?? null }, 'inference requests go to the new container');
    if (current) await this.retire(current);
  }

  /** No more requests to the app (stopped, removed, or its container gone); those in flight finish. */
  async unroute(app: string): Promise<void> {
    const current = this.routes.get(app);
    if (!current) return;
    this.routes.delete(app);
    await this.retire(current);
  }

  /**
   * One request in either form (tensor map or Open Inference Protocol, JSON or binary tensors), checked and
   * answered exactly as the model service does it (models/infer.ts), through the app's container.
   */
  async answer(params: InferParams, binary?: Uint8Array): Promise<InferAnswer> {
    const r = this.routes.get(params.model);
    if (!r) throw new FleetError('unavailable', `app ${params.model} has no running container on this device`);
    const key = `${r.app}@${r.version}`;
    if (params.version !== undefined && params.version !== r.version) throw new FleetError('not_found', `${params.model}@${params.version} is not being served; the active version is ${r.version}`);
    const served: ServedModel = { name: r.app, version: r.version, key, inputs: r.inputs, outputNames: r.session.outputNames, processing: undefined };
    // taking the route and counting in flight happen in one synchronous step: a switch cannot fall between
    r.inflight++;
    const t0 = performance.now();
    let ok = false;
    try {
      const prepared = await prepareRequest(served, params, binary);
      const results = await r.session.run(prepared.feeds);
      const answer = answerRequest(served, params, prepared, results, performance.now() - t0, true);
      ok = true;
      return answer;
    } finally {
      this.health.record(key, performance.now() - t0, ok);
      if (--r.inflight === 0) for (const wake of r.drained.splice(0)) wake();
    }
  }

  /** Counts since the previous call, keyed `app@version` (merged into the telemetry's per-model health). */
  drainHealth(): ReturnType<HealthCounters['drain']> {
    return this.health.drain();
  }

  async close(): Promise<void> {
    for (const app of [...this.routes.keys()]) await this.unroute(app);
  }

  /** Waits (bounded) for the requests a replaced route still holds, then lets its client go. */
  private async retire(old: Route): Promise<void> {
    if (old.inflight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => old.drained.push(resolve)),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, DRAIN_MS);
        }),
      ]).finally(() => clearTimeout(timer));
      if (old.inflight > 0) this.log.warn({ app: old.app, container: old.container, inflight: old.inflight }, 'requests still with the old container after the drain deadline');
    }
    await old.session.release();
  }
}
