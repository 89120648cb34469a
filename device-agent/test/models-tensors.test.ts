/**
 * The tensor codec: every dtype onnxruntime supports goes JSON → onnxruntime → (Identity model) → JSON
 * unchanged, and binary → onnxruntime → binary byte for byte (as views when aligned, copied when not),
 * inline and across a worker thread; bad values are refused with a sentence.
 */
import { describe, it, expect, afterAll, beforeAll } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { FleetError, OIP_DATATYPE } from '@edgefleet/protocol';
import type { Tensor } from '@edgefleet/protocol';
import { createModelService, decodeTensor, encodeTensor, fromHalfBits, tensorBytes, tensorFromBytes, toHalfBits } from '../src/models/index.js';
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

  /** The binary tensor data of the JSON sample, at `offset` bytes into a larger buffer (a view). */
  function binaryAt(dtype: ElemType, offset: number): Uint8Array {
    const bytes = tensorBytes(decodeTensor('in', { dtype, shape: [SAMPLES[dtype].length], data: SAMPLES[dtype] }));
    const host = new Uint8Array(offset + bytes.byteLength + 3);
    host.set(bytes, offset);
    return host.subarray(offset, offset + bytes.byteLength);
  }

  async function binaryRoundTrip(service: ModelService, dtype: ElemType, offset: number): Promise<void> {
    const input = binaryAt(dtype, offset);
    const header = { inputs: [{ name: 'in', datatype: OIP_DATATYPE[dtype], shape: [SAMPLES[dtype].length], parameters: { binary_data_size: input.byteLength } }], parameters: { binary_data_output: true } };
    const answer = await service.answer({ model: `id-${dtype}`, ...header }, input);
    expect(answer.result).toMatchObject({ outputs: [{ name: 'out', parameters: { binary_data_size: input.byteLength } }] });
    expect(Buffer.from(answer.binary[0]!)).toEqual(Buffer.from(input));
  }

  it.each(Object.keys(SAMPLES) as ElemType[])('%s round-trips as binary data byte for byte, aligned or not', async (dtype) => {
    await binaryRoundTrip(models, dtype, 8);
    await binaryRoundTrip(models, dtype, 3);
  });

  it('binary tensor data is viewed in place when aligned and copied when not', () => {
    const aligned = binaryAt('float32', 8);
    expect((tensorFromBytes('in', 'float32', [7], aligned).data as Float32Array).buffer).toBe(aligned.buffer);
    const unaligned = binaryAt('float32', 3);
    const copied = tensorFromBytes('in', 'float32', [7], unaligned);
    expect((copied.data as Float32Array).buffer).not.toBe(unaligned.buffer);
    expect(encodeTensor(copied).data).toEqual(SAMPLES.float32);
    const refuse = (fn: () => unknown, message: RegExp) => expect(fn).toThrow(message);
    refuse(() => tensorFromBytes('b', 'bool', [2], Uint8Array.of(1, 2)), /element 1: a BOOL is one byte, 0 or 1, got 2/);
    refuse(() => tensorFromBytes('s', 'string', [1], Uint8Array.of(2, 0, 0, 0, 0xff, 0xfe)), /BYTES element 0 is not valid UTF-8/);
    refuse(() => tensorFromBytes('x', 'float32', [2], new Uint8Array(6)), /float32 \[2\] is 8 bytes of binary data, but binary_data_size is 6/);
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
      await binaryRoundTrip(onWorker, dtype, 8);
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
      [{ dtype: 'float32', shape: [2], data: [1, 1e39] }, /element 1: 1e\+39 is out of float32's range \(±3\.4028235e38\); send "Infinity"/],
      [{ dtype: 'float32', shape: [1], data: [-3.5e38] }, /out of float32's range/],
      [{ dtype: 'float16', shape: [1], data: [65520] }, /65520 is out of float16's range \(±65504\)/],
      [{ dtype: 'float64', shape: [1], data: [Infinity] }, /beyond|out of float64's range/],
      [{ dtype: 'float32', shape: [2, 2], data: [[1, 2], [3]] }, /nested data at \[1\] must be an array of 2 \(dimension 1 of \[2, 2\]\), got 1 entries/],
      [{ dtype: 'float32', shape: [2], data: [[1], [2]] }, /nested deeper than its 1 dimensions/],
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

  it('takes nested data as the shape says, and the largest float32 and float16 values', () => {
    expect(encodeTensor(decodeTensor('t', { dtype: 'int32', shape: [2, 2, 1], data: [[[1], [2]], [[3], [4]]] })).data).toEqual([1, 2, 3, 4]);
    expect(encodeTensor(decodeTensor('t', { dtype: 'float32', shape: [1], data: [3.4028235e38] })).data).toEqual([3.4028234663852886e38]);
    expect(encodeTensor(decodeTensor('t', { dtype: 'float16', shape: [1], data: [65519] })).data).toEqual([65504]);
  });

  it('decodes and encodes without onnxruntime in between', () => {
    const t = decodeTensor('t', { dtype: 'uint64', shape: [2, 1], data: [1, '2'] });
    expect(t.dims).toEqual([2, 1]);
    expect(encodeTensor(t)).toEqual({ dtype: 'uint64', shape: [2, 1], data: [1, 2] });
  });
});
