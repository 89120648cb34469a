/**
 * Per-version activation checks in the registry, with real onnxruntime sessions on models built here:
 * a sample request is checked against the model's declared inputs when the version is added (refused with
 * what does not fit, nothing stored), kept content-addressed and described in the record; the check is
 * part of what a version is (same bytes + same check = same version); expected outputs are checked against
 * the declared outputs, or computed by the controller's onnxruntime (NaN refused unless allowed); files no
 * version names go with the last version naming them, or after an hour; the manifest carries a small
 * sample inline and a large one by hash.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { SAMPLE_INLINE_MAX_BYTES, encodeInferBody, signManifest, generateFleetKeys, chunkHashes } from '@edgefleet/protocol';
import { openState } from '../src/state/repository.js';
import { createRegistry } from '../src/models/registry.js';
import { UNUSED_CHECK_FILE_MS } from '../src/models/check-files.js';
import { deliveryCheck } from '../src/delivery/check.js';
import { buildManifest } from '../src/delivery/manifest.js';
import { linearModel, nanModel, reshapeInputModel, streamingModel } from '../../test/support/onnx-models.js';
import { refusal } from '../../test/support/refusal.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'checks-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function fresh(label: string) {
  const dataDir = join(dir, label);
  const db = await openState(join(dataDir, 'state.json'));
  return { dataDir, registry: createRegistry(db, dataDir) };
}

async function file(name: string, bytes: Uint8Array): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  return path;
}

const json = (body: unknown) => Buffer.from(JSON.stringify(body));
const reshapeSample = { inputs: [{ name: 'x', datatype: 'FP32', shape: [6], data: [1, 2, 3, 4, 5, 6] }, { name: 'shape', datatype: 'INT64', shape: [2], data: [2, 3] }] };

/** The streaming model's sample in the binary extension's layout: x [1, 400], state [1, 4], sr = 16000. */
function streamingBinarySample() {
  const x = Float32Array.from({ length: 400 }, (_, i) => Math.sin(i / 7));
  const state = Float32Array.of(0.1, -0.2, 0.3, 0);
  const sr = BigInt64Array.of(16000n);
  const parts = [x, state, sr].map((a) => new Uint8Array(a.buffer));
  const header = {
    inputs: [
      { name: 'x', datatype: 'FP32', shape: [1, 400], parameters: { binary_data_size: parts[0]!.byteLength } },
      { name: 'state_in', datatype: 'FP32', shape: [1, 4], parameters: { binary_data_size: parts[1]!.byteLength } },
      { name: 'sr', datatype: 'INT64', shape: [], parameters: { binary_data_size: parts[2]!.byteLength } },
    ],
  };
  return { ...encodeInferBody(header, parts), header, x, state, sr };
}

