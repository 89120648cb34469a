// Model versions for bench/swap.js and its server process: y = x·W + b with seeded weights, so both
// processes build byte-identical versions and the bench can check every answer in plain JS.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import onnxProto from 'onnx-proto';
import { ManifestSchema, chunkHashes, sha256Hex } from '@edgefleet/protocol';

/** WORKER_SESSION_MB moves the threshold between inline and worker sessions (the agent's workerSessionMb; default 8). */
export const workerSessionBytes = process.env.WORKER_SESSION_MB === undefined ? undefined : Number(process.env.WORKER_SESSION_MB) * 1024 * 1024;

function seeded(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

export function linear(inF, outF, seed) {
  const { onnx } = onnxProto;
  const T = onnx.TensorProto.DataType;
  const rnd = seeded(seed);
  const w = Float32Array.from({ length: inF * outF }, rnd);
  const b = Float32Array.from({ length: outF }, rnd);
  const raw = (a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const vi = (name, dims) => ({ name, type: { tensorType: { elemType: T.FLOAT, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } } });
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'linear',
      node: [
        { opType: 'MatMul', input: ['x', 'W'], output: ['xw'] },
        { opType: 'Add', input: ['xw', 'b'], output: ['y'] },
      ],
      input: [vi('x', ['batch', inF])],
      output: [vi('y', ['batch', outF])],
      initializer: [
        { name: 'W', dims: [inF, outF], dataType: T.FLOAT, rawData: raw(w) },
        { name: 'b', dims: [outF], dataType: T.FLOAT, rawData: raw(b) },
      ],
    },
  });
  const bytes = Buffer.from(onnx.ModelProto.encode(model).finish());
  const expected = (x) => {
    const y = new Array(outF).fill(0);
    for (let c = 0; c < outF; c++) {
      let s = b[c];
      for (let k = 0; k < inF; k++) s += x[k] * w[k * outF + c];
      y[c] = s;
    }
    return y;
  };
  return { bytes, expected };
}

export function manifest(name, version, bytes) {
  const now = Date.now();
  return ManifestSchema.parse({
    kind: 'model',
    name,
    version,
    sha256: sha256Hex(bytes),
    length: bytes.length,
    issuedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 3600_000).toISOString(),
    target: { devices: ['bench'] },
    chunking: { size: bytes.length, sha256: chunkHashes(bytes, bytes.length) },
  });
}

/**
 * A model service (the device side) in a fresh data directory with versions 1..count of one linear
 * model installed and version 1 active.
 */
export async function openDevice({ inF, outF, count, threads, createModelService, logger, dir }) {
  const models = await createModelService({ dataDir: dir, logger, threads });
  const versions = new Map();
  const installMs = [];
  for (let v = 1; v <= count; v++) {
    const m = linear(inF, outF, v);
    versions.set(v, m);
    const staged = join(dir, `staged-${v}.onnx`);
    await writeFile(staged, m.bytes);
    const t0 = performance.now();
    await models.install(manifest('m', v, m.bytes), staged);
    installMs.push(performance.now() - t0);
  }
  await models.activate('m', 1);
  return { models, versions, installMs: installMs.reduce((a, b) => a + b, 0) / installMs.length };
}
