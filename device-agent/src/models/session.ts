/**
 * An onnxruntime session, built and run either on the agent's thread or on a worker thread of its own,
 * by whichever runtime serves on this board (runtime.ts): onnxruntime-node or onnxruntime-web's
 * WebAssembly build. Both take and give onnxruntime-common tensors, so nothing above this file knows
 * which one it is.
 *
 * onnxruntime-node builds a session (parse, optimise, pre-pack weights) and runs it synchronously on the
 * calling thread; building takes roughly 1 ms per MB of model here. For a small model that is less than
 * the cost of handing every request to another thread and back, so it stays inline. A large model on the
 * agent's thread would stop MQTT, HTTP and every other model for tens of milliseconds while a new version
 * loads (and for as long as each inference runs), so it lives on a worker: the new version is built
 * beside the old without pausing it, and the agent's thread only moves tensors (input and output buffers
 * are transferred, not copied).
 *
 * The interface is the part of ort.InferenceSession the model service uses.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { Tensor } from 'onnxruntime-common';
import type { InferenceSession } from 'onnxruntime-common';
import type { OrtTensor } from './tensors.js';
import type { RuntimeInfo } from './runtime.js';

export type SessionPlacement = 'inline' | 'worker';

export type SessionOptions = InferenceSession.SessionOptions;
type ValueMetadata = InferenceSession.ValueMetadata;

export interface Session {
  readonly inputMetadata: readonly ValueMetadata[];
  readonly outputMetadata: readonly ValueMetadata[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  /** Frees the session and ends its worker; runs already sent are answered first. */
  release(): Promise<void>;
}

/** A tensor as it crosses threads. */
interface WireTensor {
  type: OrtTensor['type'];
  data: OrtTensor['data'];
  dims: readonly number[];
}

type ToWorker = { kind: 'run'; id: number; feeds: Record<string, WireTensor> } | { kind: 'release' };

type FromWorker =
  | { kind: 'ready'; inputMetadata: ValueMetadata[]; outputMetadata: ValueMetadata[]; outputNames: string[] }
  | { kind: 'failed'; error: string }
  | { kind: 'result'; id: number; outputs?: Record<string, WireTensor>; error?: string };

/** The part of a runtime module (onnxruntime-node, onnxruntime-web) this file uses. */
interface RuntimeModule {
  InferenceSession: { create(model: Uint8Array, options?: SessionOptions): Promise<InferenceSession> };
  env: { wasm: { numThreads?: number } };
}

/** A runtime whose module is loaded: builds sessions. */
export interface SessionRuntime {
  readonly info: RuntimeInfo;
  /** Builds a session from the model's bytes, inline or on a new worker thread; rejects with the runtime's message if it does not load. */
  open(model: Uint8Array, options: SessionOptions, placement: SessionPlacement): Promise<Session>;
}

/**
 * Loads the runtime's module (the first call pays for it: onnxruntime-node maps its native library,
 * onnxruntime-web compiles its wasm module on the first session). Rejects when the module does not load.
 */
export async function loadRuntime(info: RuntimeInfo): Promise<SessionRuntime> {
  const require = createRequire(import.meta.url);
  const entry = require.resolve(info.name);
  // Both packages' Node.js entry points are CommonJS; require() loads the same file a worker loads.
  const ort = require(entry) as RuntimeModule;
  const wasmThreads = info.backend === 'wasm' ? info.threads : undefined;
  if (wasmThreads !== undefined) ort.env.wasm.numThreads = wasmThreads;
  // One WebAssembly instance serves every inline session of onnxruntime-web, and it cannot take calls from
  // two sessions at once (their runs interleave at its awaits and break its heap views: "Cannot read
  // properties of null"); its calls go one at a time. A worker has an instance of its own.
  const serial = wasmThreads !== undefined ? oneAtATime() : <T>(call: () => Promise<T>) => call();
  return {
    info,
    open: (model, options, placement) =>
      placement === 'inline' ? openInline(ort, model, options, serial) : openOnWorker(entry, wasmThreads, model, options),
  };
}

type Serial = <T>(call: () => Promise<T>) => Promise<T>;

/** Runs the calls given to it one after another, in order. */
function oneAtATime(): Serial {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(call: () => Promise<T>): Promise<T> => {
    const run = tail.then(call);
    tail = run.catch(() => undefined); // a failed call is its caller's; the next one still runs
    return run;
  };
}

