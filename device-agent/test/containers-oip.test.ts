/**
 * The agent's Open Inference Protocol client and ContainerSession against a real OIP server (the test
 * server the runtime image runs, here as a plain child process so the codec is tested without Docker):
 * JSON and binary tensors for every dtype, the server's errors as FleetErrors with its sentence, the
 * pass-through forward, and the model service using a ContainerSession like any session (its inference
 * telemetry included).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import pino from 'pino';
import { ManifestSchema } from '@edgefleet/protocol';
import { OipClient, containerSession, decodeInferResponse, encodeInferRequest } from '../src/containers/index.js';
import { createModelService } from '../src/models/index.js';
import { OIP_SERVER } from '../../test/support/container-images.js';
import { linearModel, stageFile, testManifest } from '../../test/support/onnx-models.js';
import { refusal } from '../../test/support/refusal.js';

const servers: ChildProcess[] = [];
const dirs: string[] = [];

async function startServer(env: Record<string, string> = {}): Promise<number> {
  const child = spawn(process.execPath, [OIP_SERVER], { env: { ...process.env, PORT: '0', ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  servers.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`the OIP server exited (${code}): ${out}`)));
  });
}

let client: OipClient;
let jsonOnly: OipClient;
beforeAll(async () => {
  client = new OipClient(await startServer());
  jsonOnly = new OipClient(await startServer({ BINARY: '0' }));
});
afterAll(async () => {
  client.close();
  jsonOnly.close();
  for (const s of servers) s.kill();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const ALL: Record<string, ort.Tensor> = {
  f32: new ort.Tensor('float32', Float32Array.from([1.5, -2, 3.25]), [3]),
  f64: new ort.Tensor('float64', Float64Array.from([1e300, -0.1]), [2]),
  f16: new ort.Tensor('float16', Uint16Array.from([0x3c00, 0xc000]), [2]),
  i8: new ort.Tensor('int8', Int8Array.from([-128, 127]), [2]),
  i16: new ort.Tensor('int16', Int16Array.from([-32768, 32767]), [2]),
  i32: new ort.Tensor('int32', Int32Array.from([-2147483648, 7]), [1, 2]),
  i64: new ort.Tensor('int64', BigInt64Array.from([-(2n ** 63n), 2n ** 53n + 1n]), [2]),
  u8: new ort.Tensor('uint8', Uint8Array.from([0, 255]), [2]),
  u16: new ort.Tensor('uint16', Uint16Array.from([65535]), [1]),
  u32: new ort.Tensor('uint32', Uint32Array.from([4294967295]), [1]),
  u64: new ort.Tensor('uint64', BigUint64Array.from([2n ** 64n - 1n]), [1]),
  b: new ort.Tensor('bool', Uint8Array.from([1, 0, 1]), [3]),
  s: new ort.Tensor('string', ['', 'héllo', 'a\u0000b'], [3]),
  empty: new ort.Tensor('float32', new Float32Array(0), [0, 4]),
};

async function echo(feeds: Record<string, ort.Tensor>, binary: boolean, via = client): Promise<Record<string, ort.Tensor>> {
  const { body, headers } = encodeInferRequest(feeds, Object.keys(feeds), binary, 'echo');
  const res = await via.infer('echo', body, headers);
  const h = res.headers['inference-header-content-length'];
  return decodeInferResponse(res.body, h === undefined ? undefined : Number(h), 'echo');
}

describe('OIP client', () => {
  it('reads health, the server metadata (binary extension) and model metadata', async () => {
    expect(await client.ready()).toBe(true);
    expect((await client.server()).extensions).toContain('binary_tensor_data');
    expect((await jsonOnly.server()).extensions).toEqual([]);
    expect(await client.model('x')).toMatchObject({ inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }], outputs: [{ name: 'y' }] });
    expect(await new OipClient(1).ready()).toBe(false);
  });

  it('carries every dtype exactly as binary tensors', async () => {
    const out = await echo(ALL, true);
    for (const [name, t] of Object.entries(ALL)) {
      expect(out[name]?.type).toBe(t.type);
      expect(Array.from(out[name]!.dims)).toEqual(Array.from(t.dims));
      expect(Array.from(out[name]!.data as ArrayLike<unknown>)).toEqual(Array.from(t.data as ArrayLike<unknown>));
    }
  });

  it('carries JSON tensors, and refuses an int64 a JSON number cannot hold, saying why', async () => {
    const { i64: _big, u64: _bigU, ...jsonable } = ALL;
    const out = await echo({ ...jsonable, small: new ort.Tensor('int64', BigInt64Array.from([-5n, 9007199254740991n]), [2]) }, false);
    for (const [name, t] of Object.entries(jsonable)) expect(Array.from(out[name]!.data as ArrayLike<unknown>)).toEqual(Array.from(t.data as ArrayLike<unknown>));
    expect(Array.from(out.small!.data as BigInt64Array)).toEqual([-5n, 9007199254740991n]);
    const refused = await refusal(echo({ i64: ALL.i64! }, false));
    expect(refused.code).toBe('invalid_input');
    expect(refused.message).toMatch(/does not fit an OIP JSON number.*binary tensor extension/);
  });

  it("turns the server's errors into FleetErrors with its sentence", async () => {
    const unknown = await refusal(client.model('nope'));
    expect(unknown).toMatchObject({ code: 'not_found' });
    expect(unknown.message).toMatch(/unknown model nope/);
    const { body, headers } = encodeInferRequest({ x: new ort.Tensor('int32', Int32Array.from([1]), [1]) }, ['y'], false, 'x');
    const bad = await refusal(client.infer('x', body, headers));
    expect(bad).toMatchObject({ code: 'invalid_input' });
    expect(bad.message).toMatch(/x must be FP32/);
  });

  it('forwards a request body as it is and returns the answer as the server gave it', async () => {
    const body = Buffer.from(JSON.stringify({ id: 'r1', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] }));
    const res = await client.forward('x', body, { 'content-type': 'application/json', cookie: 'dropped' });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString())).toMatchObject({ id: 'r1', outputs: [{ name: 'y', data: [2, 4, 6, 8] }] });
    expect((await client.forward('nope', body, {})).status).toBe(404);
  });
});

describe('ContainerSession in the model service', () => {
  it('serves a model through the session like an in-process one, with its telemetry', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'edgefleet-oip-'));
    dirs.push(dataDir);
    const released: string[] = [];
    const model = linearModel();
    const base = testManifest('x', 1, model.bytes);
    const manifest = ManifestSchema.parse({
      ...base,
      image: { reference: 'oip:1', digest: `sha256:${'a'.repeat(64)}` },
      container: { inference: { protocol: 'oip-http', port: 8000 } },
    });
    const models = await createModelService({
      dataDir,
      logger: pino({ level: 'silent' }),
      threads: 1,
      openRuntime: (r) => {
        if (!r.manifest.container?.inference) return undefined;
        return client.model(r.name).then((meta) => containerSession(client, r.name, meta, true, 'test-server', async () => void released.push(`${r.name}@${r.version}`)));
      },
    });
    try {
      await models.install(manifest, await stageFile(join(dataDir, 'staging'), model.bytes));
      await models.activate('x', 1);
      const r = await models.infer({ model: 'x', inputs: { x: { dtype: 'float32', shape: [2, 4], data: [1, 2, 3, 4, 0.5, -1, 0, 8] } } });
      expect(r.outputs.y).toEqual({ dtype: 'float32', shape: [2, 4], data: [2, 4, 6, 8, 1, -2, 0, 16] });
      await expect(models.infer({ model: 'x', inputs: { x: { dtype: 'float32', shape: [1, 3], data: [1, 2, 3] } } })).rejects.toMatchObject({ code: 'invalid_input' });
      expect(models.drainHealth()['x@1']).toMatchObject({ requests: 2, errors: 1 });
    } finally {
      await models.close();
    }
    expect(released).toEqual(['x@1']);
  });
});
