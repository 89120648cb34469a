/**
 * The inference runtime: which one a board gets (the pure plan), onnxruntime-web's WebAssembly build
 * serving the same models with the same answers as onnxruntime-node (inline and on worker threads),
 * refusals that leave the old version serving, and that neither runtime (nor sharp) is loaded before
 * the first model is activated (checked in a fresh process, from its memory map).
 */
import { describe, it, expect, afterAll } from '@jest/globals';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pino from 'pino';
import { FleetError } from '@edgefleet/protocol';
import type { Manifest } from '@edgefleet/protocol';
import { createModelService } from '../src/models/index.js';
import type { ModelService, ModelServiceOptions } from '../src/models/index.js';
import { findInstalledRuntimes, planRuntime } from '../src/models/runtime.js';
import type { InstalledRuntimes } from '../src/models/runtime.js';
import type { TensorMapResult } from '../src/models/infer.js';
import { linearModel, multiInputModel, recurrentModel, stageFile, testManifest, unknownOperatorModel } from '../../test/support/onnx-models.js';

const logger = pino({ level: 'silent' });
const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function open(extra: Partial<ModelServiceOptions> = {}): Promise<{ models: ModelService; dataDir: string }> {
  const dataDir = await mkdtemp(join(tmpdir(), 'edgefleet-runtime-'));
  dirs.push(dataDir);
  return { models: await createModelService({ dataDir, logger, threads: 1, ...extra }), dataDir };
}

async function install(models: ModelService, dataDir: string, name: string, version: number, bytes: Uint8Array): Promise<Manifest> {
  const manifest = testManifest(name, version, bytes);
  await models.install(manifest, await stageFile(join(dataDir, 'staging'), bytes));
  return manifest;
}

async function failure(promise: Promise<unknown>): Promise<FleetError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(FleetError);
    return error as FleetError;
  }
  throw new Error('expected the call to fail');
}

const installed: InstalledRuntimes = {
  'onnxruntime-node': { version: '1.30.0', dir: '/x', binaries: ['linux/x64', 'linux/arm64', 'darwin/arm64'] },
  'onnxruntime-web': { version: '1.30.0', dir: '/y' },
};

describe('which runtime a board gets (plan)', () => {
  it('auto: onnxruntime-node where its package has a binary, onnxruntime-web elsewhere', () => {
    const arm64 = planRuntime('auto', { platform: 'linux', arch: 'arm64', cores: 4 }, installed);
    expect(arm64).toMatchObject({ ok: true, runtime: { name: 'onnxruntime-node', backend: 'cpu', threads: 3, executionProviders: ['cpu'] } });
    const armv7 = planRuntime('auto', { platform: 'linux', arch: 'arm', cores: 4 }, installed);
    expect(armv7).toMatchObject({ ok: true, runtime: { name: 'onnxruntime-web', backend: 'wasm', threads: 1, executionProviders: ['wasm'] } });
    expect(armv7.ok && armv7.runtime.why).toMatch(/no binary for linux\/arm .*WebAssembly/);
    // a bundle for armv7 leaves onnxruntime-node out entirely
    const withoutNative = planRuntime('auto', { platform: 'linux', arch: 'arm', cores: 4 }, { 'onnxruntime-web': installed['onnxruntime-web']! });
    expect(withoutNative).toMatchObject({ ok: true, runtime: { name: 'onnxruntime-web' } });
  });

  it('a configured runtime is taken when it can run here, with its threads', () => {
    expect(planRuntime('onnxruntime-web', { platform: 'linux', arch: 'x64', cores: 2 }, installed, 2)).toMatchObject({ ok: true, runtime: { name: 'onnxruntime-web', threads: 2 } });
    expect(planRuntime('onnxruntime-node', { platform: 'linux', arch: 'x64', cores: 8 }, installed, 2)).toMatchObject({ ok: true, runtime: { name: 'onnxruntime-node', threads: 2 } });
  });

  it('says why when no runtime can run', () => {
    const native = planRuntime('onnxruntime-node', { platform: 'linux', arch: 'arm', cores: 4 }, installed);
    expect(native).toEqual({ ok: false, reason: expect.stringMatching(/onnxruntime-node 1\.30\.0 has no binary for linux\/arm \(it ships linux\/x64, linux\/arm64, darwin\/arm64\); configure runtime auto or onnxruntime-web/) });
    const none = planRuntime('auto', { platform: 'linux', arch: 'arm', cores: 4 }, {});
    expect(none).toEqual({ ok: false, reason: expect.stringMatching(/no inference runtime can run here: onnxruntime-node is not installed and onnxruntime-web is not installed/) });
  });

  it('finds what is installed here from the packages, without loading them', () => {
    const found = findInstalledRuntimes();
    expect(found['onnxruntime-node']).toMatchObject({ version: '1.30.0', binaries: expect.arrayContaining(['linux/x64', 'linux/arm64']) });
    expect(found['onnxruntime-node']?.binaries).not.toContain('linux/arm');
    expect(found['onnxruntime-web']).toMatchObject({ version: '1.30.0' });
  });
});

