/**
 * edgefleet-infer on the real ONNX Runtime: the OIP HTTP server, the line protocol and the
 * IMDB console, on ONNX files built in code, answers compared with onnxruntime-node in this
 * process on the same files.
 *
 * It links onnxruntime-node's own libonnxruntime.so (linux x64), but ONNX Runtime's C/C++
 * headers ship in no npm or Debian 12 package, so it runs only when EDGEFLEET_ORT_INCLUDE_DIR
 * names a folder holding onnxruntime_cxx_api.h (any release up to the library's 1.30; the
 * 1.12 headers of the original work). Without it the suite is reported as skipped, by name.
 * The ONNX Runtime part is always compiled by the Dockerfile.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import ort from 'onnxruntime-node';
import { allClose, encodeModel, floatTensor, int64Tensor, linearModel, multiInputModel, node, valueInfo } from '../../test/support/onnx-models.js';
import { buildNative, run } from './support/native-build.js';

const INCLUDE_DIR = process.env.EDGEFLEET_ORT_INCLUDE_DIR;
const LIBRARY = join(dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json')), 'bin', 'napi-v6', 'linux', 'x64', 'libonnxruntime.so.1');
const ready = INCLUDE_DIR !== undefined && existsSync(join(INCLUDE_DIR, 'onnxruntime_cxx_api.h')) && existsSync(LIBRARY) && process.arch === 'x64';
const describeWithOrt = ready ? describe : describe.skip;
if (!ready) console.warn('toolchains/test/ort.test.ts: skipped: set EDGEFLEET_ORT_INCLUDE_DIR to a folder with onnxruntime_cxx_api.h (see toolchains/README.md)');
const suiteName = ready
  ? 'edgefleet-infer on ONNX Runtime'
  : 'edgefleet-infer on ONNX Runtime (skipped: set EDGEFLEET_ORT_INCLUDE_DIR to a folder with onnxruntime_cxx_api.h; no package here ships the headers)';

const SEQUENCE = 6;
// keras.datasets.imdb.get_word_index()-style ranks; ids are rank + 3
const WORD_INDEX = { the: 1, good: 2, bad: 3, movie: 4 };
const EMBEDDING = [0, 0, 0, 0, 0, 2.5, -2.5, 0.25]; // id 5 = good, 6 = bad, 7 = movie

/** ids INT32 [1, 6] -> sigmoid(mean(embedding[ids])) FP32 [1, 1]: an IMDB-like sentiment model. */
function sentimentModel(): Buffer {
  return encodeModel({
    name: 'imdb_like',
    inputs: [valueInfo('ids', 'int32', [1, SEQUENCE])],
    outputs: [valueInfo('prob', 'float32', [1, 1])],
    nodes: [
      node('Gather', ['embedding', 'ids'], ['vectors'], { axis: { int: 0 } }),
      node('ReduceMean', ['vectors'], ['mean'], { axes: [1, 2], keepdims: { int: 1 } }),
      node('Reshape', ['mean', 'shape'], ['logit']),
      node('Sigmoid', ['logit'], ['prob']),
    ],
    initializers: [floatTensor('embedding', [EMBEDDING.length, 1], EMBEDDING), int64Tensor('shape', [2], [1, 1])],
  });
}
const expectedProbability = (ids: number[]): number => 1 / (1 + Math.exp(-ids.reduce((s, id) => s + (EMBEDDING[id] ?? 0), 0) / ids.length));

