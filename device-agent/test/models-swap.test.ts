/**
 * Hot swap under continuous load: hundreds of inferences in flight while versions are switched (and a
 * broken version is refused): zero failed requests, every answer is exactly the output of the version
 * it reports, and once an activation returns, no request started later is answered by an older version.
 */
import { describe, it, expect, afterAll } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { FleetError } from '@edgefleet/protocol';
import { createModelService } from '../src/models/index.js';
import { allClose, alwaysFailingModel, linearModel, stageFile, testManifest } from '../../test/support/onnx-models.js';
import type { LinearModel } from '../../test/support/onnx-models.js';

const CONCURRENCY = 300;
const dirs: string[] = [];
afterAll(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

// Small models are served on the agent's thread, large ones on a worker thread each (session.ts): both ways.
describe.each([
  ['sessions on the agent thread', Infinity],
  ['sessions on worker threads', 0],
])('hot swap under load, %s', (_placement, workerSessionBytes) => {
  it('drops no request and switches answers from one version to the next', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'edgefleet-swap-'));
    dirs.push(dataDir);
    const models = await createModelService({ dataDir, logger: pino({ level: 'silent' }), threads: 1, workerSessionBytes });
    const versions = new Map<number, LinearModel>([1, 2, 3, 4].map((v) => [v, linearModel({ seed: v * 10 })]));
    for (const [v, m] of versions) await models.install(testManifest('m', v, m.bytes), await stageFile(join(dataDir, 'staging'), m.bytes));
    const broken = alwaysFailingModel().bytes;
    await models.install(testManifest('m', 9, broken), await stageFile(join(dataDir, 'staging'), broken));
    await models.activate('m', 1);

    let running = true;
    let floor = 1; // the lowest version a request started now may be answered by
    const answered = new Map<number, number>();
    const failures: string[] = [];
    const x = [0.5, -1, 2, 0.25];

    async function worker(): Promise<void> {
      while (running) {
        const minVersion = floor;
        try {
          const r = await models.infer({ model: 'm', inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } });
          const model = versions.get(r.version);
          if (!model) failures.push(`answered by unknown version ${r.version}`);
          else if (!allClose(r.outputs.y?.data as number[], model.expected(x))) failures.push(`v${r.version} answer does not match v${r.version}`);
          if (r.version < minVersion) failures.push(`request started after v${minVersion} was active got v${r.version}`);
          answered.set(r.version, (answered.get(r.version) ?? 0) + 1);
        } catch (error) {
          failures.push(error instanceof FleetError ? `${error.code}: ${error.message}` : String(error));
        }
      }
    }

    const workers = Array.from({ length: CONCURRENCY }, () => worker());
    await until(() => (answered.get(1) ?? 0) > 1000, 'v1 answers');
    for (const v of [2, 3]) {
      await models.activate('m', v);
      floor = v;
      await until(() => (answered.get(v) ?? 0) > 1000, `v${v} answers`);
    }
    // A broken version is refused while the load continues on v3.
    await expect(models.activate('m', 9)).rejects.toMatchObject({ code: 'smoke_test_failed' });
    const v3Before = answered.get(3) ?? 0;
    await until(() => (answered.get(3) ?? 0) > v3Before + 500, 'v3 answers after the refused activation');
    await models.activate('m', 4);
    floor = 4;
    await until(() => (answered.get(4) ?? 0) > 1000, 'v4 answers');
    running = false;
    await Promise.all(workers);
    await models.close();

    expect(failures.slice(0, 5)).toEqual([]);
    expect([...answered.keys()].sort()).toEqual([1, 2, 3, 4]);
    const total = [...answered.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThan(4000);
  });
});
