/**
 * onnxruntime tensors ↔ a runtime container's Open Inference Protocol (KServe V2) bodies, the client side
 * of what the agent's own OIP API serves. Built from the one definition of the protocol's datatypes and
 * binary layout (`@edgefleet/protocol`'s inference.ts) and the agent's one tensor codec (models/tensors.ts),
 * so the agent reads and writes the protocol the same way as a server and as a client.
 */
import { DTYPE_OF, FleetError, OIP_DATATYPE, OipDatatypeSchema, encodeInferBody, sliceBinaryTensors, splitInferBody } from '@edgefleet/protocol';
import type { DType } from '@edgefleet/protocol';
import { decodeTensor, encodeTensor, tensorBytes, tensorFromBytes } from '../models/index.js';
import type { OrtTensor } from '../models/index.js';

export interface EncodedRequest {
  body: Buffer;
  headers: Record<string, string>;
}

interface OipTensorHeader {
  name: string;
  datatype: string;
  shape: number[];
  data?: unknown[];
  parameters?: Record<string, unknown>;
}

/** Our dtype for a datatype the runtime names; `internal` for one the protocol does not have. */
export function dtypeOf(datatype: string, where: string): DType {
  const known = OipDatatypeSchema.safeParse(datatype);
  if (!known.success) throw new FleetError('internal', `${where}: the runtime answered datatype ${datatype}, which the agent does not know`);
  return DTYPE_OF[known.data];
}

/** JSON elements of a tensor; an int64 beyond 2^53 cannot be a JSON number, so a runtime without binary tensors cannot take it. */
function jsonData(t: OrtTensor, where: string): unknown[] {
  const data = encodeTensor(t).data;
  if ((t.type === 'int64' || t.type === 'uint64') && data.some((v) => typeof v === 'string')) {
    const big = data.find((v) => typeof v === 'string');
    throw new FleetError('invalid_input', `${where}: ${String(big)} does not fit an OIP JSON number and this runtime does not declare the binary tensor extension`);
  }
  return data;
}

/** An infer request for the given feeds; with `binary`, inputs and requested outputs travel as raw bytes. */
export function encodeInferRequest(feeds: Record<string, OrtTensor>, outputs: readonly string[], binary: boolean, where: string): EncodedRequest {
  const blobs: Uint8Array[] = [];
  const inputs = Object.entries(feeds).map(([name, t]): OipTensorHeader => {
    const header = { name, datatype: OIP_DATATYPE[t.type as DType], shape: Array.from(t.dims) };
    if (!binary) return { ...header, data: jsonData(t, where) };
    const bytes = tensorBytes(t);
    blobs.push(bytes);
    return { ...header, parameters: { binary_data_size: bytes.byteLength } };
  });
  const header = { inputs, outputs: outputs.map((name) => (binary ? { name, parameters: { binary_data: true } } : { name })) };
  if (!binary) return { body: Buffer.from(JSON.stringify(header)), headers: { 'content-type': 'application/json' } };
  const encoded = encodeInferBody(header, blobs);
  return { body: encoded.body, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(encoded.headerLength) } };
}

/** The outputs of an infer response (JSON, or JSON header + binary tensors); what the runtime got wrong is `internal`. */
export function decodeInferResponse(body: Buffer, headerLength: number | undefined, where: string): Record<string, OrtTensor> {
  try {
    const { json, binary } = splitInferBody(body, headerLength);
    const outputs = (json as { outputs?: unknown }).outputs;
    if (!Array.isArray(outputs)) throw new FleetError('internal', 'the answer has no outputs');
    const list = outputs as OipTensorHeader[];
    const slices = sliceBinaryTensors(list, binary, 'output');
    const out: Record<string, OrtTensor> = {};
    list.forEach((o, i) => {
      const dtype = dtypeOf(o.datatype, where);
      const shape = o.shape.map(Number);
      const bytes = slices[i];
      out[o.name] = bytes !== undefined ? tensorFromBytes(o.name, dtype, shape, bytes) : decodeTensor(o.name, { dtype, shape, data: Array.isArray(o.data) ? o.data : [] });
    });
    return out;
  } catch (error) {
    // the runtime's answer, not the caller's request, was wrong: the agent cannot pass it on
    const reason = error instanceof FleetError ? error.message : String(error);
    throw new FleetError('internal', `${where}: the runtime's answer is not a valid Open Inference Protocol response: ${reason}`);
  }
}
