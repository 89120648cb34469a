/**
 * The Open Inference Protocol (KServe V2 REST, with the binary tensor data extension) on a real agent
 * process: every route; every dtype through JSON and binary tensors, on the OIP routes, the original
 * routes and the MQTT infer command (JSON and framed binary), each equal to a bare onnxruntime session's
 * outputs; the protocol's documented examples sent as written; output selection; every refusal with its
 * status (400, 404, 405, 413 at the configured limit, 415).
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import type { MqttClient } from 'mqtt';
import { OIP_DATATYPE } from '@edgefleet/protocol';
import type { DType, OipInferResult } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { createRequester } from '@edgefleet/host-manager';
import type { Requester } from '@edgefleet/host-manager';
import { decodeTensor, encodeTensor, tensorBytes } from '../src/models/index.js';
import { startTestBroker } from '../../test/support/broker.js';
import { identityModel, linearModel, multiInputModel, tritonExampleModel } from '../../test/support/onnx-models.js';
import { cleanupAgents, connectOperator, preinstallModels, startAgent, watchStatus } from '../../test/support/agent-process.js';
import type { AgentProcess, StatusWatcher } from '../../test/support/agent-process.js';
import { binaryOutputs, httpCall, mqttRequest, postBinary, postJson } from '../../test/support/oip-client.js';

const OPERATOR = { id: 'op', token: 'operator-token-oip' };
const DEVICE = { id: 'pi-oip', token: 'device-token-oip' };

/** Values for each dtype, edge cases included (ranges, NaN/Inf, int64 beyond 2^53, non-ASCII text). */
const VALUES: Record<DType, unknown[]> = {
  float32: [1.5, -0.25, 'NaN', 'Infinity', '-Infinity', 3.4028234663852886e38, 1e-45],
  float64: [Math.PI, -1e308, 'NaN', 5e-324],
  float16: [1, 0.5, -65504, 'NaN', 'Infinity', 0.000061035156],
  int8: [-128, 0, 127],
  int16: [-32768, 32767],
  int32: [-2147483648, 2147483647],
  int64: ['9223372036854775807', '-9223372036854775808', 5, 0],
  uint8: [0, 255],
  uint16: [0, 65535],
  uint32: [0, 4294967295],
  uint64: ['18446744073709551615', 0, 7],
  bool: [true, false, true],
  string: ['héllo', '', 'ünïcödé ✓', 'x'],
};
const DTYPES = Object.keys(VALUES) as DType[];

const linear = linearModel({ seed: 5 });
const linear2 = linearModel({ seed: 6 });
const multi = multiInputModel();
const mymodel = tritonExampleModel();
const identities = Object.fromEntries(DTYPES.map((d) => [d, identityModel(d)]));
const scalar = identityModel('float32', []);

let broker: RunningBroker;
let operator: MqttClient;
let watcher: StatusWatcher;
let requester: Requester;
let agent: AgentProcess | undefined;
let dataDir: string;
let port: number;
const sessions = new Map<Buffer, ort.InferenceSession>();

beforeAll(async () => {
  broker = await startTestBroker({ devices: [DEVICE], operators: [OPERATOR] });
  operator = await connectOperator(broker.url, OPERATOR);
  watcher = await watchStatus(operator);
  requester = await createRequester(operator);
  dataDir = await mkdtemp(join(tmpdir(), 'agent-oip-'));
  await preinstallModels(dataDir, DEVICE.id, [
    { name: 'linear', version: 1, bytes: linear.bytes },
    { name: 'linear', version: 2, bytes: linear2.bytes, activate: false },
    { name: 'multi', version: 1, bytes: multi.bytes },
    { name: 'mymodel', version: 1, bytes: mymodel.bytes },
    { name: 'scalar', version: 1, bytes: scalar.bytes },
    ...DTYPES.map((d) => ({ name: `id-${d}`, version: 1, bytes: identities[d]!.bytes })),
  ]);
  agent = await startAgent({ broker: broker.url, ...DEVICE, dataDir, http: true, args: ['--http-max-body-mb', '1'] }, watcher, 30_000);
  port = await agent.httpPort();
}, 90_000);

