/**
 * Activation checks chosen at add time, over real processes: the controller (hostManager with its embedded
 * broker), a real agent, the CLI as a process, real onnxruntime on models whose zero input is invalid (a
 * Reshape whose shape is an input, a Resize whose scales are an input, a streaming model with recurrent
 * state and an int64 scalar sample rate) and one that outputs NaN by design. Each deploys through the fleet
 * with `--sample` (OIP JSON, binary, or one over 256 KiB that goes by hash), `--check load` or
 * `--allow-nan`, and answers exactly as a bare onnxruntime session; under `zeros` each fails with a sentence
 * that says what was fed, what failed and how to fix it, printed once, and that says a previous version
 * keeps serving only when one does. Expected outputs that do not match refuse activation. Inference goes
 * through the CLI with OIP JSON and binary bodies and through the controller API in the binary extension.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { encodeInferBody } from '@edgefleet/protocol';
import { cleanupAgents, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { api, eventually, runCli, startManager } from './support/manager-process.js';
import type { CliResult, ManagerProcess } from './support/manager-process.js';
import { nanModel, reshapeInputModel, resizeInputModel, streamingModel } from './support/onnx-models.js';
import { httpCall } from './support/oip-client.js';

const DEVICE = 'pi-c';

interface RolloutView {
  id: string;
  status: string;
  devices: Record<string, { state: string; error?: { code: string; message: string } }>;
}
type Tensor = { dtype: 'float32' | 'int64'; shape: number[]; data: number[] };
type Inputs = Record<string, Tensor>;

let m: ManagerProcess;
let agent: AgentProcess | undefined;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'flows-checks-'));
  m = await startManager();
  const r = await api<{ token: string }>(m, 'POST', '/api/devices', { id: DEVICE, groups: ['lab'] });
  expect(r.status).toBe(201);
  agent = await spawnAgent({ broker: m.broker, id: DEVICE, token: r.body.token, groups: ['lab'], args: ['--fleet-public-key', m.publicKeyFile] });
  await eventually(`${DEVICE} online`, async () => ((await api<{ online: boolean }>(m, 'GET', `/api/devices/${DEVICE}`)).body.online ? true : undefined));
});

afterAll(async () => {
  await cleanupAgents(agent);
  await m?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

async function put(name: string, bytes: Uint8Array | string): Promise<string> {
  const path = join(work, name);
  await writeFile(path, bytes);
  return path;
}

const cli = (...args: string[]): Promise<CliResult> => runCli(m, args, { timeoutMs: 120_000 });
const deploy = (ref: string, ...more: string[]) => cli('deploy', ref, '--to', DEVICE, '--soak', '0', '--wait', ...more);
const occurrences = (text: string, part: string) => text.split(part).length - 1;

const OIP = { float32: 'FP32', int64: 'INT64' } as const;
const oipBody = (inputs: Inputs, extra: Record<string, unknown> = {}) => ({ ...extra, inputs: Object.entries(inputs).map(([name, t]) => ({ name, datatype: OIP[t.dtype], shape: t.shape, data: t.data })) });
const bytesOf = (t: Tensor) => Buffer.from((t.dtype === 'int64' ? BigInt64Array.from(t.data.map(BigInt)) : Float32Array.from(t.data)).buffer);
/** The inputs as a binary-extension body (every tensor binary, binary outputs asked for). */
function binaryBody(inputs: Inputs, extra: Record<string, unknown> = {}) {
  const parts = Object.values(inputs).map(bytesOf);
  const header = { ...extra, inputs: Object.entries(inputs).map(([name, t], i) => ({ name, datatype: OIP[t.dtype], shape: t.shape, parameters: { binary_data_size: parts[i]!.byteLength } })) };
  return encodeInferBody(header, parts);
}

/** A bare onnxruntime session's outputs for these inputs: JSON values (NaN as "NaN") and raw bytes. */
async function bare(bytes: Uint8Array, inputs: Inputs): Promise<Record<string, { data: unknown[]; bytes: Buffer }>> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const feeds = Object.fromEntries(Object.entries(inputs).map(([n, t]) => [n, t.dtype === 'int64' ? new ort.Tensor('int64', BigInt64Array.from(t.data.map(BigInt)), t.shape) : new ort.Tensor('float32', Float32Array.from(t.data), t.shape)]));
    const out = await session.run(feeds);
    return Object.fromEntries(
      Object.entries(out).map(([n, t]) => {
        const data = Array.from(t.data as Float32Array, (v) => (Number.isNaN(v) ? 'NaN' : v));
        return [n, { data, bytes: Buffer.from((t.data as Float32Array).buffer, (t.data as Float32Array).byteOffset, (t.data as Float32Array).byteLength) }];
      }),
    );
  } finally {
    await session.release();
  }
}

