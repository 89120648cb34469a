/**
 * Inference requests and answers, defined once for every path that carries them (the agent's HTTP API,
 * the MQTT `infer` command, the controller): the tensor-map form (`{inputs: {x: {dtype, shape, data}}}`)
 * and the Open Inference Protocol form (KServe V2: `{inputs: [{name, datatype, shape, data}]}`), in JSON
 * or with the binary tensor data extension (a JSON header, then each tensor's bytes, little-endian,
 * row-major; BYTES as a 4-byte little-endian length + the bytes; BOOL one byte).
 *
 * Tensor data in requests is only checked to be an array here: the device's codec checks every element
 * (with a sentence naming the element), and a request may hold millions of them.
 */
import { z } from 'zod';
import { FleetError } from './errors.js';
import { MAX_JSON_DEPTH, checkJsonLimits } from './limits.js';

// ---------------------------------------------------------------- tensors (tensor-map form)

export const DTYPES = [
  'float32',
  'float64',
  'float16',
  'int8',
  'int16',
  'int32',
  'int64',
  'uint8',
  'uint16',
  'uint32',
  'uint64',
  'bool',
  'string',
] as const;
export const DTypeSchema = z.enum(DTYPES);
export type DType = z.infer<typeof DTypeSchema>;

const ShapeSchema = z.array(z.number().int().nonnegative()).max(16);
/** An array, its elements left to the device's codec (no per-element work, no copy). */
const DataSchema = z.custom<unknown[]>((v) => Array.isArray(v), 'expected an array (flattened row-major, or nested as the shape)');

/** A tensor in JSON. int64/uint64 values may be given as numbers or decimal strings. */
export const TensorSchema = z.object({
  dtype: DTypeSchema,
  shape: ShapeSchema,
  data: z.array(z.union([z.number(), z.string(), z.boolean()])),
});
export type Tensor = z.infer<typeof TensorSchema>;

/** A tensor in a request: like Tensor, its elements checked by the device's codec. */
export const TensorInputSchema = z.object({ dtype: DTypeSchema, shape: ShapeSchema, data: DataSchema });
export type TensorInput = z.infer<typeof TensorInputSchema>;

/** A model input or output as the model declares it; symbolic dimensions are strings (or null if unnamed). */
export const TensorInfoSchema = z.object({
  name: z.string(),
  dtype: z.string(),
  shape: z.array(z.union([z.number().int(), z.string(), z.null()])),
});
export type TensorInfo = z.infer<typeof TensorInfoSchema>;

// ---------------------------------------------------------------- Open Inference Protocol datatypes

export const OIP_DATATYPES = ['BOOL', 'UINT8', 'UINT16', 'UINT32', 'UINT64', 'INT8', 'INT16', 'INT32', 'INT64', 'FP16', 'FP32', 'FP64', 'BYTES'] as const;
export const OipDatatypeSchema = z.enum(OIP_DATATYPES);
export type OipDatatype = z.infer<typeof OipDatatypeSchema>;

/** Our dtype → the protocol's datatype. */
export const OIP_DATATYPE: Readonly<Record<DType, OipDatatype>> = {
  bool: 'BOOL',
  uint8: 'UINT8',
  uint16: 'UINT16',
  uint32: 'UINT32',
  uint64: 'UINT64',
  int8: 'INT8',
  int16: 'INT16',
  int32: 'INT32',
  int64: 'INT64',
  float16: 'FP16',
  float32: 'FP32',
  float64: 'FP64',
  string: 'BYTES',
};
/** The protocol's datatype → our dtype. */
export const DTYPE_OF: Readonly<Record<OipDatatype, DType>> = Object.fromEntries(
  Object.entries(OIP_DATATYPE).map(([dtype, datatype]) => [datatype, dtype]),
) as Record<OipDatatype, DType>;

/** Bytes per element in binary tensor data; BYTES has none (each element is a 4-byte length + its bytes). */
export const ELEMENT_BYTES: Readonly<Record<DType, number | null>> = {
  bool: 1,
  uint8: 1,
  int8: 1,
  uint16: 2,
  int16: 2,
  float16: 2,
  uint32: 4,
  int32: 4,
  float32: 4,
  uint64: 8,
  int64: 8,
  float64: 8,
  string: null,
};

export const OIP_PLATFORM = 'onnxruntime_onnx';
export const OIP_EXTENSIONS = ['binary_tensor_data'] as const;

// ---------------------------------------------------------------- request bodies

/** Parameters: key/value pairs; the known ones are read by name, the others are left alone. */
const ParametersSchema = z.record(z.string(), z.unknown());

