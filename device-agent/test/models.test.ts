/**
 * ModelService on real onnxruntime and real ONNX files: inference results equal what the models compute
 * in plain JS; every failed activation leaves the old version answering; rollback, removal, pruning and
 * the anti-rollback record behave and persist.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { mkdtemp, readdir, rm, writeFile, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { FleetError, generateFleetKeys, signManifest } from '@edgefleet/protocol';
import type { Manifest } from '@edgefleet/protocol';
import { createModelService } from '../src/models/index.js';
import type { ModelService, TensorMapParams, TensorMapResult } from '../src/models/index.js';
import {
  allClose,
  alwaysFailingModel,
  encodeModel,
  largeModel,
  linearModel,
  multiInputModel,
  nanModel,
  node,
  recurrentModel,
  stageFile,
  testManifest,
  valueInfo,
} from '../../test/support/onnx-models.js';

const logger = pino({ level: 'silent' });
const dirs: string[] = [];

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'edgefleet-models-'));
  dirs.push(dir);
  return dir;
}

async function open(dataDir: string, extra: Partial<Parameters<typeof createModelService>[0]> = {}): Promise<ModelService> {
  return createModelService({ dataDir, logger, threads: 1, ...extra });
}

/** Installs bytes as name@version (through a staged file, as a transfer would) and returns the manifest. */
async function install(models: ModelService, dataDir: string, name: string, version: number, bytes: Uint8Array, extra: Partial<Manifest> = {}): Promise<Manifest> {
  const manifest = testManifest(name, version, bytes, extra);
  await models.install(manifest, await stageFile(join(dataDir, 'staging'), bytes));
  return manifest;
}

async function expectCode(promise: Promise<unknown>, code: string, message?: RegExp): Promise<FleetError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(FleetError);
    expect((error as FleetError).code).toBe(code);
    if (message) expect((error as FleetError).message).toMatch(message);
    return error as FleetError;
  }
  throw new Error(`expected a FleetError ${code}, but it succeeded`);
}

function x4(batch: number, seed = 0): number[] {
  return Array.from({ length: batch * 4 }, (_, i) => ((i * 7 + seed) % 11) / 5 - 1);
}

