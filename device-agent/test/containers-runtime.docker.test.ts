/**
 * Containers as inference runtimes, on the real engine: the model service serves a model through a
 * container of the OIP test image (the model's directory mounted read-only), with the same telemetry as an
 * in-process model; a hot swap under concurrent load starts the new container beside the old one, checks
 * it, switches, drains and stops the old one, with no failed request; a runtime that exits at once is
 * refused while the old one keeps serving; a restarted agent removes runtime containers an earlier run left.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { ManifestSchema } from '@edgefleet/protocol';
import type { ContainerSpecInput } from '@edgefleet/protocol';
import { createContainerService } from '../src/containers/index.js';
import type { ContainerService } from '../src/containers/index.js';
import { createModelService } from '../src/models/index.js';
import type { ModelService } from '../src/models/index.js';
import { imageManifest, oipImage } from '../../test/support/container-images.js';
import type { ImageArchive } from '../../test/support/container-images.js';
import { cleanupDevice, getJson, requireEngine } from '../../test/support/docker.js';
import { linearModel, stageFile, testManifest } from '../../test/support/onnx-models.js';

const DEVICE = `rt-${process.pid}`;
const logger = pino({ level: process.env.TEST_AGENT_LOGS ? 'debug' : 'silent' });
let dir: string;
let dataDir: string;
let image: ImageArchive;
let containers: ContainerService;
let models: ModelService;

const runtime = (env: Record<string, string>): ContainerSpecInput => ({
  env,
  inference: { protocol: 'oip-http', port: 8000 },
  health: { kind: 'image', settleMs: 0 },
  healthyWithinMs: 15_000,
});

const modelBytes = (v: number) => linearModel({ seed: v }).bytes;

async function installModel(version: number, env: Record<string, string>): Promise<void> {
  const bytes = modelBytes(version);
  const manifest = ManifestSchema.parse({ ...testManifest('x', version, bytes), image: { reference: 'oip:test', digest: image.id }, container: runtime(env) });
  await models.install(manifest, await stageFile(join(dataDir, 'staging'), bytes));
}

const runtimeContainers = async () => (await containers.engine.listOwned('x')).filter((c) => c.role === 'inference');

beforeAll(async () => {
  requireEngine();
  dir = await mkdtemp(join(tmpdir(), 'edgefleet-runtime-'));
  dataDir = join(dir, 'data');
  image = await oipImage(join(dir, 'images'), 'runtime');
  containers = await createContainerService({ device: DEVICE, dataDir, logger });
  await containers.start();
  // the runtime image arrives as an image manifest without a container spec: installed, never run as an app
  await containers.installImage(imageManifest('oip-runtime', 1, image), image.path);
  models = await createModelService({ dataDir, logger, threads: 1, openRuntime: (r) => containers.runtime.sessionFor(r) });
  containers.useModels((m) => models.active().find((a) => a.name === m)?.version);
}, 120_000);

afterAll(async () => {
  await models?.close();
  await containers?.close();
  cleanupDevice(DEVICE);
  await rm(dir, { recursive: true, force: true });
});

describe('a model served by a container', () => {
  it('starts the runtime with the model mounted and answers inference through it, with telemetry', async () => {
    await installModel(1, { FACTOR: '2' });
    await models.activate('x', 1);
    const [c] = await runtimeContainers();
    expect(c).toMatchObject({ app: 'x', version: 1, role: 'inference', running: true });
    // the server read the model file it was given: the very bytes the store holds for x@1
    const meta = await getJson(c!.ports['8000/tcp']!, '/v2');
    expect(meta.body).toMatchObject({ model_sha256: createHash('sha256').update(modelBytes(1)).digest('hex'), extensions: ['binary_tensor_data'] });
    const r = await models.infer({ model: 'x', inputs: { x: { dtype: 'float32', shape: [1, 4], data: [1, -2, 0.5, 4] } } });
    expect(r).toMatchObject({ model: 'x', version: 1, outputs: { y: { dtype: 'float32', shape: [1, 4], data: [2, -4, 1, 8] } } });
    expect(models.drainHealth()['x@1']).toMatchObject({ requests: 1, errors: 0 });
  });

  it('hot swaps under load: the new container is checked beside the old, no request fails, the old one stops', async () => {
    await installModel(2, { FACTOR: '3' });
    await installModel(3, { MODE: 'exit' });
    const oldContainer = (await runtimeContainers())[0]!.id;
    const x = [1, 2, 3, 4];
    let running = true;
    let floor = 1;
    const answered = new Map<number, number>();
    const failures: string[] = [];
    const worker = async (): Promise<void> => {
      while (running) {
        const min = floor;
        try {
          const r = await models.infer({ model: 'x', inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } });
          const factor = r.version === 1 ? 2 : 3;
          if (JSON.stringify(r.outputs.y?.data) !== JSON.stringify(x.map((v) => v * factor))) failures.push(`x@${r.version} answered ${JSON.stringify(r.outputs.y?.data)}`);
          if (r.version < min) failures.push(`a request started after x@${min} was active got x@${r.version}`);
          answered.set(r.version, (answered.get(r.version) ?? 0) + 1);
        } catch (error) {
          failures.push(String(error));
        }
      }
    };
    const until = async (what: string, ok: () => boolean): Promise<void> => {
      const deadline = Date.now() + 20_000;
      while (!ok()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    const workers = Array.from({ length: 16 }, worker);
    await until('x@1 answers', () => (answered.get(1) ?? 0) > 100);
    await models.activate('x', 2);
    floor = 2;
    await until('x@2 answers', () => (answered.get(2) ?? 0) > 100);
    // a runtime that exits at once is refused; x@2 keeps serving throughout
    await expect(models.activate('x', 3)).rejects.toMatchObject({ code: 'load_failed', message: expect.stringMatching(/x@3: its runtime container did not start serving: .*exited with code 3/) });
    const before = answered.get(2)!;
    await until('x@2 answers after the refusal', () => answered.get(2)! > before + 100);
    running = false;
    await Promise.all(workers);
    expect(failures).toEqual([]);
    const left = await runtimeContainers();
    expect(left.map((c) => c.version)).toEqual([2]);
    expect(left[0]!.id).not.toBe(oldContainer);
    const health = models.drainHealth();
    expect(health['x@1']?.errors).toBe(0);
    expect(health['x@2']?.errors).toBe(0);
  });

  it('a restarted agent removes the runtime containers an earlier run left behind', async () => {
    expect((await runtimeContainers()).length).toBe(1);
    const restarted = await createContainerService({ device: DEVICE, dataDir: join(dir, 'data-restart'), logger });
    await restarted.start();
    expect((await runtimeContainers()).length).toBe(0);
    await restarted.close();
  });
});