/** Through the CLI with an OIP JSON body and with a binary body: both equal to the bare session, to the byte. */
async function answersLikeBare(model: string, bytes: Uint8Array, inputs: Inputs, version: number): Promise<void> {
  const want = await bare(bytes, inputs);
  const json = await cli('infer', DEVICE, model, '--input', await put(`${model}-in.json`, JSON.stringify(oipBody(inputs))), '--json');
  expect(json.code).toBe(0);
  const r = json.json<{ model_version: string; outputs: { name: string; data: unknown[] }[] }>();
  expect(r.model_version).toBe(String(version));
  for (const o of r.outputs) expect(o.data).toEqual(want[o.name]!.data);
  const answer = join(work, `${model}-answer.bin`);
  const bin = await cli('infer', DEVICE, model, '--input', await put(`${model}-in.bin`, binaryBody(inputs, { parameters: { binary_data_output: true } }).body), '--output', answer, '--json');
  expect(bin.code).toBe(0);
  const rb = bin.json<{ outputs: { name: string; data: unknown[]; parameters: { binary_data_size: number } }[] }>();
  // the answer came back binary: written as it came, and decoded for the output
  const saved = await readFile(answer);
  let offset = saved.byteLength - rb.outputs.reduce((s, o) => s + o.parameters.binary_data_size, 0);
  for (const o of rb.outputs) {
    expect(o.data).toEqual(want[o.name]!.data);
    expect(saved.subarray(offset, offset + o.parameters.binary_data_size)).toEqual(want[o.name]!.bytes);
    offset += o.parameters.binary_data_size;
  }
}

async function activeVersion(model: string): Promise<number | undefined> {
  return (await api<{ info: { models: { name: string; version: number }[] } | null }>(m, 'GET', `/api/devices/${DEVICE}`)).body.info?.models.find((x) => x.name === model)?.version;
}

describe('a Reshape whose shape is an input', () => {
  const model = reshapeInputModel();
  const input: Inputs = { x: { dtype: 'float32', shape: [6], data: [1, 2, 3, 4, 5, 6] }, shape: { dtype: 'int64', shape: [2], data: [2, 3] } };

  it('fails under zeros on its first deploy: what was fed, what failed, how to fix it, printed once, and nothing claimed to keep serving', async () => {
    const file = await put('reshape.onnx', model.bytes);
    const added = await cli('models', 'add', file, '--name', 'reshape');
    expect(added.stdout).toMatch(/reshape@1 added .*checked with zeros of its inputs before it serves/);
    const failed = await deploy('reshape@1');
    expect(failed.code).toBe(1);
    const sentence = 'reshape@1 failed its activation check (zeros): fed zeros of the declared input shapes, symbolic dimensions 1 (x: float32 [1], shape: int64 [2]); onnxruntime failed on it';
    expect(occurrences(failed.stdout + failed.stderr, sentence)).toBe(1);
    expect(failed.stdout).toMatch(/--sample SAMPLE.*--check load/);
    expect(failed.stdout).toContain('No version of reshape was serving before, so none is serving now.');
    expect(failed.stdout).not.toMatch(/keeps serving/);
    const id = /^rollout (\S+):/.exec(failed.stdout)![1]!;
    const shown = await cli('rollouts', 'show', id);
    expect(occurrences(shown.stdout, sentence)).toBe(1);
    expect(await activeVersion('reshape')).toBeUndefined();
  });

  it('a sample that does not fit is refused by models add with what is wrong, and nothing is added', async () => {
    const wrong = await put('reshape-wrong.json', JSON.stringify({ inputs: { x: input.x, shape: { dtype: 'int32', shape: [2], data: [2, 3] } } }));
    const r = await cli('models', 'add', join(work, 'reshape.onnx'), '--name', 'reshape', '--sample', wrong);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/the sample request does not fit reshape: reshape: input "shape" must be int64, got int32/);
    expect((await cli('models', 'list', 'reshape', '--json')).json<unknown[]>()).toHaveLength(1);
  });

  it('with --sample (OIP JSON) the same bytes become a new version that deploys and answers like bare onnxruntime', async () => {
    const sample = await put('reshape-sample.json', JSON.stringify(oipBody(input)));
    const added = await cli('models', 'add', join(work, 'reshape.onnx'), '--name', 'reshape', '--sample', sample, '--json');
    expect(added.json()).toMatchObject({ version: 2, created: true, check: { policy: 'sample', sample: { headerLength: null, inputs: [{ name: 'x', shape: [6] }, { name: 'shape', dtype: 'int64', shape: [2] }] } } });
    const done = await deploy('reshape@2', '--json');
    expect(done.json<RolloutView>().status).toBe('succeeded');
    await answersLikeBare('reshape', model.bytes, input, 2);
    await answersLikeBare('reshape', model.bytes, { x: input.x!, shape: { dtype: 'int64', shape: [2], data: [3, -1] } }, 2);
  });

  it('a sample over 256 KiB goes by hash: the device holds it beside the version and its manifest names it by sha256', async () => {
    const n = 70_000;
    const big: Inputs = { x: { dtype: 'float32', shape: [n], data: Array.from({ length: n }, (_, i) => i / 8) }, shape: { dtype: 'int64', shape: [2], data: [n / 7, 7] } };
    const sample = binaryBody(big);
    expect(sample.body.byteLength).toBeGreaterThan(256 * 1024);
    const added = await cli('models', 'add', join(work, 'reshape.onnx'), '--name', 'bigreshape', '--sample', await put('big-sample.bin', sample.body), '--json');
    const rec = added.json<{ version: number; check: { sample: { sha256: string; headerLength: number } } }>();
    expect(rec.check.sample.headerLength).toBe(sample.headerLength);
    expect((await deploy('bigreshape@1', '--json')).json<RolloutView>().status).toBe('succeeded');
    const versionDir = join(agent!.dataDir, 'models', 'bigreshape', '1');
    const manifest = JSON.parse(await readFile(join(versionDir, 'manifest.json'), 'utf8')) as { check: { sample: Record<string, unknown> } };
    expect(manifest.check.sample).toEqual({ sha256: rec.check.sample.sha256, length: sample.body.byteLength, headerLength: sample.headerLength });
    expect((await stat(join(versionDir, 'sample.bin'))).size).toBe(sample.body.byteLength);
    await answersLikeBare('bigreshape', model.bytes, input, 1);
  });
});

