/**
 * Containers as inference runtimes. A model manifest with `container.inference` is served by a container
 * of the pinned image instead of an in-process onnxruntime session: the agent starts it with the model's
 * version directory mounted read-only at <modelRoot>/<model>/<version>/ (Triton's repository layout), waits
 * for its health check and `GET /v2/health/ready`, reads the model's metadata, and hands the model service
 * a `ContainerSession`: the same surface as an in-process session (inputMetadata, outputMetadata,
 * outputNames, run, release). The model service then does what it does for any session: smoke test,
 * atomic switch, telemetry per request, drain, release. So a hot swap starts the new container beside the
 * old one, checks it, switches, drains the old one and stops it (release).
 */
import { dirname } from 'node:path';
import type ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import { FleetError } from '@edgefleet/protocol';
import type { Manifest } from '@edgefleet/protocol';
import type { OrtTensor } from '../models/index.js';
import type { Session } from '../models/session.js';
import type { Engine } from './engine.js';
import { hostPort, waitHealthy } from './health.js';
import { containerName } from './labels.js';
import { OipClient } from './oip-client.js';
import type { OipModelMetadata, OipTensorMetadata } from './oip-client.js';
import { decodeInferResponse, dtypeOf, encodeInferRequest } from './oip-codec.js';
import { platformMismatch } from './platform.js';
import type { BoardPlatform } from './platform.js';
import { createOptions } from './spec.js';

/** What the model service knows when it loads a version. */
export interface RuntimeRequest {
  name: string;
  version: number;
  manifest: Manifest;
  /** The model file in the store: <dataDir>/models/<name>/<version>/model.onnx. */
  modelFile: string;
}

export interface ContainerSession extends Session {
  readonly container: string;
  readonly client: OipClient;
  /** Whether requests go as binary tensors (the runtime lists the `binary_tensor_data` extension). */
  readonly binary: boolean;
}

function valueMetadata(t: OipTensorMetadata, where: string): ort.InferenceSession.ValueMetadata {
  // -1 (dynamic) becomes an unnamed symbolic dimension, as onnxruntime reports one
  return { name: t.name, isTensor: true, type: dtypeOf(t.datatype, where) as ort.Tensor.Type, shape: t.shape.map((d) => (d < 0 ? '' : d)) };
}

/** A session that forwards every run to an OIP server; `release` is called once it has drained. */
export function containerSession(client: OipClient, model: string, meta: OipModelMetadata, binary: boolean, container: string, release: () => Promise<void>): ContainerSession {
  const where = `model ${model} in container ${container}`;
  const outputNames = meta.outputs.map((o) => o.name);
  return {
    container,
    client,
    binary,
    inputMetadata: meta.inputs.map((t) => valueMetadata(t, where)),
    outputMetadata: meta.outputs.map((t) => valueMetadata(t, where)),
    outputNames,
    async run(feeds: Record<string, OrtTensor>) {
      const { body, headers } = encodeInferRequest(feeds, outputNames, binary, where);
      const res = await client.infer(model, body, headers);
      const headerLength = res.headers['inference-header-content-length'];
      return decodeInferResponse(res.body, headerLength === undefined ? undefined : Number(headerLength), where);
    },
    release,
  };
}

export interface RuntimeOptions {
  device: string;
  dataDir: string;
  engine: Engine;
  board: BoardPlatform;
  logger: Logger;
  /** Awaited before the first container is created (the service's start-up clean-up). */
  ready?: () => Promise<unknown>;
}

export interface ContainerRuntime {
  /** A session for a model whose manifest names a container runtime; undefined for an in-process model. */
  sessionFor(request: RuntimeRequest): Promise<Session> | undefined;
  /** Stops and removes inference containers a previous agent process left behind (the model service starts its own). */
  removeStale(): Promise<number>;
}

export function createContainerRuntime(opts: RuntimeOptions): ContainerRuntime {
  const log = opts.logger.child({ part: 'runtime' });
  let serial = 0;

  async function start(req: RuntimeRequest): Promise<Session> {
    const { manifest, name, version } = req;
    const spec = manifest.container!;
    const inference = spec.inference!;
    const image = manifest.image!.digest;
    const where = `${name}@${version}`;
    await opts.ready?.();
    const info = await opts.engine.image(image);
    if (!info) throw new FleetError('not_found', `${where} is served by image ${image}, which is not installed on this device; deliver the image first`);
    const mismatch = platformMismatch(info, opts.board);
    if (mismatch) throw new FleetError('incompatible', `${where}: ${mismatch}`);
    // a version may run twice for a moment (a reload beside itself), so each container gets its own suffix
    const container = `${containerName(opts.device, name, version, 'inference')}.${process.pid}-${++serial}`;
    const modelDir = `${inference.modelRoot}/${name}/${version}`;
    await opts.engine.create(
      createOptions({
        device: opts.device,
        dataDir: opts.dataDir,
        role: 'inference',
        name: container,
        release: { app: name, version, image, spec },
        modelDir: () => undefined,
        extraMounts: [{ source: dirname(req.modelFile), target: modelDir, readOnly: true }],
        extraEnv: { EDGEFLEET_MODEL_NAME: name, EDGEFLEET_MODEL_VERSION: String(version), EDGEFLEET_MODEL_DIR: modelDir, EDGEFLEET_OIP_PORT: String(inference.port) },
      }),
    );
    const stop = async (): Promise<void> => {
      await opts.engine.remove(container).catch((error: unknown) => log.warn({ err: error, container }, 'could not remove an inference container'));
    };
    try {
      await opts.engine.start(container);
      await waitHealthy({ engine: opts.engine, container, health: spec.health, deadlineMs: spec.healthyWithinMs, ready: { port: inference.port, path: '/v2/health/ready' } });
      const running = await opts.engine.inspectOwned(container);
      const port = running ? hostPort(running, inference.port) : undefined;
      if (port === undefined) throw new FleetError('load_failed', `${where}: the runtime's port ${inference.port} is not published`);
      const client = new OipClient(port);
      const [server, meta] = await Promise.all([client.server(), client.model(name)]);
      const binary = Array.isArray(server.extensions) && server.extensions.includes('binary_tensor_data');
      log.info({ model: name, version, container, port, binary, server: `${server.name} ${server.version}` }, 'runtime container ready');
      return containerSession(client, name, meta, binary, container, async () => {
        client.close();
        await stop();
        log.info({ model: name, version, container }, 'runtime container stopped');
      });
    } catch (error) {
      await stop();
      if (error instanceof FleetError && error.code !== 'smoke_test_failed') throw error;
      throw new FleetError('load_failed', `${where}: its runtime container did not start serving: ${(error as Error).message}`);
    }
  }

  return {
    sessionFor(req) {
      if (!req.manifest.container?.inference) return undefined;
      return start(req);
    },
    async removeStale() {
      if (!(await opts.engine.status()).available) return 0;
      const stale = (await opts.engine.listOwned()).filter((c) => c.role === 'inference');
      for (const c of stale) await opts.engine.remove(c.id);
      if (stale.length > 0) log.info({ removed: stale.map((c) => c.name) }, 'removed inference containers left by an earlier run');
      return stale.length;
    },
  };
}