/** Same tensors: names, dtypes, shapes and integer values exactly, floats within `tol` relative. */
function expectClose(actual: TensorMapResult['outputs'], expected: TensorMapResult['outputs'], tol: number): void {
  expect(Object.keys(actual).sort()).toEqual(Object.keys(expected).sort());
  for (const [name, e] of Object.entries(expected)) {
    const a = actual[name]!;
    expect({ name, dtype: a.dtype, shape: a.shape }).toEqual({ name, dtype: e.dtype, shape: e.shape });
    if (!e.dtype.startsWith('float')) {
      expect(a.data).toEqual(e.data);
      continue;
    }
    const worst = Math.max(...e.data.map((v, i) => Math.abs((a.data[i] as number) - (v as number)) / Math.max(1, Math.abs(v as number))));
    expect(worst).toBeLessThanOrEqual(tol);
  }
}

describe('onnxruntime-web (WebAssembly) serves like onnxruntime-node', () => {
  const lin = linearModel({ seed: 5, inFeatures: 4, outFeatures: 3 });
  const multi = multiInputModel();
  const rec = recurrentModel();
  const x = [0.5, -1, 2, 0.25, 1.5, -0.75, 0.125, 3, -2, 0.5, 1, 1];

  async function answers(extra: Partial<ModelServiceOptions>): Promise<TensorMapResult[]> {
    const { models, dataDir } = await open(extra);
    try {
      for (const [name, m] of [['lin', lin], ['multi', multi], ['rec', rec]] as const) {
        await install(models, dataDir, name, 1, m.bytes);
        await models.activate(name, 1);
      }
      // Requests to three models at once, ten rounds interleaved: the WebAssembly instance that serves every
      // inline session must take them one at a time (concurrent runs across its sessions broke its heap).
      const rounds = await Promise.all(Array.from({ length: 10 }, () => askAll(models)));
      for (const round of rounds) expect(round.map((r) => r.outputs)).toEqual(rounds[0]!.map((r) => r.outputs));
      return rounds[0]!;
    } finally {
      await models.close();
    }
  }

  function askAll(models: ModelService): Promise<TensorMapResult[]> {
    {
      return Promise.all([
        models.infer({ model: 'lin', inputs: { x: { dtype: 'float32', shape: [3, 4], data: x } } }),
        models.infer({
          model: 'multi',
          inputs: {
            ids: { dtype: 'int64', shape: [2, 3], data: [1, 2, '9007199254740993', -4, 5, 6] },
            scale: { dtype: 'float32', shape: [2, 3], data: [0.5, -1, 1e-7, 3, 0.25, 2] },
          },
        }),
        models.infer({
          model: 'rec',
          inputs: {
            x: { dtype: 'float32', shape: [1, 8], data: [0.1, -0.2, 0.3, 1, -1, 2, 0, 0.5] },
            state_in: { dtype: 'float32', shape: [1, 8], data: [0.5, 0.5, -0.5, 0, 0.25, -2, 1, 0] },
          },
        }),
      ]);
    }
  }

  it('gives the outputs onnxruntime-node gives (integers exactly, floats within 1e-6), inline and on worker threads, to concurrent requests', async () => {
    const native = await answers({ runtime: 'onnxruntime-node' });
    const wasmInline = await answers({ runtime: 'onnxruntime-web' });
    const wasmWorker = await answers({ runtime: 'onnxruntime-web', workerSessionBytes: 0 });
    // Integers exactly; float32 within 1e-6 relative: the WebAssembly build sums MatMul in another order
    // (128-bit SIMD) and has its own tanh, so the last bit may differ (seen: 0.6597650051 vs 0.6597650647).
    for (const wasm of [wasmInline, wasmWorker]) {
      for (const [i, r] of wasm.entries()) expectClose(r.outputs, native[i]!.outputs, 1e-6);
    }
    expect(native[0]!.outputs.y!.data.length).toBe(9);
    expect(native[1]!.outputs.next_ids!.data).toEqual(['2', '3', '9007199254740994', '-3', '6', '7']); // beyond 2^53: the whole tensor as strings
  });

  it('reports itself as the runtime: name, version, backend, one thread unless configured', async () => {
    const { models } = await open({ runtime: 'onnxruntime-web', threads: undefined });
    expect(models.runtime()).toMatchObject({ name: 'onnxruntime-web', version: '1.30.0', backend: 'wasm', executionProviders: ['wasm'], threads: 1 });
    await models.close();
  });

  it('a model the runtime cannot load is refused at activation with its reason; the old version keeps serving', async () => {
    const { models, dataDir } = await open({ runtime: 'onnxruntime-web' });
    await install(models, dataDir, 'm', 1, lin.bytes);
    await models.activate('m', 1);
    // An operator this build has no kernel for. (The 1.30 WebAssembly build carries the same CPU operator
    // set as onnxruntime-node; what it lacks is what onnxruntime 1.30 lacks, so the operator is one no
    // onnxruntime implements.)
    const unknownOp = unknownOperatorModel();
    await install(models, dataDir, 'm', 2, unknownOp);
    const refused = await failure(models.activate('m', 2));
    expect(refused.code).toBe('load_failed');
    expect(refused.message).toMatch(/^m@2 does not load in onnxruntime 1\.30\.0 \(onnxruntime-web, wasm\): .*NoSuchOperator/);
    const r = await models.infer({ model: 'm', inputs: { x: { dtype: 'float32', shape: [1, 4], data: x.slice(0, 4) } } });
    expect(r.version).toBe(1);
    expect(models.active()).toEqual([{ name: 'm', version: 1 }]);
    await models.close();
  });

  it('a configured runtime this board cannot run: the service starts, activation says why, status reports no runtime', async () => {
    const { models, dataDir } = await open({ runtime: 'onnxruntime-node', board: { platform: 'linux', arch: 'arm', cores: 4 } });
    expect(models.runtime()).toBeNull();
    await install(models, dataDir, 'm', 1, lin.bytes);
    const refused = await failure(models.activate('m', 1));
    expect(refused.code).toBe('load_failed');
    expect(refused.message).toMatch(/runtime onnxruntime-node was configured, but onnxruntime-node 1\.30\.0 has no binary for linux\/arm/);
    expect(models.active()).toEqual([]);
    await models.close();
  });
});