describe('a sample request, checked when the version is added', () => {
  it('fits the declared inputs: kept, described in the record, policy sample by default; the check is part of the version', async () => {
    const { registry } = await fresh('fits');
    const model = await file('reshape.onnx', reshapeInputModel().bytes);
    const upload = await registry.putSample(json(reshapeSample));
    expect(upload).toMatchObject({ headerLength: null, form: 'oip', inputs: ['x', 'shape'] });
    const v1 = await registry.add(model, { name: 'reshape', check: { sample: upload.sha256 } });
    expect(v1.check).toEqual({
      policy: 'sample',
      allowNaN: false,
      sample: { sha256: upload.sha256, length: upload.length, headerLength: null, inputs: [{ name: 'x', dtype: 'float32', shape: [6] }, { name: 'shape', dtype: 'int64', shape: [2] }] },
      expected: null,
    });
    // the same bytes with the same check: the same version; with another check: a new one
    expect(await registry.add(model, { name: 'reshape', check: { sample: upload.sha256 } })).toMatchObject({ version: 1, created: false });
    const v2 = await registry.add(model, { name: 'reshape', check: { policy: 'load' } });
    expect(v2).toMatchObject({ version: 2, created: true, check: { policy: 'load', sample: null } });
    const v3 = await registry.add(model, { name: 'reshape' });
    expect(v3).toMatchObject({ version: 3, check: { policy: 'zeros' } });
  });

  it.each([
    ['an input the model lacks', { inputs: [{ name: 'y', datatype: 'FP32', shape: [1], data: [1] }] }, /does not fit reshape: reshape has no input "y"; it expects x \(float32 \[n\]\), shape \(int64 \[2\]\)/],
    ['a wrong dtype', { inputs: [reshapeSample.inputs[0], { name: 'shape', datatype: 'INT32', shape: [2], data: [2, 3] }] }, /input "shape" must be int64, got int32/],
    ['a wrong fixed dimension', { inputs: [reshapeSample.inputs[0], { name: 'shape', datatype: 'INT64', shape: [3], data: [1, 2, 3] }] }, /input "shape" dimension 0 must be 2/],
    ['a missing input', { inputs: [reshapeSample.inputs[0]] }, /missing input shape \(int64 \[2\]\)/],
    ['data that does not fill its shape', { inputs: [{ name: 'x', datatype: 'FP32', shape: [6], data: [1, 2] }, reshapeSample.inputs[1]] }, /shape \[6\] holds 6 values, but data has 2/],
  ])('refuses %s with what is wrong, and stores no version', async (_label, body, sentence) => {
    const { registry } = await fresh(`refuse-${String(_label).replace(/\W+/g, '-')}`);
    const upload = await registry.putSample(json(body));
    const error = await refusal(registry.add(await file('r.onnx', reshapeInputModel().bytes), { name: 'reshape', check: { sample: upload.sha256 } }));
    expect(error.code).toBe('invalid_input');
    expect(error.message).toMatch(sentence);
    expect(registry.list()).toEqual([]);
  });

  it('refuses what is not a request body at upload, and check combinations that make no sense at add', async () => {
    const { registry } = await fresh('combos');
    expect((await refusal(registry.putSample(Buffer.from('not json')))).code).toBe('bad_request');
    expect((await refusal(registry.putSample(json({ inputs: {}, extra: 1 })))).message).toMatch(/unknown field\(s\) extra/);
    const upload = await registry.putSample(json(reshapeSample));
    const model = await file('c.onnx', reshapeInputModel().bytes);
    const add = (check: Record<string, unknown>) => refusal(registry.add(model, { name: 'reshape', check }));
    expect((await add({ policy: 'sample' })).message).toMatch(/"sample" needs a sample request.*--sample SAMPLE/);
    expect((await add({ policy: 'zeros', sample: upload.sha256 })).message).toMatch(/only fed under check policy "sample", not "zeros"/);
    expect((await add({ policy: 'load', expectFromLocal: true })).message).toMatch(/need a run: use check policy sample or zeros, not load/);
    expect((await add({ atol: 0.1 })).message).toMatch(/--atol and --rtol go with expected outputs/);
    expect((await add({ sample: 'ab'.repeat(32) })).code).toBe('not_found');
    expect(registry.list()).toEqual([]);
  });

  it('a binary sample: its header length is found from the file, kept in the record, and it feeds the model', async () => {
    const { registry } = await fresh('binary');
    const sample = streamingBinarySample();
    const upload = await registry.putSample(sample.body);
    expect(upload).toMatchObject({ headerLength: sample.headerLength, form: 'oip', inputs: ['x', 'state_in', 'sr'] });
    // given with the header length, the same bytes are the same file
    expect((await registry.putSample(sample.body, sample.headerLength)).sha256).toBe(upload.sha256);
    const rec = await registry.add(await file('s.onnx', streamingModel().bytes), { name: 'stream', check: { sample: upload.sha256 } });
    expect(rec.check?.sample).toMatchObject({ headerLength: sample.headerLength, inputs: [{ name: 'x', shape: [1, 400] }, { name: 'state_in' }, { name: 'sr', dtype: 'int64', shape: [] }] });
    // sizes that do not add up are refused at upload; a size that does not fit the shape when the version is added
    const cut = encodeInferBody({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], parameters: { binary_data_size: 16 } }] }, [new Uint8Array(12)]);
    expect((await refusal(registry.putSample(cut.body))).message).toMatch(/declares 16 bytes of binary data .* only 12/);
    const short = encodeInferBody({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], parameters: { binary_data_size: 12 } }, ...sample.header.inputs.slice(1)] }, [new Uint8Array(12), new Uint8Array(16), new Uint8Array(8)]);
    const error = await refusal(registry.add(await file('s2.onnx', streamingModel().bytes), { name: 'stream2', check: { sample: (await registry.putSample(short.body)).sha256 } }));
    expect(error.message).toMatch(/does not fit stream2: input "x": float32 \[1, 4\] is 16 bytes of binary data, but binary_data_size is 12/);
  });
});