afterAll(async () => {
  await cleanupAgents(agent);
  for (const s of sessions.values()) await s.release();
  requester?.close();
  await operator?.endAsync();
  await broker?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

/** The outputs of a bare onnxruntime session in this process for the same JSON tensors. */
async function bare(bytes: Buffer, inputs: Record<string, { dtype: DType; shape: number[]; data: unknown[] }>): Promise<Record<string, ort.Tensor>> {
  let session = sessions.get(bytes);
  if (!session) sessions.set(bytes, (session = await ort.InferenceSession.create(bytes)));
  const feeds = Object.fromEntries(Object.entries(inputs).map(([name, t]) => [name, decodeTensor(name, t) as unknown as ort.Tensor]));
  return session.run(feeds);
}

const oipInput = (name: string, dtype: DType, shape: number[], data: unknown[]) => ({ name, datatype: OIP_DATATYPE[dtype], shape, data });
const bytesOf = (dtype: DType, shape: number[], data: unknown[]) => Buffer.from(tensorBytes(decodeTensor('in', { dtype, shape, data })));

describe('server and model routes', () => {
  it('GET /v2 names the server, its version and the binary_tensor_data extension; live and ready', async () => {
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    const server = await httpCall(port, 'GET', '/v2');
    expect(server.status).toBe(200);
    expect(server.json).toEqual({ name: 'edgefleet-device-agent', version: pkg.version, extensions: ['binary_tensor_data'] });
    expect(await httpCall(port, 'GET', '/v2/health/live')).toMatchObject({ status: 200, json: { live: true } });
    expect(await httpCall(port, 'GET', '/v2/health/ready')).toMatchObject({ status: 200, json: { ready: true } });
    expect((await httpCall(port, 'HEAD', '/v2/health/ready')).status).toBe(200);
  });

  it('model metadata: platform, versions, OIP datatypes, -1 for dynamic dimensions, any stored version', async () => {
    const meta = await httpCall(port, 'GET', '/v2/models/linear');
    expect(meta.status).toBe(200);
    expect(meta.json).toEqual({
      name: 'linear',
      versions: ['1', '2'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }],
      outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 3] }],
    });
    expect((await httpCall(port, 'GET', '/v2/models/linear/versions/2')).json).toEqual(meta.json);
    expect((await httpCall(port, 'GET', '/v2/models/mymodel')).json.inputs).toEqual([
      { name: 'input0', datatype: 'UINT32', shape: [2, 2] },
      { name: 'input1', datatype: 'BOOL', shape: [3] },
    ]);
    expect((await httpCall(port, 'GET', '/v2/models/scalar')).json.inputs).toEqual([{ name: 'in', datatype: 'FP32', shape: [] }]);
    for (const d of DTYPES) {
      const m = await httpCall(port, 'GET', `/v2/models/id-${d}`);
      expect(m.json.inputs).toEqual([{ name: 'in', datatype: OIP_DATATYPE[d], shape: [-1] }]);
    }
  });

  it('model readiness: the served version is ready, another stored one is not (503), an unknown one is 404', async () => {
    expect(await httpCall(port, 'GET', '/v2/models/linear/ready')).toMatchObject({ status: 200, json: { name: 'linear', ready: true } });
    expect(await httpCall(port, 'GET', '/v2/models/linear/versions/1/ready')).toMatchObject({ status: 200, json: { ready: true } });
    const notServed = await httpCall(port, 'GET', '/v2/models/linear/versions/2/ready');
    expect(notServed).toMatchObject({ status: 503, json: { name: 'linear', ready: false, error: expect.stringMatching(/active version is 1/) } });
    expect(await httpCall(port, 'GET', '/v2/models/linear/versions/9/ready')).toMatchObject({ status: 404, json: { error: expect.stringMatching(/linear@9 is not on this device/) } });
    expect(await httpCall(port, 'GET', '/v2/models/nope/ready')).toMatchObject({ status: 404, json: { error: expect.stringMatching(/"nope" is not on this device/) } });
  });

  it('unknown models, versions and routes are 404 with {"error": "..."}; wrong methods 405', async () => {
    const cases: [string, string, number, RegExp][] = [
      ['GET', '/v2/models/nope', 404, /"nope" is not on this device/],
      ['GET', '/v2/models/linear/versions/9', 404, /linear@9 is not installed/],
      ['GET', '/v2/models/linear/versions/abc', 404, /no version "abc"/],
      ['GET', '/v2/models/..%2Fetc', 404, /not a valid model name/],
      ['GET', '/v2/nothing', 404, /no route/],
      ['GET', '/v2/models/linear/infer', 405, /GET is not supported here; use POST/],
      ['POST', '/v2', 405, /use GET/],
    ];
    for (const [method, path, status, message] of cases) {
      const r = await httpCall(port, method, path, method === 'POST' ? '{}' : undefined, { 'content-type': 'application/json' });
      expect({ path, status: r.status }).toEqual({ path, status });
      expect(typeof r.json.error).toBe('string');
      expect(r.json.error).toMatch(message);
    }
  });
});

