/**
 * Where a session runs (session.ts): a model on a worker thread neither pauses the agent's thread while
 * it runs nor while its next version loads; on the agent's thread it does (which is why large models go
 * to a worker). Failures on a worker reach the caller as the same FleetErrors, with the old version serving.
 */
import { describe, it, expect, afterAll } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { createModelService } from '../src/models/index.js';
import type { ModelService } from '../src/models/index.js';
import { allClose, dataDependentFailingModel, encodeModel, linearModel, node, slowModel, stageFile, testManifest, valueInfo } from '../../test/support/onnx-models.js';

const dirs: string[] = [];
const services: ModelService[] = [];
afterAll(async () => {
  await Promise.all(services.map((s) => s.close()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function service(workerSessionBytes: number): Promise<{ models: ModelService; dataDir: string }> {
  const dataDir = await mkdtemp(join(tmpdir(), 'edgefleet-session-'));
  dirs.push(dataDir);
  const models = await createModelService({ dataDir, logger: pino({ level: 'silent' }), threads: 1, workerSessionBytes });
  services.push(models);
  return { models, dataDir };
}

async function install(models: ModelService, dataDir: string, name: string, version: number, bytes: Uint8Array): Promise<void> {
  await models.install(testManifest(name, version, bytes), await stageFile(join(dataDir, 'staging'), bytes));
}

/** The longest this thread went without running a 1 ms timer while `work` ran. */
async function longestStall(work: () => Promise<unknown>): Promise<number> {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  try {
    await work();
    return Math.max(longest, performance.now() - last);
  } finally {
    clearInterval(timer);
  }
}

describe('session placement', () => {
  // 100 chained 1024×1024 MatMuls on a 64-row batch: a few hundred ms of compute in one run, little JSON.
  const slow = slowModel({ matmuls: 100, size: 1024 });
  const x = { dtype: 'float32' as const, shape: [64, 1024], data: Array.from({ length: 64 * 1024 }, (_, i) => (i % 7) - 3) };

  it('a long inference on the agent thread stalls it; on a worker thread it does not', async () => {
    const inline = await service(Infinity);
    await install(inline.models, inline.dataDir, 'slow', 1, slow.bytes);
    await inline.models.activate('slow', 1);
    const onWorker = await service(0);
    await install(onWorker.models, onWorker.dataDir, 'slow', 1, slow.bytes);
    await onWorker.models.activate('slow', 1);

    let runMs = 0;
    let inlineAnswer: unknown;
    const inlineStall = await longestStall(async () => {
      const t0 = performance.now();
      inlineAnswer = (await inline.models.infer({ model: 'slow', inputs: { x } })).outputs.y?.data;
      runMs = performance.now() - t0;
    });
    let workerAnswer: unknown;
    const workerStall = await longestStall(async () => {
      workerAnswer = (await onWorker.models.infer({ model: 'slow', inputs: { x } })).outputs.y?.data;
    });
    expect(inlineAnswer).toEqual(x.data); // identity chain: y = x
    expect(workerAnswer).toEqual(x.data);
    expect(runMs).toBeGreaterThan(100); // the model really is slow here, so the contrast means something
    expect(inlineStall).toBeGreaterThan(runMs * 0.5);
    expect(workerStall).toBeLessThan(runMs * 0.5);
  });

  it('a new version of a model on a worker loads while the agent thread keeps running', async () => {
    const { models, dataDir } = await service(0);
    const v1 = linearModel({ seed: 1 });
    await install(models, dataDir, 'm', 1, v1.bytes);
    await models.activate('m', 1);
    await install(models, dataDir, 'm', 2, slow.bytes);
    // Loading and smoke-testing v2 (the slow model, smoke-tested on zeros) happens on its worker.
    let activateMs = 0;
    const stall = await longestStall(async () => {
      const t0 = performance.now();
      await models.activate('m', 2);
      activateMs = performance.now() - t0;
    });
    expect(activateMs).toBeGreaterThan(20);
    expect(stall).toBeLessThan(activateMs * 0.5);
  });

  it('on a worker: a model onnxruntime cannot load is refused with its reason, and the old version keeps answering', async () => {
    const { models, dataDir } = await service(0);
    const v1 = linearModel({ seed: 3 });
    await install(models, dataDir, 'm', 1, v1.bytes);
    await models.activate('m', 1);
    const unknownOp = encodeModel({
      name: 'bad',
      inputs: [valueInfo('x', 'float32', ['batch', 4])],
      outputs: [valueInfo('y', 'float32', ['batch', 4])],
      nodes: [node('NoSuchOperator', ['x'], ['y'])],
    });
    await install(models, dataDir, 'm', 2, unknownOp);
    await expect(models.activate('m', 2)).rejects.toMatchObject({ code: 'load_failed', message: expect.stringMatching(/m@2 does not load in onnxruntime .*NoSuchOperator/) });
    const input = [0.5, -1, 2, 0.25];
    const r = await models.infer({ model: 'm', inputs: { x: { dtype: 'float32', shape: [1, 4], data: input } } });
    expect(r.version).toBe(1);
    expect(allClose(r.outputs.y?.data as number[], v1.expected(input))).toBe(true);
  });

  it('on a worker: a run that fails inside onnxruntime answers that request with its error, and the session keeps serving', async () => {
    const { models, dataDir } = await service(0);
    const model = dataDependentFailingModel(); // y = table[int(x)]: zeros pass the smoke test, 9 is out of range
    await install(models, dataDir, 'm', 1, model.bytes);
    await models.activate('m', 1);
    await expect(models.infer({ model: 'm', inputs: { x: { dtype: 'float32', shape: [1, 4], data: [0, 9, 0, 0] } } })).rejects.toMatchObject({
      code: 'internal',
      message: expect.stringMatching(/m@1 failed at run time: .*out of/),
    });
    const r = await models.infer({ model: 'm', inputs: { x: { dtype: 'float32', shape: [1, 4], data: [0, 1, 2, 3] } } });
    expect(r.outputs.y?.data).toEqual(model.table);
  });
});