describe('expected outputs', () => {
  it('from the operator: checked against the declared outputs; from the controller: what its onnxruntime computes', async () => {
    const { registry } = await fresh('expected');
    const model = streamingModel();
    const modelFile = await file('e.onnx', model.bytes);
    const sample = streamingBinarySample();
    const upload = await registry.putSample(sample.body);
    const want = model.step(Array.from(sample.x), Array.from(sample.state), 16000);
    const badName = await registry.putExpected({ outputs: [{ name: 'z', datatype: 'FP32', shape: [1, 4], data: want }] });
    expect((await refusal(registry.add(modelFile, { name: 's', check: { sample: upload.sha256, expected: badName.sha256 } }))).message).toMatch(/name "z", but s outputs y, state_out/);
    const badType = await registry.putExpected({ y: { dtype: 'float64', shape: [1, 4], data: want } });
    expect((await refusal(registry.add(modelFile, { name: 's', check: { sample: upload.sha256, expected: badType.sha256 } }))).message).toMatch(/outputs y as float32; the expected one is float64/);
    const given = await registry.putExpected({ model: 's', version: 1, outputs: { y: { dtype: 'float32', shape: [1, 4], data: want } }, latencyMs: 1 });
    const v1 = await registry.add(modelFile, { name: 's', check: { sample: upload.sha256, expected: given.sha256, atol: 1e-5 } });
    expect(v1.check?.expected).toMatchObject({ outputs: ['y'], atol: 1e-5, rtol: 1e-3, from: 'operator' });

    const v2 = await registry.add(modelFile, { name: 's', check: { sample: upload.sha256, expectFromLocal: true } });
    expect(v2.check?.expected).toMatchObject({ outputs: ['y', 'state_out'], from: 'controller' });
    const computed = await registry.checkFiles.readExpected(v2.check!.expected!.sha256);
    // exactly what a bare session gives
    const session = await ort.InferenceSession.create(model.bytes);
    const bare = await session.run({ x: new ort.Tensor('float32', sample.x, [1, 400]), state_in: new ort.Tensor('float32', sample.state, [1, 4]), sr: new ort.Tensor('int64', sample.sr, []) });
    await session.release();
    expect(computed['y']!.data).toEqual(Array.from(bare['y']!.data as Float32Array));
  });

  it('computed here: a model that outputs NaN is refused unless NaN is allowed; zeros that fail here are refused as they would fail on the devices', async () => {
    const { registry } = await fresh('local');
    const nan = await file('nan.onnx', nanModel().bytes);
    expect((await refusal(registry.add(nan, { name: 'nan', check: { expectFromLocal: true } }))).message).toMatch(/outputs NaN on its check input here \(output y element 0\).*--allow-nan/);
    const ok = await registry.add(nan, { name: 'nan', check: { expectFromLocal: true, allowNaN: true } });
    expect(ok.check).toMatchObject({ policy: 'zeros', allowNaN: true, expected: { from: 'controller' } });
    expect((await registry.checkFiles.readExpected(ok.check!.expected!.sha256))['y']!.data).toEqual(['NaN', 'NaN', 'NaN']);
    const reshape = await file('z.onnx', reshapeInputModel().bytes);
    expect((await refusal(registry.add(reshape, { name: 'reshape', check: { expectFromLocal: true } }))).message).toMatch(/fails on its check input in this controller's onnxruntime, as it would on the devices/);
  });
});

describe('check files', () => {
  it('go with the last version that names them; one no version names goes after an hour', async () => {
    const { registry } = await fresh('files');
    const upload = await registry.putSample(json(reshapeSample));
    const model = await file('f.onnx', reshapeInputModel().bytes);
    await registry.add(model, { name: 'a', check: { sample: upload.sha256 } });
    await registry.add(model, { name: 'b', check: { sample: upload.sha256 } });
    const path = registry.checkFiles.path(upload.sha256);
    await registry.remove('a', 1);
    expect((await stat(path)).isFile()).toBe(true); // b still names it
    await registry.remove('b', 1);
    await expect(stat(path)).rejects.toThrow(/ENOENT/);
    // uploaded again after the version that named it was added: an add may be about to name it, so it stays
    const again = await registry.putSample(json(reshapeSample));
    await registry.add(model, { name: 'd', check: { sample: again.sha256 } });
    await registry.putSample(json(reshapeSample));
    await registry.remove('d', 1);
    expect((await stat(path)).isFile()).toBe(true);

    const orphan = await registry.putSample(json({ inputs: { x: { dtype: 'float32', shape: [1], data: [1] } } }));
    const kept = await registry.putSample(json(reshapeSample));
    await registry.add(model, { name: 'c', check: { sample: kept.sha256 } });
    const old = new Date(Date.now() - UNUSED_CHECK_FILE_MS - 60_000);
    for (const sha of [orphan.sha256, kept.sha256]) await utimes(registry.checkFiles.path(sha), old, old);
    await registry.putExpected({ y: { dtype: 'float32', shape: [1], data: [1] } }); // an upload sweeps
    const left = await readdir(registry.checkFiles.dir);
    expect(left).toContain(kept.sha256);
    expect(left).not.toContain(orphan.sha256);
  });
});

describe('the manifest', () => {
  const keys = generateFleetKeys();
  const sign = (rec: Parameters<typeof buildManifest>[0], check: Awaited<ReturnType<typeof deliveryCheck>>) =>
    signManifest(buildManifest(rec, { chunks: chunkHashes(Buffer.alloc(rec.length), 1 << 20) }, { chunkSize: 1 << 20, target: { devices: ['d'] }, expiresInMs: 60_000, rollback: false, ...(check ? { check: check.manifest } : {}) }), keys.privateKeyPem);

  it('carries a small sample inline (JSON as body, binary as base64) and a large one by hash, to deliver with models.sample', async () => {
    const { registry } = await fresh('manifest');
    const small = await registry.add(await file('m1.onnx', reshapeInputModel().bytes), { name: 'r', check: { sample: (await registry.putSample(json(reshapeSample))).sha256 } });
    const a = await deliveryCheck(small.check, registry.checkFiles);
    expect(a?.manifest).toMatchObject({ policy: 'sample', sample: { body: reshapeSample } });
    expect(a?.sample).toBeUndefined();
    expect((sign(small, a).manifest as { check: unknown }).check).toMatchObject({ policy: 'sample', allowNaN: false });

    const binary = streamingBinarySample();
    const stream = await registry.add(await file('m2.onnx', streamingModel().bytes), { name: 's', check: { sample: (await registry.putSample(binary.body)).sha256 } });
    const b = await deliveryCheck(stream.check, registry.checkFiles);
    expect(b?.manifest.sample).toEqual({ base64: binary.body.toString('base64'), headerLength: binary.headerLength });

    const n = 70_000; // 70,000 floats: over 256 KiB in either form
    const large = { inputs: [{ name: 'x', datatype: 'FP32', shape: [n], data: Array.from({ length: n }, (_, i) => i / 7) }, { name: 'shape', datatype: 'INT64', shape: [2], data: [n / 7, 7] }] };
    expect(JSON.stringify(large).length).toBeGreaterThan(SAMPLE_INLINE_MAX_BYTES);
    const big = await registry.add(await file('m3.onnx', reshapeInputModel().bytes), { name: 'big', check: { sample: (await registry.putSample(json(large))).sha256 } });
    const c = await deliveryCheck(big.check, registry.checkFiles);
    expect(c?.manifest.sample).toEqual({ sha256: big.check!.sample!.sha256, length: big.check!.sample!.length });
    expect(c?.sample).toMatchObject({ sha256: big.check!.sample!.sha256, file: registry.checkFiles.path(big.check!.sample!.sha256) });
    expect(await deliveryCheck(undefined, registry.checkFiles)).toBeUndefined(); // a version from before: devices use zeros
  });

  it('a linear model without check flags still signs as before with its zeros policy', async () => {
    const { registry } = await fresh('plain');
    const rec = await registry.add(await file('lin.onnx', linearModel().bytes), { name: 'lin' });
    const check = await deliveryCheck(rec.check, registry.checkFiles);
    expect(check?.manifest).toEqual({ policy: 'zeros', allowNaN: false });
    expect((sign(rec, check).manifest as { check: unknown }).check).toEqual({ policy: 'zeros', allowNaN: false });
  });
});