function inferLinear(models: ModelService, name: string, x: number[], batch = x.length / 4, version?: number): Promise<TensorMapResult> {
  const params: TensorMapParams = { model: name, inputs: { x: { dtype: 'float32', shape: [batch, 4], data: x } } };
  if (version !== undefined) params.version = version;
  return models.infer(params);
}

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('inference on real models', () => {
  let dataDir: string;
  let models: ModelService;
  const lin = linearModel({ seed: 1 });
  const multi = multiInputModel();
  const rec = recurrentModel({ hidden: 6 });
  const big = largeModel();

  beforeAll(async () => {
    dataDir = await tempDir();
    models = await open(dataDir);
    for (const [name, bytes] of [['lin', lin.bytes], ['multi', multi.bytes], ['rec', rec.bytes], ['big', big.bytes]] as const) {
      await install(models, dataDir, name, 1, bytes);
      await models.activate(name, 1);
    }
  });
  afterAll(() => models.close());

  it('answers y = xW + b for any batch size (symbolic dimension)', async () => {
    for (const batch of [1, 3, 17]) {
      const x = x4(batch);
      const result = await inferLinear(models, 'lin', x);
      expect(result.model).toBe('lin');
      expect(result.version).toBe(1);
      expect(result.outputs.y?.shape).toEqual([batch, 3]);
      expect(result.outputs.y?.dtype).toBe('float32');
      expect(allClose(result.outputs.y?.data as number[], lin.expected(x, batch))).toBe(true);
      expect(result.latencyMs).toBeGreaterThan(0);
    }
    expect(models.describe('lin')).toEqual({
      name: 'lin',
      version: 1,
      inputs: [{ name: 'x', dtype: 'float32', shape: ['batch', 4] }],
      outputs: [{ name: 'y', dtype: 'float32', shape: ['batch', 3] }],
    });
  });

  it('takes int64 and float32 inputs side by side (int64 as numbers or decimal strings)', async () => {
    const ids = [1, 2, 3, 4, 5, 6];
    const scale = [0.5, 1, 2, -1, 0, 0.25];
    const result = await models.infer({
      model: 'multi',
      inputs: {
        ids: { dtype: 'int64', shape: [2, 3], data: ['1', 2, '3', 4, 5, '6'] },
        scale: { dtype: 'float32', shape: [2, 3], data: scale },
      },
    });
    const expected = multi.expected(ids, scale);
    expect(allClose(result.outputs.out?.data as number[], expected.out)).toBe(true);
    expect(result.outputs.next_ids).toEqual({ dtype: 'int64', shape: [2, 3], data: expected.next_ids.map(Number) });
  });

  it('carries a recurrent state from one request to the next', async () => {
    let state = new Array<number>(6).fill(0);
    let expected = state;
    for (let step = 0; step < 4; step++) {
      const x = Array.from({ length: 6 }, (_, i) => Math.sin(step + i));
      const result = await models.infer({
        model: 'rec',
        inputs: { x: { dtype: 'float32', shape: [1, 6], data: x }, state_in: { dtype: 'float32', shape: [1, 6], data: state } },
      });
      expected = rec.step(x, expected);
      state = result.outputs.state_out?.data as number[];
      expect(allClose(state, expected)).toBe(true);
      expect(allClose(result.outputs.y?.data as number[], expected)).toBe(true);
    }
  });

  it('serves a model file over 5 MB', async () => {
    expect(big.bytes.length).toBeGreaterThan(5 * 1024 * 1024);
    const x = Array.from({ length: big.inFeatures }, (_, i) => Math.cos(i));
    const result = await models.infer({ model: 'big', inputs: { x: { dtype: 'float32', shape: [1, big.inFeatures], data: x } } });
    expect(allClose(result.outputs.y?.data as number[], big.expected(x), 1e-3)).toBe(true);
  });

  it('lists models with versions and signatures, reports runtime and health', async () => {
    const list = models.list();
    expect(list.map((m) => m.name)).toEqual(['big', 'lin', 'multi', 'rec']);
    expect(list.find((m) => m.name === 'multi')).toMatchObject({
      active: 1,
      versions: [1],
      inputs: [
        { name: 'ids', dtype: 'int64', shape: ['batch', 3] },
        { name: 'scale', dtype: 'float32', shape: ['batch', 3] },
      ],
    });
    expect(models.active()).toEqual([
      { name: 'big', version: 1 },
      { name: 'lin', version: 1 },
      { name: 'multi', version: 1 },
      { name: 'rec', version: 1 },
    ]);
    expect(models.runtime()).toEqual({ version: '1.30.0', executionProviders: ['cpu'] });
    models.drainHealth();
    for (let i = 0; i < 10; i++) await inferLinear(models, 'lin', x4(1));
    await expectCode(inferLinear(models, 'lin', [1, 2, 3]), 'invalid_input');
    const health = models.drainHealth();
    expect(health['lin@1']).toMatchObject({ requests: 11, errors: 1 });
    expect(health['lin@1']?.p50Ms).toBeGreaterThan(0);
    expect(health['lin@1']!.p99Ms!).toBeGreaterThanOrEqual(health['lin@1']!.p50Ms!);
    expect(models.drainHealth()).toEqual({});
  });

  it('refuses each kind of bad input with invalid_input and a sentence saying what was expected', async () => {
    const cases: [TensorMapParams['inputs'], RegExp][] = [
      [{ z: { dtype: 'float32', shape: [1, 4], data: x4(1) } }, /no input "z".*x \(float32 \[batch, 4\]\)/],
      [{}, /missing input x \(float32 \[batch, 4\]\)/],
      [{ x: { dtype: 'float64', shape: [1, 4], data: x4(1) } }, /"x" must be float32, got float64/],
      [{ x: { dtype: 'float32', shape: [4], data: x4(1) } }, /must have 2 dimensions \[batch, 4\], got \[4\]/],
      [{ x: { dtype: 'float32', shape: [1, 5], data: [1, 2, 3, 4, 5] } }, /dimension 1 must be 4.*got 5/],
      [{ x: { dtype: 'float32', shape: [2, 4], data: x4(1) } }, /shape \[2, 4\] holds 8 values, but data has 4/],
      [{ x: { dtype: 'float32', shape: [1, 4], data: [1, 2, 'three', 4] } }, /element 2: expected a number/],
      [{ x: { dtype: 'float32', shape: [1, 4], data: [1, 2, true, 4] } }, /element 2: expected a number/],
      [{ x: { dtype: 'complex' as never, shape: [1, 4], data: x4(1) } }, /dtype must be one of/],
    ];
    for (const [inputs, message] of cases) {
      await expectCode(models.infer({ model: 'lin', inputs }), 'invalid_input', message);
    }
    await expectCode(
      models.infer({
        model: 'multi',
        inputs: { ids: { dtype: 'int64', shape: [2, 3], data: [1, 2, 3, 4, 5, 6] }, scale: { dtype: 'float32', shape: [1, 3], data: [1, 2, 3] } },
      }),
      'invalid_input',
      /dimension "batch" is 2 in input "ids" but 1 in input "scale"/,
    );
    await expectCode(
      models.infer({ model: 'multi', inputs: { ids: { dtype: 'int64', shape: [1, 3], data: ['1.5', 2, 3] }, scale: { dtype: 'float32', shape: [1, 3], data: [1, 2, 3] } } }),
      'invalid_input',
      /expected a int64 as a safe integer or a decimal string/,
    );
    await expectCode(models.infer({ model: 'lin' }), 'invalid_input', /send "inputs"/);
    await expectCode(models.infer({ model: 'lin', raw: { text: 'hello' } }), 'invalid_input', /declares no pre-processing/);
    await expectCode(models.infer({ model: 'nope', inputs: {} }), 'not_found', /"nope" is not active/);
    await expectCode(inferLinear(models, 'lin', x4(1), 1, 2), 'not_found', /lin@2 is not being served; the active version is 1/);
    // The service still answers after all of that.
    expect((await inferLinear(models, 'lin', x4(1))).version).toBe(1);
  });
});

