/**
 * onnxruntime tensors ↔ the Open Inference Protocol's (KServe V2) REST bodies, for talking to a runtime
 * container: the JSON tensor form and the binary tensor data extension (a JSON header whose length is in
 * `Inference-Header-Content-Length`, then each tensor's raw bytes, little-endian, row-major; BYTES elements
 * as a 4-byte little-endian length and the bytes; BOOL as one byte).
 */
import ort from 'onnxruntime-node';
import { FleetError } from '@edgefleet/protocol';
import type { DType } from '@edgefleet/protocol';
import { fromHalfBits, toHalfBits } from '../models/index.js';
import type { OrtTensor } from '../models/index.js';

export const OIP_DATATYPE: Record<DType, string> = {
  float32: 'FP32',
  float64: 'FP64',
  float16: 'FP16',
  int8: 'INT8',
  int16: 'INT16',
  int32: 'INT32',
  int64: 'INT64',
  uint8: 'UINT8',
  uint16: 'UINT16',
  uint32: 'UINT32',
  uint64: 'UINT64',
  bool: 'BOOL',
  string: 'BYTES',
};
const FROM_OIP = new Map(Object.entries(OIP_DATATYPE).map(([dtype, oip]) => [oip, dtype as DType]));

export function dtypeOf(datatype: string, where: string): DType {
  const dtype = FROM_OIP.get(datatype);
  if (!dtype) throw new FleetError('internal', `${where}: the runtime answered datatype ${datatype}, which the agent does not know`);
  return dtype;
}

type NumericArray = Exclude<OrtTensor['data'], string[]>;
const ARRAYS: Record<Exclude<DType, 'string'>, { new (buffer: ArrayBuffer, offset: number, length: number): NumericArray; BYTES_PER_ELEMENT: number }> = {
  float32: Float32Array,
  float64: Float64Array,
  float16: Uint16Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  uint64: BigUint64Array,
  bool: Uint8Array,
};

export interface OipTensorHeader {
  name: string;
  datatype: string;
  shape: number[];
  data?: unknown[];
  parameters?: { binary_data_size?: number; [key: string]: unknown };
}

export interface EncodedRequest {
  body: Buffer;
  headers: Record<string, string>;
}

function rawBytes(t: OrtTensor): Buffer {
  if (t.type === 'string') {
    const parts: Buffer[] = [];
    for (const s of t.data as string[]) {
      const bytes = Buffer.from(s, 'utf8');
      const len = Buffer.alloc(4);
      len.writeUInt32LE(bytes.length);
      parts.push(len, bytes);
    }
    return Buffer.concat(parts);
  }
  const view = t.data as NumericArray;
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

function jsonData(t: OrtTensor, where: string): unknown[] {
  switch (t.type) {
    case 'float16':
      return Array.from(t.data as Uint16Array, fromHalfBits);
    case 'bool':
      return Array.from(t.data as Uint8Array, (v) => v !== 0);
    case 'int64':
    case 'uint64':
      return Array.from(t.data as BigInt64Array, (v) => {
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) {
          throw new FleetError('invalid_input', `${where}: ${v} does not fit an OIP JSON number and this runtime does not declare the binary tensor extension`);
        }
        return Number(v);
      });
    default:
      return Array.from(t.data as ArrayLike<unknown>);
  }
}

/** An infer request for the given feeds; with `binary`, inputs and requested outputs travel as raw bytes. */
export function encodeInferRequest(feeds: Record<string, OrtTensor>, outputs: readonly string[], binary: boolean, where: string): EncodedRequest {
  const inputs: OipTensorHeader[] = [];
  const blobs: Buffer[] = [];
  for (const [name, t] of Object.entries(feeds)) {
    const header: OipTensorHeader = { name, datatype: OIP_DATATYPE[t.type as DType], shape: Array.from(t.dims) };
    if (binary) {
      const bytes = rawBytes(t);
      header.parameters = { binary_data_size: bytes.length };
      blobs.push(bytes);
    } else header.data = jsonData(t, where);
    inputs.push(header);
  }
  const json = Buffer.from(
    JSON.stringify({ inputs, outputs: outputs.map((name) => (binary ? { name, parameters: { binary_data: true } } : { name })) }),
  );
  if (!binary) return { body: json, headers: { 'content-type': 'application/json' } };
  return {
    body: Buffer.concat([json, ...blobs]),
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(json.length) },
  };
}