describe('every dtype, JSON and binary, on every path, equal to a bare session', () => {
  it.each(DTYPES)('%s', async (dtype) => {
    const data = VALUES[dtype];
    const shape = [data.length];
    const name = `id-${dtype}`;
    const [reference] = Object.values(await bare(identities[dtype]!.bytes, { in: { dtype, shape, data } }));
    const wantJson = { name: 'out', datatype: OIP_DATATYPE[dtype], shape, data: encodeTensor(reference as never).data };
    const wantBytes = Buffer.from(tensorBytes(reference as never));
    const body = { id: `req-${dtype}`, inputs: [oipInput('in', dtype, shape, data)] };

    // JSON on the OIP route, its versioned route, and the original route
    for (const path of [`/v2/models/${name}/infer`, `/v2/models/${name}/versions/1/infer`, `/models/${name}`]) {
      const r = await postJson(port, path, body);
      expect({ path, status: r.status }).toEqual({ path, status: 200 });
      expect(r.json).toEqual({ model_name: name, model_version: '1', id: `req-${dtype}`, outputs: [wantJson] });
    }
    // binary in and out
    const header = { inputs: [{ name: 'in', datatype: OIP_DATATYPE[dtype], shape, parameters: { binary_data_size: bytesOf(dtype, shape, data).length } }], parameters: { binary_data_output: true } };
    const bin = await postBinary(port, `/v2/models/${name}/infer`, header, [bytesOf(dtype, shape, data)]);
    expect(bin.status).toBe(200);
    expect(bin.headers['content-type']).toBe('application/octet-stream');
    expect(bin.json.outputs).toEqual([{ name: 'out', datatype: OIP_DATATYPE[dtype], shape, parameters: { binary_data_size: wantBytes.length } }]);
    expect(binaryOutputs(bin).out).toEqual(wantBytes);
    // binary in, JSON out
    const mixed = await postBinary(port, `/models/${name}`, { inputs: header.inputs }, [bytesOf(dtype, shape, data)]);
    expect(mixed.json.outputs).toEqual([wantJson]);

    // MQTT: the same JSON body, and a framed payload with the binary tensor
    const viaMqtt = (await requester.request(DEVICE.id, 'infer', { model: name, ...body })) as OipInferResult;
    expect(viaMqtt.outputs).toEqual([wantJson]);
    const framed = await mqttRequest(operator, DEVICE.id, 'infer', { model: name, ...header }, [bytesOf(dtype, shape, data)]);
    expect(framed.reply.status).toBe('ok');
    expect(binaryOutputs({ json: framed.reply.status === 'ok' ? framed.reply.data : undefined, binary: framed.binary }).out).toEqual(wantBytes);
  });

  it('scalars and empty tensors', async () => {
    const scalarRef = await bare(scalar.bytes, { in: { dtype: 'float32', shape: [], data: [3.5] } });
    const r = await postJson(port, '/v2/models/scalar/infer', { inputs: [oipInput('in', 'float32', [], [3.5])] });
    expect(r.json.outputs).toEqual([{ name: 'out', datatype: 'FP32', shape: [], data: encodeTensor(scalarRef.out as never).data }]);
    const b = await postBinary(port, '/v2/models/scalar/infer', { inputs: [{ name: 'in', datatype: 'FP32', shape: [], parameters: { binary_data_size: 4 } }], outputs: [{ name: 'out', parameters: { binary_data: true } }] }, [
      Buffer.from(Float32Array.of(3.5).buffer),
    ]);
    expect(new Float32Array(Uint8Array.from(binaryOutputs(b).out!).buffer)[0]).toBe(3.5);
    const empty = await postBinary(port, '/v2/models/id-float32/infer', { inputs: [{ name: 'in', datatype: 'FP32', shape: [0], parameters: { binary_data_size: 0 } }], parameters: { binary_data_output: true } }, []);
    expect(empty.status).toBe(200);
    expect(empty.json.outputs).toEqual([{ name: 'out', datatype: 'FP32', shape: [0], parameters: { binary_data_size: 0 } }]);
  });

  it('the original tensor-map body still works on both route families', async () => {
    const x = [0.5, -1, 2, 0.25];
    const want = encodeTensor((await bare(linear.bytes, { x: { dtype: 'float32', shape: [1, 4], data: x } })).y as never);
    for (const path of ['/models/linear', '/v2/models/linear/infer']) {
      const r = await postJson(port, path, { inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } });
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ model: 'linear', version: 1, outputs: { y: want } });
    }
  });
});