describe('activation, rollback, removal', () => {
  const v1 = linearModel({ seed: 1 });
  const v2 = linearModel({ seed: 2 });
  const v3 = linearModel({ seed: 3 });

  it('swaps versions; every failed activation leaves the old version answering with its reason', async () => {
    const dataDir = await tempDir();
    const models = await open(dataDir);
    await install(models, dataDir, 'm', 1, v1.bytes);
    expect(await models.activate('m', 1)).toEqual({ model: 'm', version: 1, previous: null });
    const x = x4(2, 3);
    const answersV1 = async () => {
      const r = await inferLinear(models, 'm', x);
      expect(r.version).toBe(1);
      expect(allClose(r.outputs.y?.data as number[], v1.expected(x))).toBe(true);
    };

    // Not an ONNX file: refused at install, nothing stored.
    const junk = Buffer.from('this is not a model at all, just some text pretending to be one');
    await expectCode(install(models, dataDir, 'm', 2, junk), 'not_onnx', /not an ONNX model/);
    expect(models.list()[0]?.versions).toEqual([1]);
    // A well-formed ONNX file onnxruntime cannot load (unknown operator).
    const unknownOp = encodeModel({
      name: 'bad',
      inputs: [valueInfo('x', 'float32', ['batch', 4])],
      outputs: [valueInfo('y', 'float32', ['batch', 4])],
      nodes: [node('NoSuchOperator', ['x'], ['y'])],
    });
    await install(models, dataDir, 'm', 3, unknownOp);
    await expectCode(models.activate('m', 3), 'load_failed', /m@3 does not load in onnxruntime 1\.30\.0/);
    await answersV1();
    // Loads, but fails at run time on zeros; then one that answers NaN.
    await install(models, dataDir, 'm', 4, alwaysFailingModel().bytes);
    await expectCode(models.activate('m', 4), 'smoke_test_failed', /m@4 failed its activation check \(zeros\): fed zeros of the declared input shapes.*\(x: float32 \[1, 4\]\); onnxruntime failed on it: .*--sample.*--check load.*The previous version, m@1, keeps serving\./);
    await answersV1();
    await install(models, dataDir, 'm', 5, nanModel().bytes);
    await expectCode(models.activate('m', 5), 'smoke_test_failed', /contains NaN/);
    await answersV1();
    // A sample input in the manifest that does not fit the model fails the smoke test too.
    await install(models, dataDir, 'm', 6, v2.bytes, { sample: { x: { dtype: 'float32', shape: [1, 3], data: [1, 2, 3] } } });
    await expectCode(models.activate('m', 6), 'smoke_test_failed', /fed the manifest's sample request; it does not fit the model/);
    await answersV1();
    // Missing version; missing file on disk.
    await expectCode(models.activate('m', 99), 'not_found', /m@99 is not installed/);
    await install(models, dataDir, 'm', 7, v2.bytes);
    await rm(join(dataDir, 'models', 'm', '7', 'model.onnx'));
    await expectCode(models.activate('m', 7), 'not_found', /model file is missing/);
    await answersV1();
    // A stored file that stopped being ONNX (damaged on disk) is caught before onnxruntime sees it.
    await writeFile(join(dataDir, 'models', 'm', '7', 'model.onnx'), junk);
    await expectCode(models.activate('m', 7), 'not_onnx', /m@7 is not an ONNX model/);
    await answersV1();
    expect(models.active()).toEqual([{ name: 'm', version: 1 }]);

    // A good version then takes over.
    await install(models, dataDir, 'm', 8, v2.bytes, { sample: { x: { dtype: 'float32', shape: [1, 4], data: [1, 2, 3, 4] } } });
    expect(await models.activate('m', 8)).toEqual({ model: 'm', version: 8, previous: 1 });
    const r = await inferLinear(models, 'm', x);
    expect(r.version).toBe(8);
    expect(allClose(r.outputs.y?.data as number[], v2.expected(x))).toBe(true);
    // Failed versions below the active one were pruned; v1, kept for rollback, is described from its file.
    expect(models.list()[0]?.versions).toEqual([1, 8]);
    expect(models.describe('m', 1)).toEqual({
      name: 'm',
      version: 1,
      inputs: [{ name: 'x', dtype: 'float32', shape: ['batch', 4] }],
      outputs: [{ name: 'y', dtype: 'float32', shape: ['batch', 3] }],
    });
    await models.close();
  });

  it('checks the staged file against its manifest when installing', async () => {
    const dataDir = await tempDir();
    const models = await open(dataDir);
    const manifest = testManifest('m', 1, v1.bytes);
    await expectCode(models.install(manifest, join(dataDir, 'no-such-file')), 'not_found');
    await expectCode(models.install(manifest, await stageFile(dataDir, v1.bytes.subarray(0, 100))), 'truncated');
    await expectCode(models.install(manifest, await stageFile(dataDir, Buffer.concat([v1.bytes, Buffer.from([0])]))), 'too_long');
    const flipped = Buffer.from(v1.bytes);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 0xff;
    await expectCode(models.install(manifest, await stageFile(dataDir, flipped)), 'corrupt_chunk', /sha256/);
    await expectCode(models.install({ ...manifest, name: '../etc' }, await stageFile(dataDir, v1.bytes)), 'invalid_params');
    const staged = await stageFile(dataDir, v1.bytes);
    await models.install(manifest, staged);
    expect(existsSync(staged)).toBe(false); // moved, not copied
    await models.install(manifest, await stageFile(dataDir, v1.bytes)); // same bytes again: a no-op
    expect(models.list()).toEqual([{ name: 'm', active: null, versions: [1] }]);
    await models.close();
  });

  it('rolls back only with an operator-signed manifest below the highest accepted version', async () => {
    const dataDir = await tempDir();
    const keys = generateFleetKeys();
    const identity = { id: 'dev-1', groups: [], arch: 'x64' };
    const models = await open(dataDir, { publicKeyPem: keys.publicKeyPem, identity });
    await expectCode(models.rollback('m'), 'not_found', /no previous version/);
    const m1 = await install(models, dataDir, 'm', 1, v1.bytes);
    await models.activate('m', 1);
    await install(models, dataDir, 'm', 2, v2.bytes);
    await models.activate('m', 2);
    expect(models.highestAccepted('m')).toBe(2);
    // Activating the lower version directly is refused; so is an unsigned rollback.
    await expectCode(models.activate('m', 1), 'lower_version');
    await expectCode(models.rollback('m'), 'lower_version', /signed by the operator/);
    // Signed by another key; signed but not marked rollback; expired.
    const other = generateFleetKeys();
    await expectCode(models.rollback('m', signManifest({ ...m1, rollback: true }, other.privateKeyPem)), 'bad_signature');
    await expectCode(models.rollback('m', signManifest({ ...m1, rollback: false }, keys.privateKeyPem)), 'lower_version');
    const past = new Date(Date.now() - 1000).toISOString();
    await expectCode(
      models.rollback('m', signManifest({ ...m1, rollback: true, issuedAt: past, expiresAt: past }, keys.privateKeyPem)),
      'expired',
    );
    await expectCode(models.rollback('m', signManifest({ ...m1, rollback: true, target: { devices: ['dev-2'] } }, keys.privateKeyPem)), 'wrong_target');
    expect(models.active()).toEqual([{ name: 'm', version: 2 }]);
    // Signed as a rollback but without a sequence number: it could be replayed, so it is refused.
    await expectCode(models.rollback('m', signManifest({ ...m1, rollback: true }, keys.privateKeyPem)), 'lower_version', /no sequence number/);
    // The real thing.
    const fresh = signManifest({ ...m1, rollback: true, rollbackSeq: 5 }, keys.privateKeyPem);
    expect(await models.rollback('m', fresh)).toEqual({ model: 'm', version: 1, previous: 2 });
    const x = x4(1);
    expect(allClose((await inferLinear(models, 'm', x)).outputs.y?.data as number[], v1.expected(x))).toBe(true);
    expect(models.highestAccepted('m')).toBe(2); // rollback does not lower the mark
    // v2 (higher than the active one) is kept on disk, so activating it again needs no transfer.
    expect(models.list()[0]?.versions).toEqual([1, 2]);
    expect(await models.activate('m', 2)).toEqual({ model: 'm', version: 2, previous: 1 });
    // The same rollback manifest again (or one with a lower number) is a replay: refused, v2 keeps serving, also after a restart.
    await expectCode(models.rollback('m', fresh), 'replayed', /already used 5 for m/);
    await expectCode(models.rollback('m', signManifest({ ...m1, rollback: true, rollbackSeq: 4 }, keys.privateKeyPem)), 'replayed');
    await models.close();
    const reopened = await open(dataDir, { publicKeyPem: keys.publicKeyPem, identity });
    expect(reopened.lastRollbackSeq('m')).toBe(5);
    await expectCode(reopened.rollback('m', fresh), 'replayed');
    expect(reopened.active()).toEqual([{ name: 'm', version: 2 }]);
    expect(await reopened.rollback('m', signManifest({ ...m1, rollback: true, rollbackSeq: 6 }, keys.privateKeyPem))).toMatchObject({ version: 1 });
    await reopened.close();
  });

  it('a stored rollback manifest is used up: going below the highest accepted again needs a fresh signed one', async () => {
    const dataDir = await tempDir();
    const models = await open(dataDir);
    await install(models, dataDir, 'm', 2, v2.bytes);
    await models.activate('m', 2);
    await install(models, dataDir, 'm', 1, v1.bytes, { rollback: true, rollbackSeq: 1 });
    // A lower version whose manifest the operator signed as a rollback is not activated by name, nor by an unsigned rollback...
    await expectCode(models.activate('m', 1), 'lower_version', /fresh operator-signed manifest/);
    await install(models, dataDir, 'm', 3, v3.bytes);
    await models.activate('m', 3);
    await expectCode(models.rollback('m'), 'lower_version', /fresh rollback manifest/);
    expect(models.active()).toEqual([{ name: 'm', version: 3 }]);
    await models.close();
  });

  it('refuses to remove the active version, removes others, prunes beyond keepVersions', async () => {
    const dataDir = await tempDir();
    const models = await open(dataDir, { keepVersions: 1 });
    const versions = [linearModel({ seed: 11 }), linearModel({ seed: 12 }), linearModel({ seed: 13 }), linearModel({ seed: 14 })];
    for (const [i, m] of versions.entries()) {
      await install(models, dataDir, 'm', i + 1, m.bytes);
      await models.activate('m', i + 1);
    }
    // Active 4, one previous (3) kept; 1 and 2 deleted from disk.
    expect((await readdir(join(dataDir, 'models', 'm'))).sort()).toEqual(['3', '4']);
    expect(models.list()[0]).toMatchObject({ active: 4, versions: [3, 4] });
    await expectCode(models.remove('m', 4), 'conflict', /active version/);
    expect(await models.remove('m', 1)).toEqual({ removed: false });
    expect(await models.remove('m', 3)).toEqual({ removed: true });
    expect(existsSync(join(dataDir, 'models', 'm', '3'))).toBe(false);
    await expectCode(models.rollback('m'), 'not_found');
    expect((await inferLinear(models, 'm', x4(1))).version).toBe(4);
    await models.close();
  });

  it('persists active versions, history and highest accepted across a restart', async () => {
    const dataDir = await tempDir();
    let models = await open(dataDir);
    await install(models, dataDir, 'm', 1, v1.bytes);
    await models.activate('m', 1);
    await install(models, dataDir, 'm', 2, v2.bytes);
    await models.activate('m', 2);
    await models.recordAccepted('m', 5);
    await models.recordAccepted('m', 3); // lower: no change
    await models.recordAccepted('other', 7);
    await models.close();
    const state = JSON.parse(await readFile(join(dataDir, 'models', 'state.json'), 'utf8'));
    expect(state.models.m).toEqual({ active: 2, history: [1], highestAccepted: 5, rollbackSeq: 0 });

    models = await open(dataDir);
    expect(models.active()).toEqual([{ name: 'm', version: 2 }]);
    expect(models.highestAccepted('m')).toBe(5);
    expect(models.highestAccepted('other')).toBe(7);
    expect(models.highestAccepted('never-seen')).toBe(0);
    const x = x4(1);
    expect(allClose((await inferLinear(models, 'm', x)).outputs.y?.data as number[], v2.expected(x))).toBe(true);
    await models.close();

    // If the active file was lost anyway (disk damage), the agent serves the previous version rather than nothing.
    await writeFile(join(dataDir, 'models', 'm', '2', 'model.onnx'), 'garbage');
    models = await open(dataDir);
    expect(models.active()).toEqual([{ name: 'm', version: 1 }]);
    await models.close();
  });
});

describe('close', () => {
  it('waits for inferences in flight, then refuses new ones', async () => {
    const dataDir = await tempDir();
    const models = await open(dataDir);
    const lin = linearModel();
    await install(models, dataDir, 'm', 1, lin.bytes);
    await models.activate('m', 1);
    const pending = Array.from({ length: 50 }, () => inferLinear(models, 'm', x4(1)));
    const closed = models.close();
    await expectCode(inferLinear(models, 'm', x4(1)), 'unavailable');
    const results = await Promise.all(pending);
    await closed;
    expect(results.every((r) => r.version === 1)).toBe(true);
  });
});
