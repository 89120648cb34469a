/**
 * The agent's Prometheus metrics, served at GET /metrics beside the inference API: per model
 * inference requests, errors (by error code) and a latency histogram, the active version,
 * activation results, and the bytes of transfer chunks received. Labels come only from the
 * models on this device and the protocol's error codes, so the series stay few.
 *
 * Hooks (agent.ts): `instrument(models)` wraps the model service every path uses (MQTT, HTTP,
 * transfers), `chunk(bytes, via)` counts a received chunk, and `handle` answers /metrics.
 *
 * prom-client (~13 MB resident) is loaded on first need: the first activation, inference or scrape.
 * An idle board with no model and no scraper never holds it; chunks received before are kept as
 * plain numbers and added when it loads.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
import { toErrorBody } from '@edgefleet/protocol';
import type { ModelService } from './models/index.js';

export interface AgentMetrics {
  /** The registry, loading prom-client if it is not yet. */
  registry(): Promise<Registry>;
  /** The same model service, with every inference, activation and rollback counted. */
  instrument(models: ModelService): ModelService;
  /** A transfer chunk arrived on the device's own topic or a group's. */
  chunk(bytes: number, via: Via): void;
  /** Answers GET /metrics. */
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

/** Latency buckets in seconds: 0.5 ms (a tiny model) to 10 s (a large one on a small board). */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

type Via = 'device' | 'group';

/** The series, made once prom-client is loaded. */
async function createSeries(device: string, served: () => ModelService | undefined) {
  const { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } = await import('prom-client');
  const registry = new Registry();
  registry.setDefaultLabels({ device });
  // lag sampled every 100 ms, not prom-client's 10 ms: an idle board should not wake 100 times a second
  collectDefaultMetrics({ register: registry, prefix: 'edgefleet_agent_', eventLoopMonitoringPrecision: 100 });
  const registers = [registry];
  new Gauge({
    name: 'edgefleet_agent_model_active_version',
    help: 'The version each model serves (0: none)',
    labelNames: ['model'],
    registers,
    // read at scrape time, so every activation path (commands, transfers, rollbacks) is seen
    collect() {
      for (const m of served()?.list() ?? []) this.set({ model: m.name }, m.active ?? 0);
    },
  });
  return {
    registry,
    requests: new Counter({ name: 'edgefleet_agent_inference_requests_total', help: 'Inference requests, by model (MQTT and HTTP)', labelNames: ['model'], registers }),
    errors: new Counter({ name: 'edgefleet_agent_inference_errors_total', help: 'Failed inference requests, by model and error code', labelNames: ['model', 'code'], registers }),
    latency: new Histogram({ name: 'edgefleet_agent_inference_duration_seconds', help: 'Inference latency, by model', labelNames: ['model'], buckets: LATENCY_BUCKETS, registers }),
    activations: new Counter({ name: 'edgefleet_agent_activations_total', help: 'Model activations and rollbacks, by model and result (ok, failed)', labelNames: ['model', 'result'], registers }),
    chunkBytes: new Counter({ name: 'edgefleet_agent_transfer_bytes_total', help: 'Bytes of transfer chunks received, by topic (device or group)', labelNames: ['via'], registers }),
    chunks: new Counter({ name: 'edgefleet_agent_transfer_chunks_total', help: 'Transfer chunks received, by topic (device or group)', labelNames: ['via'], registers }),
  };
}
type Series = Awaited<ReturnType<typeof createSeries>>;

export function createAgentMetrics(device: string): AgentMetrics {
  let served: ModelService | undefined;
  let series: Series | undefined;
  let loading: Promise<Series> | undefined;
  // chunks received before prom-client is loaded
  const early: Record<Via, { bytes: number; chunks: number }> = { device: { bytes: 0, chunks: 0 }, group: { bytes: 0, chunks: 0 } };
  const load = (): Promise<Series> =>
    (loading ??= createSeries(device, () => served).then((s) => {
      for (const via of ['device', 'group'] as const) {
        if (early[via].chunks > 0) {
          s.chunkBytes.inc({ via }, early[via].bytes);
          s.chunks.inc({ via }, early[via].chunks);
        }
      }
      return (series = s);
    }));

  function instrument(models: ModelService): ModelService {
    served = models;
    const switching = (kind: 'activate' | 'rollback') =>
      async (...args: unknown[]) => {
        const model = String(args[0]);
        const { activations } = await load();
        try {
          const result = await (models[kind] as (...a: unknown[]) => ReturnType<ModelService['activate']>)(...args);
          activations.inc({ model, result: 'ok' });
          return result;
        } catch (error) {
          activations.inc({ model, result: 'failed' });
          throw error;
        }
      };
    /** Counts and times one request, whichever entry point (JSON `infer`, or `answer` with binary tensors) served it. */
    async function timed<T>(model: string, run: () => Promise<T>): Promise<T> {
      const { requests, errors, latency } = series ?? (await load());
      const t0 = performance.now();
      requests.inc({ model });
      try {
        return await run();
      } catch (error) {
        errors.inc({ model, code: toErrorBody(error).code });
        throw error;
      } finally {
        latency.observe({ model }, (performance.now() - t0) / 1000);
      }
    }
    const overrides: Partial<ModelService> = {
      infer: ((params: Parameters<ModelService['answer']>[0], binary?: Uint8Array) => timed(params.model, () => models.infer(params, binary))) as ModelService['infer'],
      answer: (params, binary) => timed(params.model, () => models.answer(params, binary)),
      activate: switching('activate') as ModelService['activate'],
      rollback: switching('rollback') as ModelService['rollback'],
    };
    return new Proxy(models, {
      get(target, key) {
        if (Object.hasOwn(overrides, key)) return overrides[key as keyof ModelService];
        const value = Reflect.get(target, key, target) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  return {
    registry: async () => (await load()).registry,
    instrument,
    chunk(bytes, via) {
      if (!series) {
        early[via].bytes += bytes;
        early[via].chunks++;
        return;
      }
      series.chunkBytes.inc({ via }, bytes);
      series.chunks.inc({ via });
    },
    async handle(_req, res) {
      const { registry } = await load();
      const text = await registry.metrics();
      res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' });
      res.end(text);
    },
  };
}