describe("the protocol's documented examples, as written", () => {
  // KServe / Open Inference Protocol "Inference Request Examples" (the JSON form), verbatim.
  const jsonExample = `{
      "id" : "42",
      "inputs" : [
        {
          "name" : "input0",
          "shape" : [ 2, 2 ],
          "datatype" : "UINT32",
          "data" : [ 1, 2, 3, 4 ]
        },
        {
          "name" : "input1",
          "shape" : [ 3 ],
          "datatype" : "BOOL",
          "data" : [ true ]
        }
      ],
      "outputs" : [
        {
          "name" : "output0"
        }
      ]
    }`;

  it('the JSON example: its input1 holds 1 value for shape [3], which is refused naming that; with 3 values it answers', async () => {
    const asWritten = await httpCall(port, 'POST', '/v2/models/mymodel/infer', jsonExample, { 'content-type': 'application/json' });
    expect(asWritten.status).toBe(400);
    expect(asWritten.json.error).toMatch(/input "input1": shape \[3\] holds 3 values, but data has 1/);
    const fixed = jsonExample.replace('"data" : [ true ]', '"data" : [ true, false, true ]');
    const r = await httpCall(port, 'POST', '/v2/models/mymodel/infer', fixed, { 'content-type': 'application/json' });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ model_name: 'mymodel', model_version: '1', id: '42', outputs: [{ name: 'output0', datatype: 'FP32', shape: [3, 2], data: mymodel.expected([1, 2, 3, 4], [true, false, true]) }] });
    // "Tensor Data": the natural multi-dimensional representation is accepted as well as the flat one
    const nested = await httpCall(port, 'POST', '/v2/models/mymodel/infer', fixed.replace('[ 1, 2, 3, 4 ]', '[ [ 1, 2 ], [ 3, 4 ] ]'), { 'content-type': 'application/json' });
    expect(nested.json.outputs).toEqual(r.json.outputs);
  });

  it("the binary tensor data extension's example: 16 + 3 bytes in, 24 bytes of FP32 [3, 2] out", async () => {
    // Triton's extension_binary_data.md request, verbatim (header text and all), then its 19 bytes.
    const header = `{
  "model_name" : "mymodel",
  "inputs" : [
    {
      "name" : "input0",
      "shape" : [ 2, 2 ],
      "datatype" : "UINT32",
      "parameters" : {
        "binary_data_size" : 16
      }
    },
    {
      "name" : "input1",
      "shape" : [ 3 ],
      "datatype" : "BOOL",
      "parameters" : {
        "binary_data_size" : 3
      }
    }
  ],
  "outputs" : [
    {
      "name" : "output0",
      "parameters" : {
        "binary_data" : true
      }
    }
  ]
}`;
    const json = Buffer.from(header);
    const body = Buffer.concat([json, Buffer.from(Uint32Array.of(1, 2, 3, 4).buffer), Buffer.of(1, 0, 1)]);
    const headers = { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(json.length) };
    for (const h of [headers, { 'inference-header-content-length': String(json.length) }]) {
      // the second as Triton's Python client sends it: no Content-Type at all
      const r = await httpCall(port, 'POST', '/v2/models/mymodel/infer', body, h);
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toBe('application/octet-stream');
      expect(Number(r.headers['content-length'])).toBe(Number(r.headers['inference-header-content-length']) + 24);
      expect(r.json.outputs).toEqual([{ name: 'output0', shape: [3, 2], datatype: 'FP32', parameters: { binary_data_size: 24 } }]);
      expect(Array.from(new Float32Array(Uint8Array.from(r.binary!).buffer))).toEqual(mymodel.expected([1, 2, 3, 4], [true, false, true]));
    }
  });
});

