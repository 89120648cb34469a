/**
 * What the registry and the agent read from an ONNX file: inputs, outputs (names, dtypes,
 * shapes with symbolic dimensions) and the opset. Anything that does not parse
 * as a ModelProto with a graph is refused as 'not_onnx'.
 */
import onnxProto from 'onnx-proto';
import { FleetError } from '@edgefleet/protocol';
import type { TensorInfo } from '@edgefleet/protocol';

const { onnx } = onnxProto;

export interface OnnxMetadata {
  irVersion: number;
  /** The default-domain ('' or 'ai.onnx') opset version. */
  opset: number | null;
  opsets: { domain: string; version: number }[];
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  producer: string | null;
}

const DTYPE_NAMES: Record<number, string> = {
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  4: 'uint16',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  8: 'string',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  12: 'uint32',
  13: 'uint64',
  14: 'complex64',
  15: 'complex128',
  16: 'bfloat16',
};

export function toNumber(value: number | { toNumber(): number } | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}

function tensorInfo(v: onnxProto.onnx.IValueInfoProto): TensorInfo {
  const tensor = v.type?.tensorType;
  const dtype = tensor ? (DTYPE_NAMES[tensor.elemType ?? 0] ?? `type${tensor.elemType}`) : 'non-tensor';
  const shape = (tensor?.shape?.dim ?? []).map((d) => {
    if (d.dimParam) return d.dimParam;
    if (d.dimValue !== null && d.dimValue !== undefined) return toNumber(d.dimValue);
    return null;
  });
  return { name: v.name ?? '', dtype, shape };
}

export function notOnnx(label: string, why: string): FleetError {
  return new FleetError('not_onnx', `${label} is not an ONNX model (${why}); export the model to .onnx and send that file`);
}

/** The parts of a ModelProto the metadata is made of, however they were read (all of it, or walked from a file). */
export interface ModelParts {
  irVersion: number;
  producerName: string;
  producerVersion: string;
  opsetImport: onnxProto.onnx.IOperatorSetIdProto[];
  /** Undefined when the model has no graph. */
  graph: { input: onnxProto.onnx.IValueInfoProto[]; output: onnxProto.onnx.IValueInfoProto[]; initializerNames: string[] } | undefined;
}

/** The checks and the metadata, from the parts (one definition for both ways of reading). */
export function metadataOf(parts: ModelParts, label: string): OnnxMetadata {
  if (parts.irVersion <= 0) throw notOnnx(label, 'it has no IR version');
  const graph = parts.graph;
  if (!graph) throw notOnnx(label, 'it has no graph');
  if (graph.output.length === 0) throw notOnnx(label, 'its graph declares no outputs');
  if (parts.opsetImport.length === 0) throw notOnnx(label, 'it imports no operator set');
  const opsets = parts.opsetImport.map((o) => ({ domain: o.domain ?? '', version: toNumber(o.version) }));
  const main = opsets.find((o) => o.domain === '' || o.domain === 'ai.onnx');
  const initializers = new Set(graph.initializerNames);
  return {
    irVersion: parts.irVersion,
    opset: main ? main.version : null,
    opsets,
    // Older exporters list initializers among the inputs; they are not inputs a caller feeds.
    inputs: graph.input.filter((i) => !initializers.has(i.name ?? '')).map(tensorInfo),
    outputs: graph.output.map(tensorInfo),
    producer: parts.producerName ? `${parts.producerName}${parts.producerVersion ? ` ${parts.producerVersion}` : ''}` : null,
  };
}

export function readOnnxMetadata(bytes: Uint8Array, label = 'the file'): OnnxMetadata {
  if (bytes.length === 0) throw notOnnx(label, 'it is empty');
  let model: onnxProto.onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (error) {
    throw notOnnx(label, `it does not parse as a ModelProto: ${(error as Error).message}`);
  }
  const graph = model.graph;
  return metadataOf(
    {
      irVersion: toNumber(model.irVersion),
      producerName: model.producerName ?? '',
      producerVersion: model.producerVersion ?? '',
      opsetImport: model.opsetImport ?? [],
      graph: graph ? { input: graph.input ?? [], output: graph.output ?? [], initializerNames: (graph.initializer ?? []).map((t) => t.name ?? '') } : undefined,
    },
    label,
  );
}
