/**
 * The local HTTP inference API over a real socket: model listing and signatures, inference on the active
 * or a named version with the same outputs as the service (and the models' own arithmetic), 400/404/405/413
 * with {error: {code, message}}, and close() finishing requests in flight.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { request as httpRequest } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import sharp from 'sharp';
import type { Processing } from '@edgefleet/protocol';
import { createInferenceServer, createModelService } from '../src/models/index.js';
import type { InferenceServer, ModelService } from '../src/models/index.js';
import { allClose, identityModel, imageClassifierModel, linearModel, slowModel, stageFile, testManifest } from '../../test/support/onnx-models.js';
import { binaryOutputs, postBinary } from '../../test/support/oip-client.js';

const logger = pino({ level: 'silent' });

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- JSON under test
}

function call(port: number, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, agent: false, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text ? JSON.parse(text) : undefined });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const json = (v: unknown) => JSON.stringify(v);

describe('HTTP inference API', () => {
  let dataDir: string;
  let models: ModelService;
  let server: InferenceServer;
  const lin = linearModel({ seed: 4 });
  const img = imageClassifierModel({ height: 4, width: 4, classes: 3 });
  const slow = slowModel({ matmuls: 100, size: 256 });

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'edgefleet-http-'));
    models = await createModelService({ dataDir, logger, threads: 1 });
    const add = async (name: string, bytes: Buffer, processing?: unknown) => {
      const extra = processing ? { processing: processing as Processing } : {};
      await models.install(testManifest(name, 1, bytes, extra), await stageFile(join(dataDir, 'staging'), bytes));
      await models.activate(name, 1);
    };
    await add('lin', lin.bytes);
    await add('food', img.bytes, { kind: 'image-classification', input: 'image', width: 4, height: 4, labels: ['a', 'b', 'c'], topK: 2 });
    await add('slow', slow.bytes);
    await add('id', identityModel('float32', ['n']).bytes);
    server = await createInferenceServer(models, { port: 0, logger, maxBodyBytes: 64 * 1024 });
  });
  afterAll(async () => {
    await server.close();
    await models.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('lists models and describes their inputs and outputs', async () => {
    const list = await call(server.port, 'GET', '/models');
    expect(list.status).toBe(200);
    expect(list.body.models.map((m: { name: string }) => m.name)).toEqual(['food', 'id', 'lin', 'slow']);
    const one = await call(server.port, 'GET', '/models/lin');
    expect(one.body).toEqual({
      name: 'lin',
      version: 1,
      active: 1,
      versions: [1],
      inputs: [{ name: 'x', dtype: 'float32', shape: ['batch', 4] }],
      outputs: [{ name: 'y', dtype: 'float32', shape: ['batch', 3] }],
    });
    expect((await call(server.port, 'GET', '/models/lin/v1')).body).toEqual(one.body);
    expect((await call(server.port, 'GET', '/models/food')).body.inputs).toEqual([{ name: 'image', dtype: 'float32', shape: [1, 3, 4, 4] }]);
  });

  it('infers on the active version and on a named version, with the same outputs as the service', async () => {
    const x = [0.1, 0.2, -0.3, 0.4, 1, 2, 3, 4];
    const body = json({ inputs: { x: { dtype: 'float32', shape: [2, 4], data: x } } });
    const r = await call(server.port, 'POST', '/models/lin', body);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ model: 'lin', version: 1, outputs: { y: { dtype: 'float32', shape: [2, 3] } } });
    expect(typeof r.body.latencyMs).toBe('number');
    expect(allClose(r.body.outputs.y.data, lin.expected(x))).toBe(true);
    const direct = await models.infer({ model: 'lin', inputs: { x: { dtype: 'float32', shape: [2, 4], data: x } } });
    expect(r.body.outputs).toEqual(direct.outputs);
    const pinned = await call(server.port, 'POST', '/models/lin/v1', body);
    expect(pinned.body.outputs).toEqual(direct.outputs);
  });

  it('runs raw inputs through the declared processing', async () => {
    const png = await sharp(Buffer.alloc(4 * 4 * 3, 100), { raw: { width: 4, height: 4, channels: 3 } }).png().toBuffer();
    const r = await call(server.port, 'POST', '/models/food', json({ raw: { imageBase64: png.toString('base64') } }));
    expect(r.status).toBe(200);
    expect(r.body.answer.top).toHaveLength(2);
    expect(r.body.outputs.logits.shape).toEqual([1, 3]);
  });

  it('answers 400, 404, 405 and 413 with {error: {code, message}}', async () => {
    const cases: [string, string, string | undefined, number, string, RegExp][] = [
      ['POST', '/models/lin', '{"inputs": ', 400, 'bad_request', /not JSON/],
      ['POST', '/models/lin', '[1, 2]', 400, 'bad_request', /JSON object/],
      ['POST', '/models/lin', json({ inputs: {}, extra: 1 }), 400, 'invalid_params', /unknown field\(s\) extra/],
      ['POST', '/models/lin', json({ inputs: { x: { dtype: 'float32', shape: [1, 5], data: [1, 2, 3, 4, 5] } } }), 400, 'invalid_input', /dimension 1 must be 4/],
      ['POST', '/models/lin', json({ inputs: { x: { dtype: 'int32', shape: [1, 4], data: [1, 2, 3, 4] } } }), 400, 'invalid_input', /must be float32, got int32/],
      ['POST', '/models/lin', json({ raw: { nothing: true } }), 400, 'invalid_input', /"raw" must be/],
      ['POST', '/models/food', json({ raw: { imageBase64: 'AAAA' } }), 400, 'invalid_input', /could not be decoded/],
      ['POST', '/models/nope', json({ inputs: {} }), 404, 'not_found', /"nope" is not active/],
      ['POST', '/models/lin/v7', json({ inputs: {} }), 404, 'not_found', /lin@7 is not being served/],
      ['GET', '/models/nope', undefined, 404, 'not_found', /not on this device/],
      ['GET', '/models/lin/v9', undefined, 404, 'not_found', /lin@9 is not installed/],
      ['GET', '/models/..%2Fetc', undefined, 404, 'not_found', /not a valid model name/],
      ['GET', '/models/%E0%A4%A', undefined, 404, 'not_found', /not a valid model name/],
      ['GET', '/nothing-here', undefined, 404, 'not_found', /no route/],
      ['DELETE', '/models/lin', undefined, 405, 'method_not_allowed', /DELETE is not supported/],
      ['POST', '/models', '{}', 405, 'method_not_allowed', /POST is not supported/],
    ];
    for (const [method, path, body, status, code, message] of cases) {
      const r = await call(server.port, method, path, body);
      expect({ path, status: r.status, code: r.body?.error?.code }).toEqual({ path, status, code });
      expect(r.body.error.message).toMatch(message);
    }
  });

  it('refuses bodies over the limit with 413, by declared length and by counting', async () => {
    const big = json({ inputs: { x: { dtype: 'float32', shape: [20000, 4], data: new Array(80000).fill(1) } } });
    const declared = await call(server.port, 'POST', '/models/lin', big, { 'content-length': String(Buffer.byteLength(big)) });
    expect(declared.status).toBe(413);
    expect(declared.body.error).toEqual({ code: 'too_long', message: expect.stringMatching(/over the 65536-byte limit/) });
    const chunked = await call(server.port, 'POST', '/models/lin', big); // no length: counted while reading
    expect(chunked.status).toBe(413);
    // The server is still fine afterwards.
    expect((await call(server.port, 'GET', '/models/lin')).status).toBe(200);
  });

  it('large binary bodies (read into reused buffers) each get their own answer, many at once', async () => {
    const own = await createInferenceServer(models, { port: 0, logger });
    try {
      const n = 600_000; // 2.4 MB per body, over the size whose buffers are kept for reuse
      const inputs = Array.from({ length: 12 }, (_, k) => Float32Array.from({ length: n }, (_, i) => k * 1000 + (i % 997)));
      const header = { inputs: [{ name: 'in', datatype: 'FP32', shape: [n], parameters: { binary_data_size: n * 4 } }], parameters: { binary_data_output: true } };
      for (let round = 0; round < 2; round++) {
        const replies = await Promise.all(inputs.map((x) => postBinary(own.port, '/v2/models/id/infer', header, [Buffer.from(x.buffer)])));
        replies.forEach((r, k) => expect(binaryOutputs(r).out!.equals(Buffer.from(inputs[k]!.buffer))).toBe(true));
      }
    } finally {
      await own.close();
    }
  });

  it('close() stops accepting and lets requests in flight finish', async () => {
    const own = await createInferenceServer(models, { port: 0, logger });
    const body = json({ inputs: { x: { dtype: 'float32', shape: [8, 256], data: new Array(8 * 256).fill(0.5) } } });
    let answered = 0;
    const inflight = Array.from({ length: 20 }, () => call(own.port, 'POST', '/models/slow', body).finally(() => answered++));
    // Wait until every request has reached the server (being handled or already answered), then close.
    const deadline = Date.now() + 10_000;
    // (setImmediate: this check runs before the inference runs queued behind it in the same loop turn.)
    while (own.inflight + answered < 20 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    expect(own.inflight).toBeGreaterThan(0);
    const closed = own.close();
    const results = await Promise.all(inflight);
    await closed;
    expect(results.map((r) => r.status)).toEqual(new Array(20).fill(200));
    expect(results.every((r) => r.body.outputs.y.data.every((v: number) => v === 0.5))).toBe(true);
    await expect(call(own.port, 'GET', '/models')).rejects.toThrow(/ECONNREFUSED/);
  });
});