export const OipRequestInputSchema = z.object({
  name: z.string().min(1),
  shape: ShapeSchema,
  datatype: OipDatatypeSchema,
  parameters: ParametersSchema.optional(),
  /** Absent when the tensor travels as binary data (`parameters.binary_data_size`). */
  data: DataSchema.optional(),
});
export type OipRequestInput = z.infer<typeof OipRequestInputSchema>;

export const OipRequestOutputSchema = z.object({ name: z.string().min(1), parameters: ParametersSchema.optional() });
export type OipRequestOutput = z.infer<typeof OipRequestOutputSchema>;

/** `$inference_request`; `model_name`/`model_version` in the body (some clients send them) must match the route. */
export const OipInferRequestSchema = z.object({
  id: z.string().max(256).optional(),
  model_name: z.string().optional(),
  model_version: z.string().optional(),
  parameters: ParametersSchema.optional(),
  inputs: z.array(OipRequestInputSchema).min(1).max(256),
  outputs: z.array(OipRequestOutputSchema).max(256).optional(),
});
export type OipInferRequest = z.infer<typeof OipInferRequestSchema>;

/** Raw input for a model with declared pre-processing: text, or an image as base64. */
export const RawInputSchema = z.union([z.object({ text: z.string() }), z.object({ imageBase64: z.string() })], {
  error: '"raw" must be {"text": "..."} or {"imageBase64": "..."}',
});

/** The original form: `{inputs: {name: tensor}}` or `{raw: {...}}`. */
export const TensorMapRequestSchema = z
  .object({ inputs: z.record(z.string(), TensorInputSchema).optional(), raw: RawInputSchema.optional() })
  .strict();
export type TensorMapRequest = z.infer<typeof TensorMapRequestSchema>;

/** Every request body an inference path accepts. */
export const InferBodySchema = z.union([TensorMapRequestSchema, OipInferRequestSchema]);
export type InferBody = z.infer<typeof InferBodySchema>;

/** True for the Open Inference Protocol form (its inputs are a list). */
export function isOipRequest<T extends { inputs?: unknown }>(body: T): body is Extract<T, { inputs: unknown[] }> {
  return Array.isArray(body.inputs);
}

// ---------------------------------------------------------------- answers and metadata

export const OipResponseOutputSchema = z.object({
  name: z.string(),
  shape: z.array(z.number().int().nonnegative()),
  datatype: OipDatatypeSchema,
  parameters: ParametersSchema.optional(),
  data: z.array(z.unknown()).optional(),
});
export type OipResponseOutput = z.infer<typeof OipResponseOutputSchema>;

/** `$inference_response`. */
export const OipInferResponseSchema = z.object({
  model_name: z.string(),
  model_version: z.string().optional(),
  id: z.string().optional(),
  parameters: ParametersSchema.optional(),
  outputs: z.array(OipResponseOutputSchema),
});
export type OipInferResponse = z.infer<typeof OipInferResponseSchema>;

export const OipServerMetadataSchema = z.object({ name: z.string(), version: z.string(), extensions: z.array(z.string()) });
export type OipServerMetadata = z.infer<typeof OipServerMetadataSchema>;

export const OipTensorMetadataSchema = z.object({ name: z.string(), datatype: z.string(), shape: z.array(z.number().int()) });
export type OipTensorMetadata = z.infer<typeof OipTensorMetadataSchema>;

export const OipModelMetadataSchema = z.object({
  name: z.string(),
  versions: z.array(z.string()).optional(),
  platform: z.string(),
  inputs: z.array(OipTensorMetadataSchema),
  outputs: z.array(OipTensorMetadataSchema),
});
export type OipModelMetadata = z.infer<typeof OipModelMetadataSchema>;

/** Every error answer of the protocol. */
export const OipErrorSchema = z.object({ error: z.string() });

/** A declared input or output as the protocol describes it: its datatype, and -1 for every dynamic dimension. */
export function oipTensorMetadata(info: TensorInfo): OipTensorMetadata {
  const datatype = (OIP_DATATYPE as Record<string, string | undefined>)[info.dtype] ?? info.dtype.toUpperCase();
  return { name: info.name, datatype, shape: info.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1)) };
}

// ---------------------------------------------------------------- the binary tensor data extension

const bad = (message: string) => new FleetError('invalid_input', message);