describe('the runtime is loaded with the first model, not at start', () => {
  const modelsIndex = fileURLToPath(new URL('../dist/src/models/index.js', import.meta.url));
  const agentIndex = fileURLToPath(new URL('../dist/src/index.js', import.meta.url));

  it('an agent process maps neither onnxruntime nor libvips until a model is activated', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'edgefleet-lazy-'));
    dirs.push(dataDir);
    const lin = linearModel({ seed: 2 });
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(dataDir, 'lin.onnx'), lin.bytes);
    await writeFile(join(dataDir, 'manifest.json'), JSON.stringify(testManifest('lin', 1, lin.bytes)));
    // A fresh process: this test's own process has loaded onnxruntime already.
    const script = `
      import { readFileSync, copyFileSync } from 'node:fs';
      import pino from 'pino';
      const maps = () => readFileSync('/proc/self/maps', 'utf8');
      const seen = () => ({ ort: /libonnxruntime/.test(maps()), vips: /libvips/.test(maps()) });
      await import(${JSON.stringify(agentIndex)});
      const { createModelService } = await import(${JSON.stringify(modelsIndex)});
      const models = await createModelService({ dataDir: ${JSON.stringify(dataDir)}, logger: pino({ level: 'silent' }), threads: 1 });
      const before = seen();
      copyFileSync(${JSON.stringify(join(dataDir, 'lin.onnx'))}, ${JSON.stringify(join(dataDir, 'staged.onnx'))});
      await models.install(JSON.parse(readFileSync(${JSON.stringify(join(dataDir, 'manifest.json'))}, 'utf8')), ${JSON.stringify(join(dataDir, 'staged.onnx'))});
      const installedOnly = seen();
      await models.activate('lin', 1);
      const after = seen();
      await models.close();
      console.log(JSON.stringify({ before, installedOnly, after }));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd: fileURLToPath(new URL('..', import.meta.url)) });
    const seen = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, { ort: boolean; vips: boolean }>;
    expect(seen.before).toEqual({ ort: false, vips: false });
    expect(seen.installedOnly).toEqual({ ort: false, vips: false });
    expect(seen.after).toEqual({ ort: true, vips: false });
  });
});

describe('image pre-processing on a board where sharp does not load', () => {
  const processingIndex = fileURLToPath(new URL('../dist/src/processing/index.js', import.meta.url));

  it('refuses image requests with the reason and what to do instead; text and tensors keep working', async () => {
    // sharp has binaries for x64, arm64 and armv7 (the bundles carry them), so a board without one cannot
    // be had here: a resolve hook in a fresh process makes `import('sharp')` fail as a missing binary does.
    const failing = encodeURIComponent('throw new Error("Could not load the sharp module using the linux-arm runtime")');
    const hook = `export async function resolve(s, c, next) {
      if (s === 'sharp') return { shortCircuit: true, url: 'data:text/javascript,${failing}' };
      return next(s, c);
    }`;
    const script = `
      import { register } from 'node:module';
      register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hook)}));
      const { ProcessingSchema } = await import('@edgefleet/protocol');
      const { preprocess } = await import(${JSON.stringify(processingIndex)});
      const image = ProcessingSchema.parse({ kind: 'image-classification', input: 'image', width: 2, height: 2, labels: ['a'] });
      const text = ProcessingSchema.parse({ kind: 'text-bow', input: 'words', vocabularySize: 4, wordIndex: { good: 1 }, labels: ['no', 'yes'] });
      const out = {};
      try {
        await preprocess(image, { imageBase64: 'iVBORw0KGgo=' }, 'img@1', [{ name: 'image', dtype: 'float32', shape: [1, 3, 2, 2] }]);
      } catch (e) {
        out.image = { code: e.code, message: e.message };
      }
      const t = await preprocess(text, { text: 'good day' }, 'txt@1', [{ name: 'words', dtype: 'float32', shape: [1, 4] }]);
      out.text = Array.from(t.words.data);
      console.log(JSON.stringify(out));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd: fileURLToPath(new URL('..', import.meta.url)) });
    const out = JSON.parse(stdout.trim().split('\n').pop()!) as { image: { code: string; message: string }; text: number[] };
    expect(out.image.code).toBe('unavailable');
    expect(out.image.message).toMatch(/^image pre-processing is not available on this device: sharp does not load on linux\/x64 \(Could not load the sharp module using the linux-arm runtime\); send tensors in "inputs" instead/);
    expect(out.text).toEqual([0, 1, 0, 0]);
  });
});
