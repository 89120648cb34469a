/**
 * The files a version's activation check names (models/checks.ts): sample requests and expected outputs,
 * uploaded before the version is added (`POST /api/samples`, `POST /api/expected-outputs`) and kept
 * content-addressed under `<dataDir>/blobs/checks/<sha256>`. A sample is kept in a form whose JSON header
 * ends where its JSON does, so its header length can always be found again from the bytes; expected
 * outputs as one canonical tensor map. A file no version names is removed after an hour (on the next
 * upload), and with the last version that names it.
 */
import { mkdir, readFile, readdir, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '@edgefleet/node-io';
import { DTYPE_OF, FleetError, OipDatatypeSchema, canonicalJson, isOipRequest, parseInferBody, sha256Hex, sliceBinaryTensors, splitStoredInferBody } from '@edgefleet/protocol';
import type { InferBody } from '@edgefleet/protocol';

/** The largest sample request the controller keeps (the agent's default HTTP body limit). */
export const SAMPLE_UPLOAD_MAX_BYTES = 64 * 1024 * 1024;
/** Expected outputs travel inside the signed manifest, whose offer is one MQTT request (4 MiB with everything else). */
export const EXPECTED_MAX_BYTES = 1024 * 1024;
/** How long an uploaded file that no version names is kept. */
export const UNUSED_CHECK_FILE_MS = 60 * 60_000;

/** What an uploaded sample request is. */
export interface SampleUpload {
  sha256: string;
  length: number;
  /** Inference-Header-Content-Length of a binary body; null for JSON. */
  headerLength: number | null;
  form: 'tensor-map' | 'oip' | 'raw';
  /** The inputs it names (none for a raw input). */
  inputs: string[];
}

/** What an uploaded set of expected outputs is. */
export interface ExpectedUpload {
  sha256: string;
  length: number;
  outputs: string[];
}

/** A JSON tensor as expected outputs hold it. */
export type ExpectedTensor = { dtype: string; shape: number[]; data: unknown[] };

export interface CheckFiles {
  readonly dir: string;
  /** Checks a request body (JSON, or a JSON header then binary tensors) and keeps it. */
  putSample(body: Uint8Array, headerLength?: number): Promise<SampleUpload>;
  /** Checks expected outputs (a tensor map, an infer answer, or an Open Inference Protocol response) and keeps them as a tensor map. */
  putExpected(json: unknown): Promise<ExpectedUpload>;
  /** A kept sample: its body split at its header. */
  readSample(sha256: string): Promise<{ bytes: Buffer; body: InferBody; binary: Uint8Array | undefined; headerLength: number | undefined }>;
  readExpected(sha256: string): Promise<Record<string, ExpectedTensor>>;
  path(sha256: string): string;
  /**
   * Removes the files a removed version named that no version names any more, unless uploaded again since
   * `addedAt` (the removed version's): then an add about to name them may be under way, and the sweep takes them later.
   */
  release(unused: readonly string[], named: ReadonlySet<string>, addedAt: number): Promise<void>;
  /** Removes files no version names that are older than UNUSED_CHECK_FILE_MS. */
  sweep(named: ReadonlySet<string>, now?: number): Promise<void>;
}

const bad = (message: string) => new FleetError('invalid_input', message);

/** The sample in the form it is kept: a binary body's JSON header cut to where its JSON ends. */
function normalizedSample(body: Uint8Array, headerLength: number | undefined): { bytes: Buffer; upload: Omit<SampleUpload, 'sha256' | 'length'> } {
  const split = splitStoredInferBody(body, headerLength);
  const parsed = parseInferBody(split.json);
  const form = isOipRequest(parsed) ? 'oip' : parsed.raw !== undefined ? 'raw' : 'tensor-map';
  const inputs = isOipRequest(parsed) ? parsed.inputs.map((i) => i.name) : Object.keys(parsed.inputs ?? {});
  if (split.binary === undefined) return { bytes: Buffer.from(body), upload: { headerLength: null, form, inputs } };
  if (!isOipRequest(parsed)) {
    throw bad('binary tensor data needs the Open Inference Protocol form: {"inputs": [{"name", "datatype", "shape", "parameters": {"binary_data_size"}}]}');
  }
  sliceBinaryTensors(parsed.inputs, split.binary, 'input'); // the sizes add up
  const header = Buffer.from(JSON.stringify(split.json), 'utf8');
  return { bytes: Buffer.concat([header, split.binary]), upload: { headerLength: header.byteLength, form, inputs } };
}

/** Expected outputs as a tensor map, from any of the forms an answer comes in. */
export function expectedTensorMap(json: unknown): Record<string, ExpectedTensor> {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw bad('expected outputs must be a JSON object: {"y": {"dtype", "shape", "data"}}, an infer answer {"outputs": {...}}, or an Open Inference Protocol response {"outputs": [...]}');
  }
  const outputs = (json as { outputs?: unknown }).outputs;
  const entries: [string, unknown][] = Array.isArray(outputs)
    ? outputs.map((o, i) => {
        const { name, datatype, shape, data } = (o ?? {}) as { name?: unknown; datatype?: unknown; shape?: unknown; data?: unknown };
        const dt = OipDatatypeSchema.safeParse(datatype);
        if (typeof name !== 'string' || !dt.success) throw bad(`expected outputs: outputs.${i} needs a name and an Open Inference Protocol datatype (FP32, INT64, …)`);
        if (data === undefined) throw bad(`expected output "${name}" has no data; give it in JSON (binary outputs cannot be expectations)`);
        return [name, { dtype: DTYPE_OF[dt.data], shape, data }];
      })
    : Object.entries(outputs !== null && typeof outputs === 'object' ? outputs : json);
  if (entries.length === 0) throw bad('expected outputs name no output');
  const map: Record<string, ExpectedTensor> = {};
  for (const [name, t] of entries) {
    const { dtype, shape, data } = (t ?? {}) as Partial<ExpectedTensor>;
    if (typeof dtype !== 'string' || !Array.isArray(shape) || !Array.isArray(data)) throw bad(`expected output "${name}" must be {"dtype", "shape", "data"}`);
    if (Object.hasOwn(map, name)) throw bad(`expected output "${name}" is given twice`);
    map[name] = { dtype, shape, data };
  }
  return map;
}