/** The `binary_data_size` a tensor declares, or undefined when it travels as JSON. */
export function binaryDataSize(tensor: { name: string; parameters?: Record<string, unknown> | undefined }, what: string): number | undefined {
  const size = tensor.parameters?.['binary_data_size'];
  if (size === undefined) return undefined;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw bad(`${what} "${tensor.name}": parameters.binary_data_size must be a byte count (a non-negative integer), got ${JSON.stringify(size)}`);
  }
  return size;
}

/**
 * Cuts the binary part of a body into each tensor's bytes, in the order the tensors are listed (views, no
 * copies); undefined for a tensor given as JSON. The sizes must add up to the binary part exactly.
 */
export function sliceBinaryTensors(
  tensors: readonly { name: string; parameters?: Record<string, unknown> | undefined }[],
  binary: Uint8Array | undefined,
  what: 'input' | 'output',
): (Uint8Array | undefined)[] {
  const available = binary?.byteLength ?? 0;
  let offset = 0;
  const slices = tensors.map((t) => {
    const size = binaryDataSize(t, what);
    if (size === undefined) return undefined;
    if (offset + size > available) {
      throw bad(
        `${what} "${t.name}" declares ${size} bytes of binary data (binary_data_size), but only ${available - offset} of the body's ${available} binary bytes are left for it; ` +
          'put the JSON header length in Inference-Header-Content-Length and the tensors after it, in the order they are listed',
      );
    }
    const view = binary!.subarray(offset, offset + size);
    offset += size;
    return view;
  });
  if (offset !== available) {
    throw bad(`the body has ${available} bytes of binary data after its JSON header, but the ${what}s declare ${offset} (binary_data_size); they must match`);
  }
  return slices;
}

/** BYTES elements in binary form: each a 4-byte little-endian length, then its bytes. */
export function encodeBytesElements(elements: readonly Uint8Array[]): Uint8Array {
  const total = elements.reduce((sum, e) => sum + 4 + e.byteLength, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let offset = 0;
  for (const e of elements) {
    view.setUint32(offset, e.byteLength, true);
    out.set(e, offset + 4);
    offset += 4 + e.byteLength;
  }
  return out;
}

/** The elements of a binary BYTES tensor (views into `bytes`); exactly `count` of them must fill it. */
export function decodeBytesElements(bytes: Uint8Array, count: number, name: string): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Uint8Array[] = [];
  let offset = 0;
  while (offset < bytes.byteLength) {
    if (offset + 4 > bytes.byteLength) throw bad(`input "${name}": BYTES element ${out.length} is cut off inside its 4-byte length`);
    const length = view.getUint32(offset, true);
    if (offset + 4 + length > bytes.byteLength) {
      throw bad(`input "${name}": BYTES element ${out.length} says ${length} bytes, but only ${bytes.byteLength - offset - 4} are left`);
    }
    out.push(bytes.subarray(offset + 4, offset + 4 + length));
    offset += 4 + length;
  }
  if (out.length !== count) throw bad(`input "${name}": its shape holds ${count} BYTES elements, but the binary data has ${out.length}`);
  return out;
}

/**
 * Splits a request body into its JSON header and binary part: `headerLength` is the
 * Inference-Header-Content-Length (absent: the whole body is JSON). Throws bad_request when the header
 * is not JSON or is longer than the body, too_deep when it nests past MAX_JSON_DEPTH.
 */
export function splitInferBody(body: Uint8Array, headerLength: number | undefined): { json: unknown; binary: Uint8Array | undefined } {
  const length = headerLength ?? body.byteLength;
  if (length > body.byteLength) {
    throw new FleetError('bad_request', `Inference-Header-Content-Length is ${length}, but the body has only ${body.byteLength} bytes`);
  }
  const header = body.subarray(0, length);
  // nesting is checked before parsing, as for every JSON the protocol takes (limits.ts)
  const tooDeep = checkJsonLimits(header, { maxBytes: length, maxDepth: MAX_JSON_DEPTH }, headerLength === undefined ? 'the request body' : 'the JSON header');
  if (tooDeep) throw tooDeep;
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(header));
  } catch {
    throw new FleetError(
      'bad_request',
      headerLength === undefined
        ? 'the request body is not JSON; send {"inputs": [...]} (Open Inference Protocol) or {"inputs": {...}}'
        : `the first ${length} bytes of the body (Inference-Header-Content-Length) are not a JSON header`,
    );
  }
  return { json, binary: headerLength === undefined ? undefined : body.subarray(length) };
}

/**
 * A body in the binary tensor data extension's layout: the JSON header, then the binary parts back to back;
 * `headerLength` goes in Inference-Header-Content-Length.
 */
