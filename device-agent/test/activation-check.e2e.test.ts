/**
 * Activation checks that fit real models, on a real agent process receiving signed manifests (built
 * here) through real transfers: models whose zero input is invalid (a Reshape whose shape is an input,
 * a Resize whose scales are an input, a streaming model with recurrent state and an int64 scalar sample
 * rate) and a model that outputs NaN by design activate with a sample request (inline JSON, inline
 * binary, or by hash delivered with models.sample), with `load`, or with allowNaN, and then answer
 * exactly as a bare onnxruntime session; under `zeros` they still fail, with a sentence that says what
 * was fed, what failed, how to fix it, and which version (if any) keeps serving. Expected outputs are
 * checked within their tolerance.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import type { MqttClient } from 'mqtt';
import { FleetError, encodeInferBody, generateFleetKeys, sha256Hex, signManifest, topics } from '@edgefleet/protocol';
import type { DType, FleetKeyPair, ManifestInput } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { createRequester } from '@edgefleet/host-manager';
import type { Requester } from '@edgefleet/host-manager';
import { decodeTensor, encodeTensor, tensorBytes } from '../src/models/index.js';
import { startTestBroker } from '../../test/support/broker.js';
import { nanModel, reshapeInputModel, resizeInputModel, streamingModel, testManifest } from '../../test/support/onnx-models.js';
import { cleanupAgents, connectOperator, startAgent, watchStatus } from '../../test/support/agent-process.js';
import type { AgentProcess, StatusWatcher } from '../../test/support/agent-process.js';
import { binaryOutputs, mqttRequest, postBinary, postJson } from '../../test/support/oip-client.js';

const OPERATOR = { id: 'op', token: 'operator-token-chk' };
const DEVICE = { id: 'pi-check', token: 'device-token-chk' };
const CHUNK = 256 * 1024; // testManifest's chunk size

let broker: RunningBroker;
let operator: MqttClient;
let watcher: StatusWatcher;
let requester: Requester;
let agent: AgentProcess | undefined;
let work: string;
let keys: FleetKeyPair;
let port: number;

beforeAll(async () => {
  broker = await startTestBroker({ devices: [DEVICE], operators: [OPERATOR] });
  operator = await connectOperator(broker.url, OPERATOR);
  watcher = await watchStatus(operator);
  requester = await createRequester(operator);
  work = await mkdtemp(join(tmpdir(), 'agent-check-'));
  keys = generateFleetKeys();
  await writeFile(join(work, 'fleet.pub.pem'), keys.publicKeyPem);
  agent = await startAgent({ broker: broker.url, ...DEVICE, http: true, args: ['--fleet-public-key', join(work, 'fleet.pub.pem')] }, watcher, 30_000);
  port = await agent.httpPort();
}, 60_000);

afterAll(async () => {
  await cleanupAgents(agent);
  requester?.close();
  await operator?.endAsync();
  await broker?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

/** Signs a manifest for these bytes and sends it through a real transfer: offer, chunks, commit. */
async function deliver(name: string, version: number, bytes: Buffer, extra: Partial<ManifestInput> = {}, activate = true) {
  const manifest = signManifest(testManifest(name, version, bytes, { target: { devices: [DEVICE.id] }, ...extra }), keys.privateKeyPem);
  const transferId = `${name}-${version}`;
  const via = { kind: 'device' as const, name: DEVICE.id };
  const offer = await requester.request(DEVICE.id, 'transfer.offer', { transferId, manifest, via });
  for (const i of offer.missing) await operator.publishAsync(topics.transferChunk(via, transferId, i), bytes.subarray(i * CHUNK, (i + 1) * CHUNK), { qos: 1 });
  return requester.request(DEVICE.id, 'transfer.commit', { transferId, activate }, 30_000);
}

async function refused(promise: Promise<unknown>): Promise<FleetError> {
  try {
    await promise;
  } catch (error) {
    return error as FleetError;
  }
  throw new Error('expected a refusal');
}

type Inputs = Record<string, { dtype: DType; shape: number[]; data: unknown[] }>;

/** The same inputs through a bare session in this process, as the agent encodes outputs. */
async function bare(bytes: Buffer, inputs: Inputs) {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const out = await session.run(Object.fromEntries(Object.entries(inputs).map(([n, t]) => [n, decodeTensor(n, t) as unknown as ort.Tensor])));
    return Object.fromEntries(Object.entries(out).map(([n, t]) => [n, t as unknown as Parameters<typeof encodeTensor>[0]]));
  } finally {
    await session.release();
  }
}

const OIP = { float32: 'FP32', int64: 'INT64' } as Record<DType, string>;
const oipBody = (inputs: Inputs) => ({ inputs: Object.entries(inputs).map(([name, t]) => ({ name, datatype: OIP[t.dtype], shape: t.shape, data: t.data })) });
/** A binary-extension body for these inputs (every tensor binary) and its header length. */
function binaryBody(inputs: Inputs) {
  const blobs = Object.entries(inputs).map(([name, t]) => Buffer.from(tensorBytes(decodeTensor(name, t))));
  const header = { inputs: Object.entries(inputs).map(([name, t], i) => ({ name, datatype: OIP[t.dtype], shape: t.shape, parameters: { binary_data_size: blobs[i]!.length } })) };
  return { header, blobs, ...encodeInferBody(header, blobs) };
}

