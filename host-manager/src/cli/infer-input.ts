/**
 * `hostManager infer --input FILE` takes the request bodies a device's inference API takes: the tensor map
 * (`{"inputs": {"x": {dtype, shape, data}}}` or `{"raw": {...}}`), the Open Inference Protocol
 * (`{"inputs": [{name, datatype, shape, data}]}`), or a binary body (that JSON header, then the tensors;
 * the header's length found from the file or given with --header-length). The model (and version and
 * timeout) join the JSON; a binary body goes to the controller as octet-stream with its header length,
 * and an answer with binary outputs comes back the same way.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DTYPE_OF, encodeInferBody, splitStoredInferBody } from '@edgefleet/protocol';
import type { OipDatatype } from '@edgefleet/protocol';
import { UsageError } from './io.js';

export interface InferBody {
  body: Uint8Array;
  headers: Record<string, string>;
}

/** The sentence for a file in the shape `hostManager infer` took before (the inputs map alone). */
function oldShape(json: Record<string, unknown>): UsageError {
  const names = Object.keys(json).slice(0, 3).join(', ');
  return new UsageError(
    `the input file is the old inputs map (${names || 'no inputs'}); hostManager infer now takes the same request body as a device's inference API: ` +
      `write {"inputs": ${JSON.stringify(json).slice(0, 60)}${JSON.stringify(json).length > 60 ? '…' : ''}} (tensor map) or ` +
      '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [...]}]} (Open Inference Protocol)',
  );
}

/** The request to the controller's infer route for an --input file, with the model reference and timeout joined to its JSON. */
export async function inferBodyFromFile(file: string, headerLength: number | undefined, extra: Record<string, unknown>): Promise<InferBody> {
  let bytes: Buffer;
  try {
    bytes = await readFile(resolve(file));
  } catch (error) {
    throw new UsageError(`cannot read --input ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  let split: ReturnType<typeof splitStoredInferBody>;
  try {
    split = splitStoredInferBody(bytes, headerLength);
  } catch (error) {
    throw new UsageError(`--input ${file}: ${(error as Error).message}`);
  }
  const json = split.json;
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new UsageError(`--input ${file} must hold a JSON object (a request body)`);
  if (!('inputs' in json) && !('raw' in json)) throw oldShape(json as Record<string, unknown>);
  const header = { ...(json as Record<string, unknown>), ...extra };
  if (split.binary === undefined) return { body: Buffer.from(JSON.stringify(header)), headers: { 'content-type': 'application/json' } };
  const encoded = encodeInferBody(header, [split.binary]);
  return { body: encoded.body, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(encoded.headerLength) } };
}

type OipOutput = { name: string; datatype: string; shape: number[]; parameters?: Record<string, unknown>; data?: unknown[] };

/** An Open Inference Protocol answer with every binary output's data decoded into `data` (for display and --json). */
export async function decodeBinaryOutputs<T extends { outputs: unknown }>(json: T, binary: Uint8Array | undefined): Promise<T> {
  if (!binary || !Array.isArray(json.outputs)) return json;
  const { encodeTensor, tensorFromBytes } = await import('@edgefleet/device-agent'); // the devices' own codec, loaded only for a binary answer
  let offset = 0;
  const outputs = (json.outputs as OipOutput[]).map((o) => {
    const size = o.parameters?.['binary_data_size'];
    if (typeof size !== 'number') return o;
    const bytes = binary.subarray(offset, offset + size);
    offset += size;
    const dtype = DTYPE_OF[o.datatype as OipDatatype];
    return dtype ? { ...o, data: encodeTensor(tensorFromBytes(o.name, dtype, o.shape, bytes)).data } : o;
  });
  return { ...json, outputs };
}

/** The lines of text an answer prints as: one per output, its first values. */
export function answerLines(r: { outputs: unknown; answer?: unknown }): string[] {
  const preview = (data: readonly unknown[] | undefined): string => (data ? `${JSON.stringify(data.slice(0, 16))}${data.length > 16 ? ' …' : ''}` : '(binary)');
  const outputs = Array.isArray(r.outputs)
    ? (r.outputs as OipOutput[]).map((o) => `  ${o.name} ${o.datatype}[${o.shape.join(',')}]: ${preview(o.data)}`)
    : Object.entries(r.outputs as Record<string, { dtype: string; shape: number[]; data: unknown[] }>).map(([n, t]) => `  ${n} ${t.dtype}[${t.shape.join(',')}]: ${preview(t.data)}`);
  return [...(r.answer !== undefined ? [`  answer: ${JSON.stringify(r.answer)}`] : []), ...outputs];
}