describeWithOrt(suiteName, () => {
  let binary = '';
  let dir = '';
  let server: ChildProcessWithoutNullStreams | undefined;
  let base = '';
  const linear = linearModel({ inFeatures: 4, outFeatures: 3, seed: 7 });
  const multi = multiInputModel();

  beforeAll(async () => {
    const build = await buildNative('native', {
      name: 'native-ort',
      defines: ['-DEDGEFLEET_WITH_ORT=ON', '-DEDGEFLEET_BUILD_TESTS=OFF', `-DONNXRUNTIME_INCLUDE_DIR=${INCLUDE_DIR}`, `-DONNXRUNTIME_LIBRARY=${LIBRARY}`],
    });
    binary = join(build.dir, 'edgefleet-infer');
    dir = await mkdtemp(join(tmpdir(), 'edgefleet-ort-'));
    await writeFile(join(dir, 'linear.onnx'), linear.bytes);
    await writeFile(join(dir, 'multi.onnx'), multi.bytes);
    await writeFile(join(dir, 'imdb.onnx'), sentimentModel());
    await writeFile(join(dir, 'words.json'), JSON.stringify(WORD_INDEX));
    server = spawn(binary, ['serve', '--model-dir', dir, '--port', '0', '--threads', '1']);
    base = await new Promise<string>((resolve, reject) => {
      let err = '';
      server!.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        const m = /on (http:\/\/127\.0\.0\.1:\d+)\/v2/.exec(err);
        if (m) resolve(m[1]!);
      });
      server!.on('exit', (code) => reject(new Error(`edgefleet-infer exited (${code}):\n${err}`)));
    });
  }, 600_000);

  afterAll(async () => {
    server?.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('describes the models as ONNX Runtime sees them, dynamic dimensions as -1', async () => {
    const meta = (await (await fetch(`${base}/v2/models/linear`)).json()) as { platform: string; inputs: unknown[]; outputs: unknown[] };
    expect(meta.platform).toBe('onnxruntime_onnx');
    expect(meta.inputs).toEqual([{ name: 'x', datatype: 'FP32', shape: [-1, 4] }]);
    expect(meta.outputs).toEqual([{ name: 'y', datatype: 'FP32', shape: [-1, 3] }]);
    expect((await fetch(`${base}/v2/health/ready`)).status).toBe(200);
    const server = (await (await fetch(`${base}/v2`)).json()) as { version: string };
    expect(server.version).toMatch(/onnxruntime 1\.\d+\.\d+/);
  });

  it('answers JSON and binary infer requests as onnxruntime-node does', async () => {
    const x = Float32Array.from({ length: 8 }, (_, i) => i / 3 - 1);
    const session = await ort.InferenceSession.create(linear.bytes);
    const reference = (await session.run({ x: new ort.Tensor('float32', x, [2, 4]) })).y!.data as Float32Array;

    const json = await fetch(`${base}/v2/models/linear/infer`, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 4], data: Array.from(x) }] }) });
    const body = (await json.json()) as { outputs: { shape: number[]; data: number[] }[] };
    expect(body.outputs[0]!.shape).toEqual([2, 3]);
    expect(allClose(body.outputs[0]!.data, reference, 1e-6)).toBe(true);

    const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 4], parameters: { binary_data_size: 32 } }], outputs: [{ name: 'y', parameters: { binary_data: true } }] }));
    const binary = await fetch(`${base}/v2/models/linear/infer`, {
      method: 'POST',
      headers: { 'Inference-Header-Content-Length': String(header.length), 'Content-Type': 'application/octet-stream' },
      body: Buffer.concat([header, Buffer.from(x.buffer)]),
    });
    const jsonLength = Number(binary.headers.get('inference-header-content-length'));
    const raw = Buffer.from(await binary.arrayBuffer());
    const y = new Float32Array(raw.buffer.slice(raw.byteOffset + jsonLength, raw.byteOffset + raw.length));
    expect(Array.from(y)).toEqual(Array.from(reference)); // bit for bit
  });

  it('carries int64 and float inputs side by side', async () => {
    const r = await fetch(`${base}/v2/models/multi/infer`, {
      method: 'POST',
      body: JSON.stringify({ inputs: [{ name: 'ids', datatype: 'INT64', shape: [1, 3], data: [1, 2, 9007199254740000] }, { name: 'scale', datatype: 'FP32', shape: [1, 3], data: [0.5, 1, 0] }] }),
    });
    const text = await r.text();
    expect(text).toContain('9007199254740001'); // int64 beyond double precision is kept exactly
    const body = JSON.parse(text) as { outputs: { name: string; data: number[] }[] };
    const out = body.outputs.find((o) => o.name === 'out')!;
    expect(allClose(out.data, multi.expected([1, 2, 0], [0.5, 1, 0]).out)).toBe(true);
  });

  it('refuses tensors that do not fit, naming the fault, and keeps serving', async () => {
    const r = await fetch(`${base}/v2/models/linear/infer`, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'x', datatype: 'INT64', shape: [1, 4], data: [1, 2, 3, 4] }] }) });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: string }).error).toBe("input 'x' has datatype FP32, got INT64");
    expect((await fetch(`${base}/v2/health/live`)).status).toBe(200);
  });

  it('serves the line protocol over stdin and stdout', async () => {
    const r = await run(binary, ['lines', '-m', join(dir, 'linear.onnx')], {
      input: `${JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 0, 0, 0] }] })}\nnonsense\n`,
    });
    const [first, second] = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { outputs?: { data: number[] }[]; error?: string });
    expect(allClose(first!.outputs![0]!.data, linear.expected([1, 0, 0, 0], 1))).toBe(true);
    expect(second!.error).toMatch(/^the request body is not JSON/);
    expect(r.code).toBe(1); // one request failed
  });

  it('runs the IMDB console: offset ids, unknown words as OOV, exit() and end of input', async () => {
    const args = ['imdb', '-m', join(dir, 'imdb.onnx'), '-w', join(dir, 'words.json')];
    const r = await run(binary, args, { input: 'good good movie\nbad zyzzyva\nexit()\n' });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('exit() to leave.');
    // [0,0,1,5,5,7] and [0,0,0,1,6,2]: start id 1, rank + 3, unknown = 2, padded in front
    expect(r.stdout).toContain(`positive (p = ${expectedProbability([0, 0, 1, 5, 5, 7]).toFixed(3)})`);
    expect(r.stdout).toContain(`negative (p = ${expectedProbability([0, 0, 0, 1, 6, 2]).toFixed(3)}); 1 of 2 words not in the vocabulary`);
    expect(r.stdout).toContain('bye');
    const eof = await run(binary, args, { input: 'good' });
    expect(eof.code).toBe(0); // end of input ends it
    const wrong = await run(binary, ['imdb', '-m', join(dir, 'multi.onnx'), '-w', join(dir, 'words.json')]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("model 'multi' has 2 inputs: a sentiment model takes one");
  });

  it('drains and exits 0 on SIGTERM', async () => {
    const exited = new Promise<number | null>((resolve) => server!.on('exit', resolve));
    server!.kill('SIGTERM');
    expect(await exited).toBe(0);
    server = undefined;
  });
});