function fromBytes(dtype: DType, bytes: Buffer, size: number, where: string): OrtTensor['data'] {
  if (dtype === 'string') {
    const out: string[] = [];
    let offset = 0;
    while (offset + 4 <= bytes.length) {
      const len = bytes.readUInt32LE(offset);
      out.push(bytes.toString('utf8', offset + 4, offset + 4 + len));
      offset += 4 + len;
    }
    if (out.length !== size) throw new FleetError('internal', `${where}: ${out.length} BYTES elements for a shape of ${size}`);
    return out;
  }
  const Array_ = ARRAYS[dtype];
  if (bytes.length !== size * Array_.BYTES_PER_ELEMENT) {
    throw new FleetError('internal', `${where}: ${bytes.length} bytes of ${dtype} for a shape of ${size} elements`);
  }
  const copy = new ArrayBuffer(bytes.length); // aligned and owned by the tensor
  new Uint8Array(copy).set(bytes);
  return new Array_(copy, 0, size);
}

function fromJson(dtype: DType, data: unknown[], size: number, where: string): OrtTensor['data'] {
  if (data.length !== size) throw new FleetError('internal', `${where}: ${data.length} values for a shape of ${size}`);
  switch (dtype) {
    case 'string':
      return data.map(String);
    case 'bool':
      return Uint8Array.from(data, (v) => (v ? 1 : 0));
    case 'float16':
      return Uint16Array.from(data as number[], (v) => toHalfBits(Number(v)));
    case 'int64':
      return BigInt64Array.from(data, (v) => BigInt(v as number | string));
    case 'uint64':
      return BigUint64Array.from(data, (v) => BigInt(v as number | string));
    default: {
      const out = new ARRAYS[dtype](new ArrayBuffer(size * ARRAYS[dtype].BYTES_PER_ELEMENT), 0, size) as Float32Array;
      for (let i = 0; i < size; i++) out[i] = Number(data[i]);
      return out;
    }
  }
}

/** The outputs of an infer response (JSON, or JSON header + binary tensors). */
export function decodeInferResponse(body: Buffer, headerLength: number | undefined, where: string): Record<string, OrtTensor> {
  const jsonEnd = headerLength ?? body.length;
  let parsed: { outputs?: OipTensorHeader[] };
  try {
    parsed = JSON.parse(body.toString('utf8', 0, jsonEnd)) as typeof parsed;
  } catch {
    throw new FleetError('internal', `${where}: the runtime's answer is not OIP JSON`);
  }
  if (!Array.isArray(parsed.outputs)) throw new FleetError('internal', `${where}: the runtime's answer has no outputs`);
  const out: Record<string, OrtTensor> = {};
  let offset = jsonEnd;
  for (const o of parsed.outputs) {
    const dtype = dtypeOf(o.datatype, where);
    const dims = o.shape.map(Number);
    const size = dims.reduce((a, b) => a * b, 1);
    const binarySize = o.parameters?.binary_data_size;
    let data: OrtTensor['data'];
    if (typeof binarySize === 'number') {
      if (offset + binarySize > body.length) throw new FleetError('internal', `${where}: output ${o.name} runs past the end of the answer`);
      data = fromBytes(dtype, body.subarray(offset, offset + binarySize), size, `${where} output ${o.name}`);
      offset += binarySize;
    } else {
      data = fromJson(dtype, Array.isArray(o.data) ? o.data : [], size, `${where} output ${o.name}`);
    }
    out[o.name] = new ort.Tensor(dtype, data as Float32Array, dims);
  }
  return out;
}