describe('a Resize whose scales are an input', () => {
  const model = resizeInputModel();
  const input: Inputs = { x: { dtype: 'float32', shape: [1, 1, 2, 3], data: [1, 2, 3, 4, 5, 6] }, scales: { dtype: 'float32', shape: [4], data: [1, 1, 2, 1.5] } };

  it('deploys with --check load; the same bytes under zeros then fail, and the message (rightly) says the previous version keeps serving, which answers', async () => {
    const file = await put('resize.onnx', model.bytes);
    expect((await cli('models', 'add', file, '--name', 'resize', '--check', 'load')).stdout).toMatch(/checked with loading only/);
    expect((await deploy('resize@1', '--json')).json<RolloutView>().status).toBe('succeeded');
    await answersLikeBare('resize', model.bytes, input, 1);

    expect((await cli('models', 'add', file, '--name', 'resize', '--json')).json()).toMatchObject({ version: 2, check: { policy: 'zeros' } });
    const failed = await deploy('resize@2');
    expect(failed.code).toBe(1);
    expect(occurrences(failed.stdout, 'resize@2 failed its activation check (zeros)')).toBe(1);
    expect(failed.stdout).toMatch(/scales: float32 \[4\].*Scale value should be greater than 0/);
    expect(failed.stdout).toContain('The previous version, resize@1, keeps serving.');
    expect(await activeVersion('resize')).toBe(1);
    await answersLikeBare('resize', model.bytes, input, 1);
  });
});