/** Session options for a runtime: the same choices, in the form each runtime takes. */
export function sessionOptions(info: RuntimeInfo, graphOptimizationLevel: SessionOptions['graphOptimizationLevel']): SessionOptions {
  const common: SessionOptions = {
    executionProviders: info.executionProviders,
    executionMode: 'sequential',
    graphOptimizationLevel,
    // Failures reach the caller as FleetErrors with the runtime's message; keep its own logging quiet.
    logSeverityLevel: 4,
  };
  if (info.backend === 'wasm') return common; // threads are the wasm module's (env.wasm.numThreads), set at load
  return {
    ...common,
    intraOpNumThreads: info.threads,
    interOpNumThreads: 1,
    // Idle intra-op threads must not spin: on 2-4 core boards they would keep cores busy after every run.
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
}

/**
 * Runs inside the worker. It is sent as source text (Worker eval), so it must not use anything from
 * this module: only require() and workerData.
 */
function sessionWorker(): void {
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads');
  const ortw = require(workerData.ortPath as string) as typeof import('onnxruntime-common') & { env: { wasm: { numThreads?: number } } };
  if (workerData.wasmThreads !== undefined) ortw.env.wasm.numThreads = workerData.wasmThreads as number;
  const port = parentPort!;
  const message = (e: unknown) => String((e as Error)?.message ?? e);
  ortw.InferenceSession.create(new Uint8Array(workerData.model as ArrayBuffer), workerData.options).then(
    (session) => {
      port.postMessage({ kind: 'ready', inputMetadata: session.inputMetadata, outputMetadata: session.outputMetadata, outputNames: session.outputNames });
      // One message at a time, in order: a release never overtakes a run sent before it.
      let queue: Promise<void> = Promise.resolve();
      port.on('message', (m: ToWorker) => {
        queue = queue.then(() => handle(m));
      });
      const handle = async (m: ToWorker): Promise<void> => {
        if (m.kind === 'release') {
          await session.release();
          port.close();
          return;
        }
        try {
          const feeds: Record<string, import('onnxruntime-common').Tensor> = {};
          for (const [name, t] of Object.entries(m.feeds)) feeds[name] = new ortw.Tensor(t.type as 'float32', t.data as Float32Array, t.dims);
          const results = await session.run(feeds);
          const outputs: Record<string, WireTensor> = {};
          const transfer: ArrayBuffer[] = [];
          for (const [name, t] of Object.entries(results)) {
            outputs[name] = { type: t.type, data: t.data, dims: t.dims };
            if (t.type !== 'string') transfer.push((t.data as Uint8Array).buffer as ArrayBuffer);
          }
          try {
            port.postMessage({ kind: 'result', id: m.id, outputs }, transfer);
          } catch {
            port.postMessage({ kind: 'result', id: m.id, outputs }); // a buffer onnxruntime will not let go of: copied instead
          }
        } catch (error) {
          port.postMessage({ kind: 'result', id: m.id, error: message(error) });
        }
      };
    },
    (error: unknown) => {
      port.postMessage({ kind: 'failed', error: message(error) });
      port.close();
    },
  );
}

async function openInline(ort: RuntimeModule, model: Uint8Array, options: SessionOptions, serial: Serial): Promise<Session> {
  const session = await serial(() => ort.InferenceSession.create(model, options));
  return {
    inputMetadata: session.inputMetadata,
    outputMetadata: session.outputMetadata,
    outputNames: session.outputNames,
    run: async (feeds) => (await serial(() => session.run(feeds))) as Record<string, OrtTensor>,
    release: () => serial(() => session.release()),
  };
}

function openOnWorker(ortPath: string, wasmThreads: number | undefined, model: Uint8Array, options: SessionOptions): Promise<Session> {
  // The bytes move to the worker; a view into a larger buffer is copied first so only the model moves.
  const owned = model.byteOffset === 0 && model.byteLength === model.buffer.byteLength ? model : model.slice();
  const worker = new Worker(`(${sessionWorker.toString()})()`, {
    eval: true,
    workerData: { ortPath, wasmThreads, model: owned.buffer, options },
    transferList: [owned.buffer as ArrayBuffer],
  });
  const pending = new Map<number, { resolve: (r: Record<string, OrtTensor>) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  let ended: Error | null = null;

  const fail = (error: Error): void => {
    ended ??= error;
    for (const p of pending.values()) p.reject(ended);
    pending.clear();
  };

  return new Promise<Session>((resolveOpen, rejectOpen) => {
    worker.once('error', (error) => {
      rejectOpen(error);
      fail(new Error(`the model's worker failed: ${error.message}`));
    });
    worker.once('exit', () => {
      rejectOpen(new Error('the model worker stopped before the session was built'));
      fail(new Error("the model's worker has stopped"));
    });
    worker.on('message', (m: FromWorker) => {
      if (m.kind === 'failed') rejectOpen(new Error(m.error));
      else if (m.kind === 'ready') {
        worker.unref(); // an idle session does not keep the process alive; a run in flight does (ref below)
        resolveOpen({ inputMetadata: m.inputMetadata, outputMetadata: m.outputMetadata, outputNames: m.outputNames, run, release });
      } else {
        const p = pending.get(m.id);
        if (!p) return;
        pending.delete(m.id);
        if (pending.size === 0) worker.unref();
        if (m.error !== undefined) p.reject(new Error(m.error));
        else p.resolve(Object.fromEntries(Object.entries(m.outputs!).map(([name, t]) => [name, new Tensor(t.type as 'float32', t.data as Float32Array, t.dims)])));
      }
    });
  });

  function run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>> {
    if (ended) return Promise.reject(ended);
    const id = ++nextId;
    const wire: Record<string, WireTensor> = {};
    const transfer: ArrayBuffer[] = [];
    for (const [name, t] of Object.entries(feeds)) {
      let data = t.data;
      if (t.type !== 'string') {
        const view = data as Uint8Array;
        // only a buffer the tensor owns whole is handed over; a view into a shared one is copied first
        if (view.byteOffset !== 0 || view.byteLength !== view.buffer.byteLength) data = view.slice() as OrtTensor['data'];
        transfer.push((data as Uint8Array).buffer as ArrayBuffer);
      }
      wire[name] = { type: t.type, data, dims: t.dims };
    }
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      if (pending.size === 1) worker.ref();
      worker.postMessage({ kind: 'run', id, feeds: wire }, transfer);
    });
  }

  async function release(): Promise<void> {
    if (ended) return;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.ref();
    worker.postMessage({ kind: 'release' });
    await exited;
  }
}