export function createCheckFiles(dataDir: string): CheckFiles {
  const dir = join(dataDir, 'blobs', 'checks');
  const path = (sha256: string): string => {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new FleetError('invalid_params', `"${sha256}" is not a sha256 (64 lowercase hex digits)`);
    return join(dir, sha256);
  };
  /** Keeps the bytes under their sha256; a file already there only has its time renewed, so it is not swept. */
  async function keep(bytes: Buffer): Promise<string> {
    const sha256 = sha256Hex(bytes);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const present = await stat(path(sha256)).catch(() => undefined); // not kept yet: written below
    if (present?.size === bytes.byteLength) {
      const now = new Date();
      await utimes(path(sha256), now, now);
    } else {
      await writeFileAtomic(path(sha256), bytes);
    }
    return sha256;
  }
  async function read(sha256: string, what: string): Promise<Buffer> {
    try {
      return await readFile(path(sha256));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      throw new FleetError('not_found', `no ${what} ${sha256.slice(0, 12)}… on this controller (files no version names are removed after an hour); upload it again`);
    }
  }
  return {
    dir,
    path,
    async putSample(body, headerLength) {
      if (body.byteLength > SAMPLE_UPLOAD_MAX_BYTES) throw new FleetError('too_long', `a sample request is at most ${SAMPLE_UPLOAD_MAX_BYTES} bytes; this one is ${body.byteLength}`);
      const { bytes, upload } = normalizedSample(body, headerLength);
      return { sha256: await keep(bytes), length: bytes.byteLength, ...upload };
    },
    async putExpected(json) {
      const map = expectedTensorMap(json);
      const bytes = Buffer.from(canonicalJson(map), 'utf8');
      if (bytes.byteLength > EXPECTED_MAX_BYTES) {
        throw new FleetError('too_long', `expected outputs travel in the signed manifest and are at most ${EXPECTED_MAX_BYTES} bytes of JSON; these are ${bytes.byteLength}. Expect fewer outputs`);
      }
      return { sha256: await keep(bytes), length: bytes.byteLength, outputs: Object.keys(map) };
    },
    async readSample(sha256) {
      const bytes = await read(sha256, 'sample request');
      const split = splitStoredInferBody(bytes);
      return { bytes, body: parseInferBody(split.json), binary: split.binary, headerLength: split.headerLength };
    },
    async readExpected(sha256) {
      return expectedTensorMap(JSON.parse((await read(sha256, 'expected outputs')).toString('utf8')));
    },
    async release(unused, named, addedAt) {
      for (const sha256 of unused) {
        if (named.has(sha256)) continue;
        const s = await stat(path(sha256)).catch(() => undefined); // already gone: nothing to do
        if (s && s.mtimeMs <= addedAt) await rm(path(sha256), { force: true });
      }
    },
    async sweep(named, now = Date.now()) {
      for (const entry of await readdir(dir).catch(() => [] as string[])) {
        if (named.has(entry) || !/^[0-9a-f]{64}$/.test(entry)) continue;
        const s = await stat(join(dir, entry)).catch(() => undefined); // removed meanwhile: nothing to do
        if (s && now - s.mtimeMs > UNUSED_CHECK_FILE_MS) await rm(join(dir, entry), { force: true });
      }
    },
  };
}