describe('output selection', () => {
  const inputs = [oipInput('ids', 'int64', [1, 3], [1, 2, '9007199254740993']), oipInput('scale', 'float32', [1, 3], [0.5, 1, 2])];

  it('answers only the outputs asked for, in their order, each as JSON or binary as asked', async () => {
    const ref = await bare(multi.bytes, { ids: { dtype: 'int64', shape: [1, 3], data: [1, 2, '9007199254740993'] }, scale: { dtype: 'float32', shape: [1, 3], data: [0.5, 1, 2] } });
    const one = await postJson(port, '/v2/models/multi/infer', { inputs, outputs: [{ name: 'next_ids' }] });
    expect(one.json.outputs).toEqual([{ name: 'next_ids', datatype: 'INT64', shape: [1, 3], data: encodeTensor(ref.next_ids as never).data }]);
    const mixed = await postJson(port, '/v2/models/multi/infer', {
      inputs,
      parameters: { binary_data_output: true },
      outputs: [{ name: 'next_ids', parameters: { binary_data: false } }, { name: 'out' }],
    });
    expect(mixed.json.outputs).toEqual([
      { name: 'next_ids', datatype: 'INT64', shape: [1, 3], data: encodeTensor(ref.next_ids as never).data },
      { name: 'out', datatype: 'FP32', shape: [1, 3], parameters: { binary_data_size: 12 } },
    ]);
    expect(binaryOutputs(mixed).out).toEqual(Buffer.from(tensorBytes(ref.out as never)));
  });
});

