/** The ONNX test models load in a bare onnxruntime session and give the outputs their builders predict. */
import { describe, it, expect } from '@jest/globals';
import ort from 'onnxruntime-node';
import {
  allClose,
  alwaysFailingModel,
  dataDependentFailingModel,
  identityModel,
  imageClassifierModel,
  largeModel,
  linearModel,
  multiInputModel,
  nanModel,
  opsetModel,
  readOpset,
  recurrentModel,
  reshapeInputModel,
  resizeInputModel,
  slowModel,
  streamingModel,
  textBowModel,
  tritonExampleModel,
} from '../../test/support/onnx-models.js';

const load = (bytes: Buffer) => ort.InferenceSession.create(bytes);

describe('ONNX test model builders', () => {
  it('linear: symbolic batch dim, y = xW + b', async () => {
    const m = linearModel({ seed: 3 });
    const s = await load(m.bytes);
    const meta = s.inputMetadata[0];
    expect(meta && meta.isTensor && meta.shape).toEqual(['batch', 4]);
    for (const batch of [1, 5]) {
      const x = Float32Array.from({ length: batch * 4 }, (_, i) => i / 3 - 1);
      const out = await s.run({ x: new ort.Tensor('float32', x, [batch, 4]) });
      expect(out.y?.dims).toEqual([batch, 3]);
      expect(allClose(out.y?.data as Float32Array, m.expected(x, batch))).toBe(true);
    }
    await s.release();
  });

  it('multi-input: int64 and float32 side by side', async () => {
    const m = multiInputModel();
    const s = await load(m.bytes);
    const ids = BigInt64Array.from([1n, 2n, 3n, 40n, 50n, 60n]);
    const scale = Float32Array.from([0.5, 1, 2, -1, 0, 0.25]);
    const out = await s.run({ ids: new ort.Tensor('int64', ids, [2, 3]), scale: new ort.Tensor('float32', scale, [2, 3]) });
    const e = m.expected(ids, scale);
    expect(allClose(out.out?.data as Float32Array, e.out)).toBe(true);
    expect(Array.from(out.next_ids?.data as BigInt64Array)).toEqual(e.next_ids);
    await s.release();
  });

  it('recurrent: state_out feeds the next step', async () => {
    const m = recurrentModel({ hidden: 4 });
    const s = await load(m.bytes);
    let state = [0, 0, 0, 0];
    let jsState = [0, 0, 0, 0];
    for (const x of [[1, 2, 3, 4], [-1, 0.5, 0, 2]]) {
      const out = await s.run({ x: new ort.Tensor('float32', Float32Array.from(x), [1, 4]), state_in: new ort.Tensor('float32', Float32Array.from(state), [1, 4]) });
      state = Array.from(out.state_out?.data as Float32Array);
      jsState = m.step(x, jsState);
      expect(allClose(state, jsState)).toBe(true);
    }
    await s.release();
  });

  it('large: over 5 MB and still exact', async () => {
    const m = largeModel();
    expect(m.bytes.length).toBeGreaterThan(5 * 1024 * 1024);
    const s = await load(m.bytes);
    const x = Float32Array.from({ length: m.inFeatures }, (_, i) => Math.sin(i));
    const out = await s.run({ x: new ort.Tensor('float32', x, [1, m.inFeatures]) });
    expect(allClose(out.y?.data as Float32Array, m.expected(x), 1e-3)).toBe(true);
    await s.release();
  });

  it('slow: identity chain gives x back', async () => {
    const m = slowModel({ matmuls: 10, size: 32 });
    const s = await load(m.bytes);
    const x = Float32Array.from({ length: 32 }, (_, i) => i);
    const out = await s.run({ x: new ort.Tensor('float32', x, [1, 32]) });
    expect(Array.from(out.y?.data as Float32Array)).toEqual(Array.from(x));
    await s.release();
  });

  it('failing models: always failing, NaN, data dependent', async () => {
    const zeros = new ort.Tensor('float32', new Float32Array(4), [1, 4]);
    const f = await load(alwaysFailingModel().bytes);
    await expect(f.run({ x: zeros })).rejects.toThrow();
    const n = await load(nanModel().bytes);
    const nan = await n.run({ x: zeros });
    expect(Array.from(nan.y?.data as Float32Array).every(Number.isNaN)).toBe(true);
    const dm = dataDependentFailingModel();
    const d = await load(dm.bytes);
    const ok = await d.run({ x: new ort.Tensor('float32', Float32Array.from([0, 1, 2, 3]), [1, 4]) });
    expect(Array.from(ok.y?.data as Float32Array)).toEqual(dm.table);
    await expect(d.run({ x: new ort.Tensor('float32', Float32Array.from([9, 9, 9, 9]), [1, 4]) })).rejects.toThrow();
    await Promise.all([f.release(), n.release(), d.release()]);
  });

  it('image classifier (NCHW and NHWC) and text bag of words', async () => {
    for (const layout of ['NCHW', 'NHWC'] as const) {
      const m = imageClassifierModel({ height: 4, width: 4, classes: 3, layout });
      const s = await load(m.bytes);
      const means: [number, number, number] = [0.5, -1, 2];
      const data = new Float32Array(48);
      for (let i = 0; i < 48; i++) data[i] = layout === 'NCHW' ? means[Math.floor(i / 16)]! : means[i % 3]!;
      const out = await s.run({ image: new ort.Tensor('float32', data, layout === 'NCHW' ? [1, 3, 4, 4] : [1, 4, 4, 3]) });
      expect(allClose(out.logits?.data as Float32Array, m.logits(means))).toBe(true);
      await s.release();
    }
    const t = textBowModel({ vocabularySize: 6, weights: [0, 2, 2, -2, -2, 0], bias: -0.5 });
    const s = await load(t.bytes);
    const hot = new Float32Array(6);
    hot[1] = 1;
    hot[2] = 1;
    const out = await s.run({ words: new ort.Tensor('float32', hot, [1, 6]) });
    expect(allClose(out.score?.data as Float32Array, [t.score([1, 2])])).toBe(true);
    await s.release();
  });

  it('identity models for every dtype, and a chosen opset', async () => {
    for (const dtype of ['float32', 'float64', 'float16', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64', 'bool', 'string'] as const) {
      const s = await load(identityModel(dtype).bytes);
      expect(s.inputMetadata[0]).toMatchObject({ name: 'in', type: dtype });
      await s.release();
    }
    const m = opsetModel(17);
    expect(readOpset(m.bytes)).toBe(17);
    const s = await load(m.bytes);
    const out = await s.run({ x: new ort.Tensor('float32', Float32Array.from([-1, 2, -3, 4]), [1, 4]) });
    expect(Array.from(out.y?.data as Float32Array)).toEqual([0, 2, 0, 4]);
    await s.release();
  });

  it("the protocol's example model: output0[i][j] = input1[i] · column sum j of input0", async () => {
    const m = tritonExampleModel();
    const s = await load(m.bytes);
    const out = await s.run({
      input0: new ort.Tensor('uint32', Uint32Array.from([1, 2, 3, 4]), [2, 2]),
      input1: new ort.Tensor('bool', Uint8Array.from([1, 0, 1]), [3]),
    });
    expect(out.output0?.dims).toEqual([3, 2]);
    expect(Array.from(out.output0?.data as Float32Array)).toEqual(m.expected([1, 2, 3, 4], [true, false, true]));
    await s.release();
  });

  it('models whose zero input is invalid: they fail on zeros and work on a real input', async () => {
    const zeros = async (bytes: Buffer, feeds: Record<string, ort.Tensor>) => {
      const s = await load(bytes);
      try {
        return await s.run(feeds);
      } finally {
        await s.release();
      }
    };
    const reshape = reshapeInputModel().bytes;
    await expect(zeros(reshape, { x: new ort.Tensor('float32', new Float32Array(1), [1]), shape: new ort.Tensor('int64', new BigInt64Array(2), [2]) })).rejects.toThrow();
    const r = await zeros(reshape, { x: new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4, 5, 6]), [6]), shape: new ort.Tensor('int64', BigInt64Array.from([2n, 3n]), [2]) });
    expect(r.y?.dims).toEqual([2, 3]);

    const resize = resizeInputModel().bytes;
    await expect(zeros(resize, { x: new ort.Tensor('float32', new Float32Array(1), [1, 1, 1, 1]), scales: new ort.Tensor('float32', new Float32Array(4), [4]) })).rejects.toThrow();
    const z = await zeros(resize, { x: new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [1, 1, 2, 2]), scales: new ort.Tensor('float32', Float32Array.from([1, 1, 2, 2]), [4]) });
    expect(z.y?.dims).toEqual([1, 1, 4, 4]);

    const m = streamingModel();
    const feeds = (x: number[], sr: bigint) => ({
      x: new ort.Tensor('float32', Float32Array.from(x), [1, x.length]),
      state_in: new ort.Tensor('float32', new Float32Array(4), [1, 4]),
      sr: new ort.Tensor('int64', BigInt64Array.from([sr]), []),
    });
    await expect(zeros(m.bytes, feeds([0], 0n))).rejects.toThrow();
    const x = Array.from({ length: 480 }, (_, i) => Math.sin(i / 7));
    const st = await zeros(m.bytes, feeds(x, 16000n));
    expect(allClose(st.y?.data as Float32Array, m.step(x, [0, 0, 0, 0], 16000))).toBe(true);
  });
});