describe('a streaming model (recurrent state, int64 scalar sample rate)', () => {
  const model = streamingModel();
  const n = 480;
  const input: Inputs = {
    x: { dtype: 'float32', shape: [1, n], data: Array.from({ length: n }, (_, i) => Math.fround(Math.sin(i / 9))) },
    state_in: { dtype: 'float32', shape: [1, 4], data: [0.5, -0.25, 0.125, 0] },
    sr: { dtype: 'int64', shape: [], data: [16000] },
  };

  it('a binary sample with outputs computed by the controller at add time activates it; it answers like bare, also through the controller API in binary', async () => {
    const file = await put('stream.onnx', model.bytes);
    const added = await cli('models', 'add', file, '--name', 'stream', '--sample', await put('stream-sample.bin', binaryBody(input).body), '--expect-from-local');
    expect(added.code).toBe(0);
    expect(added.stdout).toMatch(/checked with its sample request \(x float32\[1,480\], state_in float32\[1,4\], sr int64\[\]\), expecting y, state_out as computed here/);
    expect((await deploy('stream@1', '--json')).json<RolloutView>().status).toBe('succeeded');
    await answersLikeBare('stream', model.bytes, input, 1);

    // the controller's API in the binary extension: octet-stream in, octet-stream out, framed over MQTT both ways
    const want = await bare(model.bytes, input);
    const body = binaryBody(input, { model: 'stream', outputs: [{ name: 'state_out', parameters: { binary_data: true } }, { name: 'y' }] });
    const r = await httpCall(Number(new URL(m.url).port), 'POST', `/api/devices/${DEVICE}/infer`, body.body, {
      authorization: `Bearer ${m.token}`,
      'content-type': 'application/octet-stream',
      'inference-header-content-length': String(body.headerLength),
    });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/octet-stream');
    const [stateOut, y] = r.json.outputs as { name: string; data?: unknown[]; parameters?: { binary_data_size: number } }[];
    expect(stateOut!.name).toBe('state_out');
    expect(r.binary).toEqual(want['state_out']!.bytes);
    expect(y!.data).toEqual(want['y']!.data);
    // a JSON request to the same route is answered in JSON, as before
    const json = await api<{ outputs: { name: string; data: unknown[] }[] }>(m, 'POST', `/api/devices/${DEVICE}/infer`, { model: 'stream', ...oipBody(input) });
    expect(json.body.outputs.find((o) => o.name === 'y')!.data).toEqual(want['y']!.data);
  });

  it('expected outputs that do not match refuse activation, and stream@1 keeps serving', async () => {
    const want = await bare(model.bytes, input);
    const wrong = { y: { dtype: 'float32', shape: [1, 4], data: want['y']!.data.map((v) => (v as number) + 0.5) } };
    const added = await cli('models', 'add', join(work, 'stream.onnx'), '--name', 'stream', '--sample', join(work, 'stream-sample.bin'), '--expect', await put('wrong.json', JSON.stringify(wrong)), '--json');
    expect(added.json()).toMatchObject({ version: 2, check: { expected: { outputs: ['y'], from: 'operator' } } });
    const failed = await deploy('stream@2');
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/stream@2 failed its activation check \(sample\): fed the manifest's sample request .*output y element 0 is .* where .* was expected \(within atol 0.0001/);
    expect(failed.stdout).toContain('The previous version, stream@1, keeps serving.');
    expect(await activeVersion('stream')).toBe(1);
  });
});

describe('a model that outputs NaN by design', () => {
  const model = nanModel();
  const input: Inputs = { x: { dtype: 'float32', shape: [2, 4], data: [1, 2, 3, 4, 5, 6, 7, 8] } };

  it('fails under zeros with the --allow-nan hint; with --allow-nan it deploys and answers NaN like bare', async () => {
    const file = await put('nan.onnx', model.bytes);
    await cli('models', 'add', file, '--name', 'nan');
    const failed = await deploy('nan@1');
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/nan@1 failed its activation check \(zeros\): .*output y contains NaN \(3 of 3 values, the first at element 0\).*--allow-nan/);
    expect(failed.stdout).toContain('No version of nan was serving before, so none is serving now.');
    expect((await cli('models', 'add', file, '--name', 'nan', '--allow-nan', '--json')).json()).toMatchObject({ version: 2, check: { policy: 'zeros', allowNaN: true } });
    expect((await deploy('nan@2', '--json')).json<RolloutView>().status).toBe('succeeded');
    await answersLikeBare('nan', model.bytes, input, 2);
  });
});

describe('one request shape everywhere', () => {
  it('the old inputs-map file is refused with the sentence that shows the new shape', async () => {
    const old = await put('old.json', JSON.stringify({ x: { dtype: 'float32', shape: [6], data: [1, 2, 3, 4, 5, 6] } }));
    const r = await cli('infer', DEVICE, 'reshape', '--input', old);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/the old inputs map \(x\); hostManager infer now takes the same request body as a device's inference API: write \{"inputs": \{"x":/);
  });

  it('a request over one MQTT message is refused before it is published, and the controller keeps its connection', async () => {
    const n = 1_200_000; // 4.8 MB of float32, over the broker's 4 MiB packet limit
    const big = binaryBody({ x: { dtype: 'float32', shape: [n], data: new Array<number>(n).fill(1) }, shape: { dtype: 'int64', shape: [2], data: [n / 2, 2] } });
    const r = await cli('infer', DEVICE, 'reshape', '--input', await put('huge.bin', big.body));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the infer request is \d+ bytes; one MQTT message carries at most 4194304 .*device's own inference API/);
    const small = await cli('infer', DEVICE, 'reshape', '--input', join(work, 'reshape-in.json'), '--json');
    expect(small.code).toBe(0);
  });

  it('a tensor-map body works as on the device', async () => {
    const body = await put('map.json', JSON.stringify({ inputs: { x: { dtype: 'float32', shape: [6], data: [1, 2, 3, 4, 5, 6] }, shape: { dtype: 'int64', shape: [2], data: [3, 2] } } }));
    const r = await cli('infer', DEVICE, 'reshape', '--input', body, '--json');
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ version: 2, outputs: { y: { dtype: 'float32', shape: [3, 2], data: [1, 2, 3, 4, 5, 6] } } });
  });
});
