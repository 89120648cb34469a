/**
 * The tensor JSON codec: every dtype onnxruntime supports goes JSON → onnxruntime → (Identity model) →
 * JSON unchanged, and bad values are refused with a sentence.
 */
import { describe, it, expect, afterAll, beforeAll } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { FleetError } from '@edgefleet/protocol';
import type { Tensor } from '@edgefleet/protocol';
import { createModelService, decodeTensor, encodeTensor, fromHalfBits, toHalfBits } from '../src/models/index.js';
import type { ModelService } from '../src/models/index.js';
import { identityModel, stageFile, testManifest } from '../../test/support/onnx-models.js';
import type { ElemType } from '../../test/support/onnx-models.js';

const SAMPLES: Record<ElemType, Tensor['data']> = {
  float32: [0, 1.5, -2.25, 3.4028234663852886e38, 'NaN', 'Infinity', '-Infinity'],
  float64: [0, 0.1, -1e300, 5e-324, 'NaN', 'Infinity', '-Infinity'],
  float16: [0, 1, -2, 0.5, 65504, 6.103515625e-5, 5.960464477539063e-8, 'NaN', 'Infinity', '-Infinity'],
  int8: [-128, -1, 0, 127],
  int16: [-32768, 0, 32767],
  int32: [-2147483648, 0, 2147483647],
  int64: ['-9223372036854775808', '0', '9223372036854775807', '12345678901234567'],
  uint8: [0, 1, 255],
  uint16: [0, 65535],
  uint32: [0, 4294967295],
  uint64: ['0', '18446744073709551615', '9007199254740993'],
  bool: [true, false, true],
  string: ['', 'hello', 'ünïcödé ✓', 'a "quoted" word'],
};

describe('tensor codec', () => {
  const dirs: string[] = [];
  let models: ModelService;

  beforeAll(async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'edgefleet-tensors-'));
    dirs.push(dataDir);
    models = await createModelService({ dataDir, logger: pino({ level: 'silent' }), threads: 1 });
    for (const dtype of Object.keys(SAMPLES) as ElemType[]) {
      const bytes = identityModel(dtype, ['n']).bytes;
      const name = `id-${dtype}`;
      await models.install(testManifest(name, 1, bytes), await stageFile(join(dataDir, 'staging'), bytes));
      await models.activate(name, 1);
    }
  });
  afterAll(async () => {
    await models.close();
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  it.each(Object.keys(SAMPLES) as ElemType[])('%s round-trips through onnxruntime unchanged', async (dtype) => {
    const data = SAMPLES[dtype];
    const result = await models.infer({ model: `id-${dtype}`, inputs: { in: { dtype, shape: [data.length], data } } });
    expect(result.outputs.out).toEqual({ dtype, shape: [data.length], data });
  });

  // Large models run on a worker thread (session.ts); every dtype must cross the thread boundary intact too.
  describe('with every session on a worker thread', () => {
    let onWorker: ModelService;
    beforeAll(async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'edgefleet-tensors-worker-'));
      dirs.push(dataDir);
      onWorker = await createModelService({ dataDir, logger: pino({ level: 'silent' }), threads: 1, workerSessionBytes: 0 });
      for (const dtype of Object.keys(SAMPLES) as ElemType[]) {
        const bytes = identityModel(dtype, ['n']).bytes;
        await onWorker.install(testManifest(`id-${dtype}`, 1, bytes), await stageFile(join(dataDir, 'staging'), bytes));
        await onWorker.activate(`id-${dtype}`, 1);
      }
    });
    afterAll(() => onWorker.close());

    it.each(Object.keys(SAMPLES) as ElemType[])('%s round-trips unchanged', async (dtype) => {
      const data = SAMPLES[dtype];
      const result = await onWorker.infer({ model: `id-${dtype}`, inputs: { in: { dtype, shape: [data.length], data } } });
      expect(result.outputs.out).toEqual({ dtype, shape: [data.length], data });
    });
  });

  it('sends small int64 values as numbers and accepts both forms', async () => {
    const result = await models.infer({ model: 'id-int64', inputs: { in: { dtype: 'int64', shape: [3], data: [1, '-2', 3] } } });
    expect(result.outputs.out?.data).toEqual([1, -2, 3]);
  });

  it('accepts 0/1 for bool and keeps empty and multi-dimensional shapes', async () => {
    expect((await models.infer({ model: 'id-bool', inputs: { in: { dtype: 'bool', shape: [2], data: [1, 0] } } })).outputs.out?.data).toEqual([true, false]);
    expect((await models.infer({ model: 'id-float32', inputs: { in: { dtype: 'float32', shape: [0], data: [] } } })).outputs.out).toEqual({
      dtype: 'float32',
      shape: [0],
      data: [],
    });
  });

  it('converts float16 exactly where half precision can, rounding to nearest even elsewhere', () => {
    const wrong: number[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      const v = fromHalfBits(bits);
      const ok = Number.isNaN(v) ? Number.isNaN(fromHalfBits(toHalfBits(v))) : toHalfBits(v) === bits;
      if (!ok) wrong.push(bits);
    }
    expect(wrong).toEqual([]);
    expect(fromHalfBits(toHalfBits(0.1))).toBeCloseTo(0.0999755859375, 12);
    expect(fromHalfBits(toHalfBits(1 + 2 ** -11))).toBe(1); // tie → even
    expect(fromHalfBits(toHalfBits(1e6))).toBe(Infinity);
    expect(toHalfBits(1e-10)).toBe(0);
  });

  it('refuses values that do not fit the dtype, naming the element', () => {
    const cases: [unknown, RegExp][] = [
      [{ dtype: 'int8', shape: [1], data: [128] }, /element 0: expected an integer from -128 to 127/],
      [{ dtype: 'uint8', shape: [1], data: [-1] }, /from 0 to 255/],
      [{ dtype: 'int32', shape: [1], data: [1.5] }, /expected an integer/],
      [{ dtype: 'int64', shape: [1], data: ['9223372036854775808'] }, /int64/],
      [{ dtype: 'uint64', shape: [1], data: ['-1'] }, /uint64/],
      [{ dtype: 'int64', shape: [1], data: [2 ** 60] }, /safe integer or a decimal string/],
      [{ dtype: 'bool', shape: [1], data: ['yes'] }, /expected true or false/],
      [{ dtype: 'string', shape: [1], data: [5] }, /expected a string/],
      [{ dtype: 'float32', shape: [1], data: ['1.5'] }, /expected a number/],
      [{ dtype: 'float32', shape: [-1], data: [] }, /non-negative integers/],
      [{ dtype: 'float32', shape: [2], data: 'ab' }, /data must be an array/],
      [[1, 2], /must be an object/],
    ];
    for (const [tensor, message] of cases) {
      let error: unknown;
      try {
        decodeTensor('t', tensor);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(FleetError);
      expect((error as FleetError).code).toBe('invalid_input');
      expect((error as FleetError).message).toMatch(message);
    }
  });

  it('decodes and encodes without onnxruntime in between', () => {
    const t = decodeTensor('t', { dtype: 'uint64', shape: [2, 1], data: [1, '2'] });
    expect(t.dims).toEqual([2, 1]);
    expect(encodeTensor(t)).toEqual({ dtype: 'uint64', shape: [2, 1], data: [1, 2] });
  });
});