export function encodeInferBody(header: unknown, binary: readonly Uint8Array[]): { body: Buffer; headerLength: number } {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  return { body: Buffer.concat([json, ...binary]), headerLength: json.byteLength };
}

/** The end (exclusive) of the JSON value `body` starts with (after leading white space), or -1 when it never closes. */
function leadingJsonEnd(body: Uint8Array): number {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < body.byteLength; i++) {
    const b = body[i]!;
    if (inString) {
      if (b === 0x5c) i++; // the escaped byte cannot end the string
      else if (b === 0x22) inString = false;
      continue;
    }
    if (b === 0x22) inString = true;
    else if (b === 0x7b || b === 0x5b) depth++;
    else if (b === 0x7d || b === 0x5d) {
      if (--depth === 0) return i + 1;
    } else if (depth === 0 && b !== 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) return -1; // not an object or array
  }
  return -1;
}

/**
 * Splits a request body kept in a file (no HTTP headers beside it): with `headerLength` given, at it (as
 * splitInferBody); otherwise the body is JSON, or a JSON header followed by binary tensors when its inputs
 * declare `parameters.binary_data_size`, and the header's length is found from where its JSON ends.
 * Answers the header length it used (undefined for a JSON body), so the body can be sent on as it is.
 */
export function splitStoredInferBody(body: Uint8Array, headerLength?: number): { json: unknown; binary: Uint8Array | undefined; headerLength: number | undefined } {
  if (headerLength !== undefined) return { ...splitInferBody(body, headerLength), headerLength };
  const end = leadingJsonEnd(body);
  if (end < 0) {
    throw new FleetError('bad_request', 'the file is not a request body: it is neither JSON nor a JSON header followed by binary tensors; give the header length if the header is not JSON');
  }
  const rest = body.subarray(end);
  const { json } = splitInferBody(body, end);
  const declared = (json as { inputs?: unknown }).inputs;
  const binaryInputs = Array.isArray(declared) && declared.some((i) => (i as { parameters?: Record<string, unknown> } | null)?.parameters?.['binary_data_size'] !== undefined);
  if (binaryInputs) return { json, binary: rest, headerLength: end };
  if (rest.some((b) => b !== 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d)) {
    throw new FleetError(
      'bad_request',
      `the file has ${rest.byteLength} bytes after its JSON, but no input declares parameters.binary_data_size; a binary body lists each tensor's size there`,
    );
  }
  return { json, binary: undefined, headerLength: undefined };
}

/** Headers as node:http gives them. */
type Headers = Readonly<Record<string, string | string[] | undefined>>;

const ACCEPTED = 'send application/json (tensors in JSON) or application/octet-stream (a JSON header, then the binary tensors; its length in Inference-Header-Content-Length)';

/**
 * Checks an inference request's declared form before its body is read (every HTTP surface that takes one):
 * the content type (JSON, or octet-stream for the binary extension), no content encoding, and the
 * Inference-Header-Content-Length, which an octet-stream body must have. Answers that length (undefined: all JSON).
 */
export function inferBodyFormat(headers: Headers): { headerLength: number | undefined } {
  const one = (name: string): string | undefined => {
    const v = headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const type = one('content-type')?.split(';')[0]?.trim().toLowerCase();
  if (type !== undefined && type !== '' && type !== 'application/json' && type !== 'application/octet-stream' && !/^application\/[\w.+-]+\+json$/.test(type)) {
    throw new FleetError('unsupported_media_type', `content-type ${type} is not accepted; ${ACCEPTED}`);
  }
  const encoding = one('content-encoding')?.trim().toLowerCase();
  if (encoding && encoding !== 'identity') throw new FleetError('unsupported_media_type', `content-encoding ${encoding} is not accepted; send the body uncompressed`);
  const header = one('inference-header-content-length');
  if (header === undefined) {
    if (type === 'application/octet-stream') {
      throw new FleetError('bad_request', 'an application/octet-stream body needs Inference-Header-Content-Length: the length of the JSON header before the binary tensors');
    }
    return { headerLength: undefined };
  }
  if (!/^\d{1,10}$/.test(header.trim())) {
    throw new FleetError('bad_request', `Inference-Header-Content-Length must be the byte length of the JSON header, got ${JSON.stringify(header)}`);
  }
  const headerLength = Number(header);
  if (headerLength === 0) {
    throw new FleetError('bad_request', 'a body that is only binary data (Inference-Header-Content-Length: 0) is not supported; send a JSON header that describes the inputs');
  }
  return { headerLength };
}