/** The agent's JSON and binary answers equal the bare session's exactly. */
async function answersLikeBare(name: string, bytes: Buffer, inputs: Inputs): Promise<Record<string, unknown>> {
  const want = await bare(bytes, inputs);
  const json = await postJson(port, `/v2/models/${name}/infer`, oipBody(inputs));
  expect(json.status).toBe(200);
  for (const o of json.json.outputs as { name: string; data: unknown[] }[]) expect(o.data).toEqual(encodeTensor(want[o.name]!).data);
  const b = binaryBody(inputs);
  const bin = await postBinary(port, `/v2/models/${name}/infer`, { ...b.header, parameters: { binary_data_output: true } }, b.blobs);
  const outs = binaryOutputs(bin);
  for (const [n, t] of Object.entries(want)) expect(outs[n]).toEqual(Buffer.from(tensorBytes(t)));
  return Object.fromEntries(Object.entries(want).map(([n, t]) => [n, encodeTensor(t).data]));
}

describe('activation checks that fit real models', () => {
  const reshape = reshapeInputModel();
  const reshapeInput: Inputs = { x: { dtype: 'float32', shape: [6], data: [1, 2, 3, 4, 5, 6] }, shape: { dtype: 'int64', shape: [2], data: [2, 3] } };

  it('Reshape with its shape as an input: zeros fail with what was fed and how to fix it; a sample request activates it', async () => {
    const failure = await refused(deliver('reshape', 1, reshape.bytes));
    expect(failure.code).toBe('smoke_test_failed');
    expect(failure.message).toMatch(
      /^reshape@1 failed its activation check \(zeros\): fed zeros of the declared input shapes, symbolic dimensions 1 \(x: float32 \[1\], shape: int64 \[2\]\); onnxruntime failed on it: .*Reshape/,
    );
    expect(failure.message).toMatch(/--sample SAMPLE.*--check load/);
    expect(failure.message).toMatch(/No version of reshape was serving before, so none is serving now\.$/);
    expect(failure.message).not.toMatch(/keeps serving/);

    const done = await deliver('reshape', 2, reshape.bytes, { check: { sample: { body: oipBody(reshapeInput) } } as ManifestInput['check'] });
    expect(done).toMatchObject({ activated: true, version: 2 });
    await answersLikeBare('reshape', reshape.bytes, reshapeInput);
    await answersLikeBare('reshape', reshape.bytes, { x: reshapeInput.x!, shape: { dtype: 'int64', shape: [2], data: [3, -1] } });
    const log = agent!.logs.find((l) => l.msg === 'model activated' && l.model === 'reshape');
    expect(log?.check).toBe('sample');
  });

  it('Resize with its scales as an input: fails under zeros, activates under load and answers like bare', async () => {
    const resize = resizeInputModel();
    const failure = await refused(deliver('resize', 1, resize.bytes, { check: { policy: 'zeros' } }));
    expect(failure.message).toMatch(/resize@1 failed its activation check \(zeros\): fed zeros .*scales: float32 \[4\].*Scale value should be greater than 0/);
    expect((await deliver('resize', 2, resize.bytes, { check: { policy: 'load' } })).activated).toBe(true);
    await answersLikeBare('resize', resize.bytes, {
      x: { dtype: 'float32', shape: [1, 1, 2, 3], data: [1, 2, 3, 4, 5, 6] },
      scales: { dtype: 'float32', shape: [4], data: [1, 1, 2, 1.5] },
    });
  });

  it('a streaming model (recurrent state, int64 scalar sample rate): a binary sample with expected outputs activates it; a wrong expectation does not', async () => {
    const model = streamingModel();
    const audio = Array.from({ length: 480 }, (_, i) => Math.round(Math.sin(i / 5) * 1000) / 1000);
    const step = (x: number[], state: number[]): Inputs => ({
      x: { dtype: 'float32', shape: [1, x.length], data: x },
      state_in: { dtype: 'float32', shape: [1, 4], data: state },
      sr: { dtype: 'int64', shape: [], data: [16000] },
    });
    const sample = binaryBody(step(audio, [0, 0, 0, 0]));
    const expectedY = model.step(audio, [0, 0, 0, 0], 16000);
    const check = (y: number[]) => ({
      sample: { base64: sample.body.toString('base64'), headerLength: sample.headerLength },
      expected: { outputs: { y: { dtype: 'float32', shape: [1, 4], data: y } }, atol: 1e-5, rtol: 1e-4 },
    });
    expect((await deliver('stream', 1, model.bytes, { check: check(expectedY) })).activated).toBe(true);
    // the state carries across requests exactly as with a bare session
    const first = await answersLikeBare('stream', model.bytes, step(audio, [0, 0, 0, 0]));
    await answersLikeBare('stream', model.bytes, step(audio.map((v) => -v), first.state_out as number[]));

    const wrong = await refused(deliver('stream', 2, model.bytes, { check: check(expectedY.map((v) => v + 0.01)) }));
    expect(wrong.message).toMatch(/stream@2 failed its activation check \(sample\): fed the manifest's sample request \(x: float32 \[1, 480\], state_in: float32 \[1, 4\], sr: int64 \[\]\)/);
    expect(wrong.message).toMatch(/output y element 0 is .* where .* was expected \(within atol 0\.00001 \+ rtol 0\.0001·\|expected\|\)/);
    expect(wrong.message).toMatch(/The previous version, stream@1, keeps serving\.$/);
    const zeros = await refused(deliver('stream', 3, model.bytes));
    expect(zeros.message).toMatch(/stream@3 failed its activation check \(zeros\): fed zeros .*sr: int64 \[\]\); onnxruntime failed on it/);
    expect((await postJson(port, '/v2/models/stream/infer', oipBody(step(audio, [0, 0, 0, 0])))).json.model_version).toBe('1');
  });

  it('a model that outputs NaN by design: refused unless NaN is allowed, then it answers NaN like bare', async () => {
    const nan = nanModel();
    const failure = await refused(deliver('nan', 1, nan.bytes));
    expect(failure.message).toMatch(/nan@1 failed its activation check \(zeros\): .*output y contains NaN \(3 of 3 values, the first at element 0\).*allow it \(--allow-nan\)/);
    expect((await deliver('nan', 2, nan.bytes, { check: { allowNaN: true } })).activated).toBe(true);
    const out = await answersLikeBare('nan', nan.bytes, { x: { dtype: 'float32', shape: [2, 4], data: [1, 2, 3, 4, 5, 6, 7, 8] } });
    expect(out.y).toEqual(new Array(6).fill('NaN'));
  });

  it('a large sample goes by hash: activation says it is missing until models.sample delivers it (resumable), then it activates', async () => {
    const resize = resizeInputModel();
    const input: Inputs = {
      x: { dtype: 'float32', shape: [1, 1, 256, 256], data: Array.from({ length: 65536 }, (_, i) => (i % 251) / 7) },
      scales: { dtype: 'float32', shape: [4], data: [1, 1, 0.5, 0.5] },
    };
    const sample = binaryBody(input);
    expect(sample.body.length).toBeGreaterThan(256 * 1024); // over the inline cap
    const ref = { sha256: sha256Hex(sample.body), length: sample.body.length, headerLength: sample.headerLength };
    expect(await deliver('big', 1, resize.bytes, { check: { sample: ref } }, false)).toMatchObject({ activated: false });
    const missing = await refused(requester.request(DEVICE.id, 'models.activate', { model: 'big', version: 1 }));
    expect(missing.message).toMatch(/names a sample request of \d+ bytes \(sha256 [0-9a-f]{12}…\) that is not on this device; deliver it with the models.sample command/);

    const half = Math.floor(sample.body.length / 2);
    const send = (offset: number, bytes: Buffer, version = 1) => mqttRequest(operator, DEVICE.id, 'models.sample', { model: 'big', version, offset }, [bytes]);
    expect((await send(0, sample.body.subarray(0, half))).reply).toMatchObject({ status: 'ok', data: { received: half, complete: false } });
    expect((await send(half + 10, sample.body.subarray(half + 10))).reply).toMatchObject({ status: 'error', error: { code: 'invalid_params', message: expect.stringMatching(new RegExp(`send from offset ${half}`)) } });
    expect((await send(0, sample.body.subarray(0, half))).reply).toMatchObject({ status: 'ok', data: { received: half } }); // a repeat is acknowledged
    expect((await send(half, sample.body.subarray(half))).reply).toMatchObject({ status: 'ok', data: { received: ref.length, complete: true } });
    expect(await requester.request(DEVICE.id, 'models.activate', { model: 'big', version: 1 })).toMatchObject({ version: 1 });
    await answersLikeBare('big', resize.bytes, input);

    // a sample whose bytes do not match the signed hash is discarded
    expect(await deliver('big', 2, resize.bytes, { check: { sample: { ...ref, sha256: sha256Hex(Buffer.from('other')) } } }, false)).toMatchObject({ activated: false });
    expect((await send(0, sample.body, 2)).reply).toMatchObject({ status: 'error', error: { code: 'corrupt_chunk', message: expect.stringMatching(/send it again from offset 0/) } });
    // ...and the command refuses a version whose manifest names no sample by hash
    const noRef = await mqttRequest(operator, DEVICE.id, 'models.sample', { model: 'reshape', version: 2, offset: 0 }, [Buffer.of(1)]);
    expect(noRef.reply).toMatchObject({ status: 'error', error: { code: 'invalid_params', message: expect.stringMatching(/names no sample by hash/) } });
  });
});