describe('refusals', () => {
  const x = (data: unknown[] = [1, 2, 3, 4]) => ({ inputs: [oipInput('x', 'float32', [1, 4], data)] });
  const xBinary = (size: number) => ({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], parameters: { binary_data_size: size } }] });

  it('400 for bad bodies and tensors, 404 for a version not served, with {"error": "..."}', async () => {
    const cases: [() => ReturnType<typeof httpCall>, number, RegExp][] = [
      [() => httpCall(port, 'POST', '/v2/models/linear/infer', '{"inputs": ', { 'content-type': 'application/json' }), 400, /not JSON/],
      [() => postJson(port, '/v2/models/linear/infer', x([1e39, 2, 3, 4])), 400, /element 0: 1e\+39 is out of float32's range/],
      [() => postJson(port, '/v2/models/linear/infer', x([1, 2, 3])), 400, /holds 4 values, but data has 3/],
      [() => postJson(port, '/v2/models/linear/infer', { inputs: [oipInput('z', 'float32', [1, 4], [1, 2, 3, 4])] }), 400, /no input "z"/],
      [() => postJson(port, '/v2/models/linear/infer', { inputs: [oipInput('x', 'int32', [1, 4], [1, 2, 3, 4])] }), 400, /must be float32, got int32/],
      [() => postJson(port, '/v2/models/linear/infer', { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4] }] }), 400, /has no data/],
      [() => postJson(port, '/v2/models/linear/infer', { ...x(), outputs: [{ name: 'nope' }] }), 400, /has no output "nope"/],
      [() => postJson(port, '/v2/models/linear/infer', { ...x(), parameters: { classification: 3 } }), 400, /classification extension is not supported/],
      [() => postJson(port, '/v2/models/linear/infer', { ...x(), model_name: 'other' }), 400, /names model "other"/],
      [() => postBinary(port, '/v2/models/linear/infer', xBinary(16), [Buffer.alloc(12)]), 400, /declares 16 bytes .* only 12/],
      [() => postBinary(port, '/v2/models/linear/infer', xBinary(12), [Buffer.alloc(12)]), 400, /is 16 bytes of binary data, but binary_data_size is 12/],
      [() => httpCall(port, 'POST', '/v2/models/linear/infer', Buffer.alloc(8), { 'content-type': 'application/octet-stream' }), 400, /needs Inference-Header-Content-Length/],
      [() => postJson(port, '/v2/models/linear/versions/2/infer', x()), 404, /linear@2 is not being served; the active version is 1/],
      [() => postJson(port, '/v2/models/nope/infer', x()), 404, /"nope" is not active/],
    ];
    for (const [call, status, message] of cases) {
      const r = await call();
      expect({ status: r.status, error: r.json?.error }).toEqual({ status, error: expect.stringMatching(message) });
    }
  });

  it('415 for a body that is neither JSON nor octet-stream, or compressed; the original routes keep {error: {code, message}}', async () => {
    const body = JSON.stringify(x());
    const text = await httpCall(port, 'POST', '/v2/models/linear/infer', body, { 'content-type': 'text/plain' });
    expect(text.status).toBe(415);
    expect(text.json.error).toMatch(/content-type text\/plain is not accepted; send application\/json .* or application\/octet-stream/);
    const form = await httpCall(port, 'POST', '/models/linear', body, { 'content-type': 'application/x-www-form-urlencoded' });
    expect(form.status).toBe(415);
    expect(form.json.error).toEqual({ code: 'unsupported_media_type', message: expect.stringMatching(/x-www-form-urlencoded is not accepted/) });
    const gzip = await httpCall(port, 'POST', '/v2/models/linear/infer', body, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
    expect(gzip.status).toBe(415);
    expect(gzip.json.error).toMatch(/send the body uncompressed/);
  });

  it('413 over the configured limit (--http-max-body-mb 1), by Content-Length and counted while reading', async () => {
    const big = Buffer.alloc(1024 * 1024 + 1, 0x20);
    const declared = await httpCall(port, 'POST', '/v2/models/linear/infer', big, { 'content-type': 'application/json', 'content-length': String(big.length) });
    expect(declared.status).toBe(413);
    expect(declared.json.error).toMatch(/1048577 bytes is over the 1 MiB \(1048576-byte\) limit; raise it with the agent's httpMaxBodyMb \(--http-max-body-mb/);
    const chunked = await httpCall(port, 'POST', '/models/linear', big, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    expect(chunked.status).toBe(413);
    expect(chunked.json.error.code).toBe('too_long');
    // just under the limit is read and parsed
    const under = Buffer.concat([Buffer.from(JSON.stringify(x())), Buffer.alloc(1024 * 1024 - 200, 0x20)]);
    expect((await httpCall(port, 'POST', '/v2/models/linear/infer', under, { 'content-type': 'application/json' })).status).toBe(200);
    expect((await httpCall(port, 'GET', '/v2/health/live')).status).toBe(200);
  });
});
