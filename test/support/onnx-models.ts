/**
 * Real ONNX models built in code, each with an output a test can compute in plain JS.
 * Every builder returns the model's bytes (`bytes`, a Buffer: write it to disk yourself) plus
 * what is needed to predict its answers.
 *
 *   linearModel          y = x·W + b, x ['batch', 4] → y ['batch', 3] (symbolic batch dim)
 *   multiInputModel      int64 `ids` + float32 `scale` → float32 `out`, int64 `next_ids`
 *   recurrentModel       state_out = y = tanh(x + state_in)
 *   largeModel           > 5 MB (one big initializer), y = x·W
 *   slowModel            a chain of MatMuls (configurable count and size), y = x
 *   alwaysFailingModel   loads, but every run fails (Gather index out of range): smoke tests fail
 *   nanModel             loads and runs, every output is NaN
 *   dataDependentFailingModel  runs on zeros (smoke test passes), fails for inputs outside [-4, 4)
 *   imageClassifierModel [1,3,H,W] (or NHWC) → logits [1,K]: channel means · W + b
 *   textBowModel         multi-hot [1,V] → sigmoid(x·w + b) [1,1]
 *   identityModel        any dtype, for codec round trips through onnxruntime
 *   opsetModel           Relu with a chosen opset
 *   tritonExampleModel   the Open Inference Protocol's documented example: UINT32 [2,2] + BOOL [3] → FP32 [3,2]
 *   reshapeInputModel    Reshape whose target shape is an input (zeros are no valid shape)
 *   resizeInputModel     Resize whose scales are an input (zero scales are invalid)
 *   streamingModel       recurrent state + an int64 scalar sample rate (a zero rate is invalid)
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { ManifestSchema, chunkHashes, sha256Hex } from '@edgefleet/protocol';
import type { Manifest, ManifestInput } from '@edgefleet/protocol';

const { onnx } = onnxProto;
const T = onnx.TensorProto.DataType;

export type Dim = number | string | null;
export type ElemType =
  | 'float32'
  | 'float64'
  | 'float16'
  | 'int8'
  | 'int16'
  | 'int32'
  | 'int64'
  | 'uint8'
  | 'uint16'
  | 'uint32'
  | 'uint64'
  | 'bool'
  | 'string';

export const ELEM_TYPES: Record<ElemType, number> = {
  float32: T.FLOAT,
  float64: T.DOUBLE,
  float16: T.FLOAT16,
  int8: T.INT8,
  int16: T.INT16,
  int32: T.INT32,
  int64: T.INT64,
  uint8: T.UINT8,
  uint16: T.UINT16,
  uint32: T.UINT32,
  uint64: T.UINT64,
  bool: T.BOOL,
  string: T.STRING,
};

// ------------------------------------------------------------------ low-level helpers

export function valueInfo(name: string, type: ElemType, shape: Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEM_TYPES[type],
        shape: {
          dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : typeof d === 'string' ? { dimParam: d } : {})),
        },
      },
    },
  };
}

export function floatTensor(name: string, dims: number[], values: ArrayLike<number>): onnxProto.onnx.ITensorProto {
  const data = Float32Array.from(values as ArrayLike<number>);
  if (data.length !== dims.reduce((a, b) => a * b, 1)) throw new Error(`initializer ${name}: ${data.length} values for shape [${dims}]`);
  return { name, dims, dataType: T.FLOAT, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

export function int64Tensor(name: string, dims: number[], values: ArrayLike<number | bigint>): onnxProto.onnx.ITensorProto {
  const data = BigInt64Array.from(Array.from(values as ArrayLike<number | bigint>, (v) => BigInt(v)));
  return { name, dims, dataType: T.INT64, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

type AttrValue = number | number[] | string | { int: number };

export function node(
  opType: string,
  inputs: string[],
  outputs: string[],
  attrs: Record<string, AttrValue> = {},
): onnxProto.onnx.INodeProto {
  const AT = onnx.AttributeProto.AttributeType;
  const attribute = Object.entries(attrs).map(([name, v]): onnxProto.onnx.IAttributeProto => {
    if (typeof v === 'object' && !Array.isArray(v)) return { name, type: AT.INT, i: v.int };
    if (Array.isArray(v)) return { name, type: AT.INTS, ints: v };
    if (typeof v === 'string') return { name, type: AT.STRING, s: Buffer.from(v) };
    return { name, type: AT.FLOAT, f: v };
  });
  return { opType, input: inputs, output: outputs, attribute, name: `${opType}_${outputs.join('_')}` };
}

export interface GraphSpec {
  name: string;
  inputs: onnxProto.onnx.IValueInfoProto[];
  outputs: onnxProto.onnx.IValueInfoProto[];
  nodes: onnxProto.onnx.INodeProto[];
  initializers?: onnxProto.onnx.ITensorProto[];
  opset?: number;
  irVersion?: number;
}

/** Encodes a graph as an ONNX model file. */
export function encodeModel(spec: GraphSpec): Buffer {
  const model = onnx.ModelProto.create({
    irVersion: spec.irVersion ?? 8,
    producerName: 'edgefleet-tests',
    producerVersion: '1',
    opsetImport: [{ domain: '', version: spec.opset ?? 13 }],
    graph: {
      name: spec.name,
      node: spec.nodes,
      input: spec.inputs,
      output: spec.outputs,
      initializer: spec.initializers ?? [],
    },
  });
  return Buffer.from(onnx.ModelProto.encode(model).finish());
}

/** A small deterministic PRNG (mulberry32), so weights are the same on every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomWeights(n: number, seed: number): Float32Array {
  const rnd = seededRandom(seed);
  return Float32Array.from({ length: n }, () => rnd() * 2 - 1);
}

/** Row-major [rows, inner] · [inner, cols] + bias[cols], in double precision. */
export function matmulAdd(x: ArrayLike<number>, rows: number, w: ArrayLike<number>, inner: number, cols: number, bias?: ArrayLike<number>): number[] {
  const out = new Array<number>(rows * cols).fill(0);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      let sum = bias ? (bias[c] as number) : 0;
      for (let k = 0; k < inner; k++) sum += (x[r * inner + k] as number) * (w[k * cols + c] as number);
      out[r * cols + c] = sum;
    }
  }
  return out;
}

/** True when every value is within `tol` (absolute + relative) of the expected one. */
export function allClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-4): boolean {
  if (actual.length !== expected.length) return false;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i] as number;
    const e = expected[i] as number;
    if (Number.isNaN(a) !== Number.isNaN(e)) return false;
    if (!Number.isNaN(a) && Math.abs(a - e) > tol * (1 + Math.abs(e))) return false;
  }
  return true;
}

export interface BuiltModel {
  bytes: Buffer;
  inputs: { name: string; dtype: ElemType; shape: Dim[] }[];
  outputs: { name: string; dtype: ElemType; shape: Dim[] }[];
}

// ------------------------------------------------------------------ (a) linear, dynamic batch

export interface LinearModel extends BuiltModel {
  weights: Float32Array; // [in, out]
  bias: Float32Array; // [out]
  inFeatures: number;
  outFeatures: number;
  /** y for a row-major x of `batch` rows. */
  expected(x: ArrayLike<number>, batch?: number): number[];
}

/**
 * y = x·W + b with x ['batch', inFeatures] → y ['batch', outFeatures]. `seed` picks the weights,
 * so two versions of "the same" model (v1, v2) give different answers; `offset` is added to b.
 */
export function linearModel(opts: { inFeatures?: number; outFeatures?: number; seed?: number; offset?: number; opset?: number } = {}): LinearModel {
  const inF = opts.inFeatures ?? 4;
  const outF = opts.outFeatures ?? 3;
  const weights = randomWeights(inF * outF, opts.seed ?? 1);
  const bias = randomWeights(outF, (opts.seed ?? 1) + 1000).map((v) => v + (opts.offset ?? 0));
  const inputs = [{ name: 'x', dtype: 'float32' as const, shape: ['batch', inF] as Dim[] }];
  const outputs = [{ name: 'y', dtype: 'float32' as const, shape: ['batch', outF] as Dim[] }];
  const bytes = encodeModel({
    name: 'linear',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [node('MatMul', ['x', 'W'], ['xw']), node('Add', ['xw', 'b'], ['y'])],
    initializers: [floatTensor('W', [inF, outF], weights), floatTensor('b', [outF], bias)],
    ...(opts.opset !== undefined ? { opset: opts.opset } : {}),
  });
  return {
    bytes,
    inputs,
    outputs,
    weights,
    bias,
    inFeatures: inF,
    outFeatures: outF,
    expected: (x, batch = x.length / inF) => matmulAdd(x, batch, weights, inF, outF, bias),
  };
}

/** Plain-JS expected output of a linear model, given its weights. */
export function linearExpected(model: Pick<LinearModel, 'weights' | 'bias' | 'inFeatures' | 'outFeatures'>, x: ArrayLike<number>, batch = x.length / model.inFeatures): number[] {
  return matmulAdd(x, batch, model.weights, model.inFeatures, model.outFeatures, model.bias);
}

// ------------------------------------------------------------------ (b) several inputs incl. int64

export interface MultiInputModel extends BuiltModel {
  /** out = float(ids) * scale + 0.5, next_ids = ids + 1 (elementwise, shape ['batch', 3]). */
  expected(ids: ArrayLike<number | bigint>, scale: ArrayLike<number>): { out: number[]; next_ids: bigint[] };
}

export function multiInputModel(): MultiInputModel {
  const inputs = [
    { name: 'ids', dtype: 'int64' as const, shape: ['batch', 3] as Dim[] },
    { name: 'scale', dtype: 'float32' as const, shape: ['batch', 3] as Dim[] },
  ];
  const outputs = [
    { name: 'out', dtype: 'float32' as const, shape: ['batch', 3] as Dim[] },
    { name: 'next_ids', dtype: 'int64' as const, shape: ['batch', 3] as Dim[] },
  ];
  const bytes = encodeModel({
    name: 'multi_input',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [
      node('Cast', ['ids'], ['ids_f'], { to: { int: T.FLOAT } }),
      node('Mul', ['ids_f', 'scale'], ['scaled']),
      node('Add', ['scaled', 'half'], ['out']),
      node('Add', ['ids', 'one'], ['next_ids']),
    ],
    initializers: [floatTensor('half', [1], [0.5]), int64Tensor('one', [1], [1])],
  });
  return {
    bytes,
    inputs,
    outputs,
    expected: (ids, scale) => ({
      out: Array.from(ids, (v, i) => Number(v) * (scale[i] as number) + 0.5),
      next_ids: Array.from(ids, (v) => BigInt(v) + 1n),
    }),
  };
}

// ------------------------------------------------------------------ (c) recurrent state

export interface RecurrentModel extends BuiltModel {
  hidden: number;
  /** One step: y = state_out = tanh(x + state_in). */
  step(x: ArrayLike<number>, state: ArrayLike<number>): number[];
}

export function recurrentModel(opts: { hidden?: number } = {}): RecurrentModel {
  const h = opts.hidden ?? 8;
  const inputs = [
    { name: 'x', dtype: 'float32' as const, shape: [1, h] as Dim[] },
    { name: 'state_in', dtype: 'float32' as const, shape: [1, h] as Dim[] },
  ];
  const outputs = [
    { name: 'y', dtype: 'float32' as const, shape: [1, h] as Dim[] },
    { name: 'state_out', dtype: 'float32' as const, shape: [1, h] as Dim[] },
  ];
  const bytes = encodeModel({
    name: 'recurrent',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [node('Add', ['x', 'state_in'], ['sum']), node('Tanh', ['sum'], ['y']), node('Identity', ['y'], ['state_out'])],
  });
  return { bytes, inputs, outputs, hidden: h, step: (x, s) => Array.from(x, (v, i) => Math.tanh(v + (s[i] as number))) };
}

// ------------------------------------------------------------------ (d) > 5 MB

export interface LargeModel extends BuiltModel {
  inFeatures: number;
  outFeatures: number;
  expected(x: ArrayLike<number>): number[];
}

/** y = x·W with W [inFeatures, outFeatures] float32; the default is ~6.3 MB. */
export function largeModel(opts: { inFeatures?: number; outFeatures?: number; seed?: number } = {}): LargeModel {
  const inF = opts.inFeatures ?? 1024;
  const outF = opts.outFeatures ?? 1536;
  const weights = randomWeights(inF * outF, opts.seed ?? 7);
  const inputs = [{ name: 'x', dtype: 'float32' as const, shape: ['batch', inF] as Dim[] }];
  const outputs = [{ name: 'y', dtype: 'float32' as const, shape: ['batch', outF] as Dim[] }];
  const bytes = encodeModel({
    name: 'large',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [node('MatMul', ['x', 'W'], ['y'])],
    initializers: [floatTensor('W', [inF, outF], weights)],
  });
  return { bytes, inputs, outputs, inFeatures: inF, outFeatures: outF, expected: (x) => matmulAdd(x, x.length / inF, weights, inF, outF) };
}

// ------------------------------------------------------------------ (e) slow, failing, NaN

/**
 * A chain of `matmuls` MatMuls by the identity matrix of `size` (so y = x exactly), slow on purpose:
 * raise `matmuls` or `size` to make each run take longer.
 */
export function slowModel(opts: { matmuls?: number; size?: number } = {}): BuiltModel & { size: number } {
  const n = opts.matmuls ?? 50;
  const size = opts.size ?? 128;
  const eye = new Float32Array(size * size);
  for (let i = 0; i < size; i++) eye[i * size + i] = 1;
  const nodes: onnxProto.onnx.INodeProto[] = [];
  let prev = 'x';
  for (let i = 0; i < n; i++) {
    const out = i === n - 1 ? 'y' : `h${i}`;
    nodes.push(node('MatMul', [prev, 'I'], [out]));
    prev = out;
  }
  const inputs = [{ name: 'x', dtype: 'float32' as const, shape: ['batch', size] as Dim[] }];
  const outputs = [{ name: 'y', dtype: 'float32' as const, shape: ['batch', size] as Dim[] }];
  const bytes = encodeModel({
    name: 'slow',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes,
    initializers: [floatTensor('I', [size, size], eye)],
  });
  return { bytes, inputs, outputs, size };
}

/** Same interface as linearModel (x ['batch', 4] → y ['batch', 3]); loads, but every run fails. */
export function alwaysFailingModel(): BuiltModel {
  const inputs = [{ name: 'x', dtype: 'float32' as const, shape: ['batch', 4] as Dim[] }];
  const outputs = [{ name: 'y', dtype: 'float32' as const, shape: ['batch', 3] as Dim[] }];
  const bytes = encodeModel({
    name: 'always_failing',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    // Gather along axis 1 with indices 9, 10, 11 of a 4-wide input: out of range at run time.
    nodes: [node('Gather', ['x', 'idx'], ['y'], { axis: { int: 1 } })],
    initializers: [int64Tensor('idx', [3], [9, 10, 11])],
  });
  return { bytes, inputs, outputs };
}

/** x ['batch', 4] → y ['batch', 3], always NaN: y = sqrt(-1 - |x[:, :3]|). */
export function nanModel(): BuiltModel {
  const inputs = [{ name: 'x', dtype: 'float32' as const, shape: ['batch', 4] as Dim[] }];
  const outputs = [{ name: 'y', dtype: 'float32' as const, shape: ['batch', 3] as Dim[] }];
  const bytes = encodeModel({
    name: 'nan',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [
      node('Gather', ['x', 'idx'], ['x3'], { axis: { int: 1 } }),
      node('Abs', ['x3'], ['a']),
      node('Sub', ['minus1', 'a'], ['neg']),
      node('Sqrt', ['neg'], ['y']),
    ],
    initializers: [int64Tensor('idx', [3], [0, 1, 2]), floatTensor('minus1', [1], [-1])],
  });
  return { bytes, inputs, outputs };
}

/**
 * x ['batch', 4] → y ['batch', 4] = table[int(x)], table = [10, 20, 30, 40]: zeros give 10s (a smoke test
 * passes), any value outside [-4, 4) fails at run time (index out of range) — a model that activates
 * fine and then errors under real traffic.
 */
export function dataDependentFailingModel(): BuiltModel & { table: number[] } {
  const table = [10, 20, 30, 40];
  const inputs = [{ name: 'x', dtype: 'float32' as const, shape: ['batch', 4] as Dim[] }];
  const outputs = [{ name: 'y', dtype: 'float32' as const, shape: ['batch', 4] as Dim[] }];
  const bytes = encodeModel({
    name: 'data_dependent_failing',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [node('Cast', ['x'], ['i'], { to: { int: T.INT64 } }), node('Gather', ['table', 'i'], ['y'], { axis: { int: 0 } })],
    initializers: [floatTensor('table', [4], table)],
  });
  return { bytes, inputs, outputs, table };
}

// ------------------------------------------------------------------ (f) image classifier and bag of words

export interface ImageClassifierModel extends BuiltModel {
  classes: number;
  weights: Float32Array; // [3, K]
  bias: Float32Array; // [K]
  /** Logits for an input whose per-channel means (after normalisation) are `means` (R, G, B). */
  logits(means: [number, number, number]): number[];
}

/**
 * [1,3,H,W] (NCHW) or [1,H,W,3] (NHWC) → logits [1,K] = mean over H,W per channel · W[3,K] + b.
 * A solid-colour image therefore has exactly predictable logits.
 */
export function imageClassifierModel(opts: { height?: number; width?: number; classes?: number; layout?: 'NCHW' | 'NHWC'; seed?: number; inputName?: string; outputName?: string } = {}): ImageClassifierModel {
  const h = opts.height ?? 8;
  const w = opts.width ?? 8;
  const k = opts.classes ?? 5;
  const layout = opts.layout ?? 'NCHW';
  const inName = opts.inputName ?? 'image';
  const outName = opts.outputName ?? 'logits';
  const weights = randomWeights(3 * k, opts.seed ?? 11).map((v) => v * 4);
  const bias = randomWeights(k, (opts.seed ?? 11) + 1).map((v) => v * 0.1);
  const inShape: Dim[] = layout === 'NCHW' ? [1, 3, h, w] : [1, h, w, 3];
  const nodes: onnxProto.onnx.INodeProto[] = [];
  let nchw = inName;
  if (layout === 'NHWC') {
    nodes.push(node('Transpose', [inName], ['nchw'], { perm: [0, 3, 1, 2] }));
    nchw = 'nchw';
  }
  nodes.push(
    node('GlobalAveragePool', [nchw], ['pooled']),
    node('Flatten', ['pooled'], ['flat'], { axis: { int: 1 } }),
    node('MatMul', ['flat', 'W'], ['xw']),
    node('Add', ['xw', 'b'], [outName]),
  );
  const inputs = [{ name: inName, dtype: 'float32' as const, shape: inShape }];
  const outputs = [{ name: outName, dtype: 'float32' as const, shape: [1, k] as Dim[] }];
  const bytes = encodeModel({
    name: 'image_classifier',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes,
    initializers: [floatTensor('W', [3, k], weights), floatTensor('b', [k], bias)],
  });
  return { bytes, inputs, outputs, classes: k, weights, bias, logits: (means) => matmulAdd(means, 1, weights, 3, k, bias) };
}

export function softmax(logits: ArrayLike<number>): number[] {
  const max = Math.max(...Array.from(logits));
  const exps = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

export interface TextBowModel extends BuiltModel {
  vocabularySize: number;
  weights: Float32Array; // [V]
  bias: number;
  /** sigmoid(sum of weights at the hot indices + bias). */
  score(hot: Iterable<number>): number;
}

/** Multi-hot [1,V] → sigmoid(x·w + b) [1,1]. Give `weights` to make chosen words positive or negative. */
export function textBowModel(opts: { vocabularySize?: number; weights?: ArrayLike<number>; bias?: number; inputName?: string; outputName?: string } = {}): TextBowModel {
  const v = opts.vocabularySize ?? 16;
  const weights = opts.weights ? Float32Array.from(opts.weights) : randomWeights(v, 21);
  if (weights.length !== v) throw new Error(`textBowModel: ${weights.length} weights for a vocabulary of ${v}`);
  const bias = opts.bias ?? 0;
  const inName = opts.inputName ?? 'words';
  const outName = opts.outputName ?? 'score';
  const inputs = [{ name: inName, dtype: 'float32' as const, shape: [1, v] as Dim[] }];
  const outputs = [{ name: outName, dtype: 'float32' as const, shape: [1, 1] as Dim[] }];
  const bytes = encodeModel({
    name: 'text_bow',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [node('MatMul', [inName, 'w'], ['xw']), node('Add', ['xw', 'b'], ['logit']), node('Sigmoid', ['logit'], [outName])],
    initializers: [floatTensor('w', [v, 1], weights), floatTensor('b', [1], [bias])],
  });
  return {
    bytes,
    inputs,
    outputs,
    vocabularySize: v,
    weights,
    bias,
    score: (hot) => {
      let sum = bias;
      for (const i of new Set(hot)) sum += weights[i] as number;
      return 1 / (1 + Math.exp(-sum));
    },
  };
}

// ------------------------------------------------------------------ (g) dtypes and opsets

/** `out` = Identity(`in`) for one dtype; the shape may hold symbolic dims. */
export function identityModel(dtype: ElemType, shape: Dim[] = ['n']): BuiltModel {
  const inputs = [{ name: 'in', dtype, shape }];
  const outputs = [{ name: 'out', dtype, shape }];
  const bytes = encodeModel({
    name: `identity_${dtype}`,
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [node('Identity', ['in'], ['out'])],
  });
  return { bytes, inputs, outputs };
}

/** y = Relu(x), x ['batch', 4], declared with the given opset (and IR version). */
export function opsetModel(opset: number, irVersion = 8): BuiltModel {
  const inputs = [{ name: 'x', dtype: 'float32' as const, shape: ['batch', 4] as Dim[] }];
  const outputs = [{ name: 'y', dtype: 'float32' as const, shape: ['batch', 4] as Dim[] }];
  const bytes = encodeModel({
    name: `relu_opset${opset}`,
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [node('Relu', ['x'], ['y'])],
    opset,
    irVersion,
  });
  return { bytes, inputs, outputs };
}

// ------------------------------------------------------------------ (h) the protocol's example; models whose zero input is invalid

/**
 * The Open Inference Protocol's documented example model "mymodel": input0 UINT32 [2, 2] and input1 BOOL
 * [3] → output0 FP32 [3, 2] with output0[i][j] = input1[i] · (input0[0][j] + input0[1][j]).
 */
export function tritonExampleModel(): BuiltModel & { expected(input0: number[], input1: boolean[]): number[] } {
  const inputs = [
    { name: 'input0', dtype: 'uint32' as const, shape: [2, 2] as Dim[] },
    { name: 'input1', dtype: 'bool' as const, shape: [3] as Dim[] },
  ];
  const outputs = [{ name: 'output0', dtype: 'float32' as const, shape: [3, 2] as Dim[] }];
  const bytes = encodeModel({
    name: 'mymodel',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [
      node('Cast', ['input0'], ['a'], { to: { int: T.FLOAT } }),
      node('ReduceSum', ['a', 'axis0'], ['colsum'], { keepdims: { int: 1 } }), // [1, 2]
      node('Cast', ['input1'], ['b'], { to: { int: T.FLOAT } }),
      node('Unsqueeze', ['b', 'axis1'], ['column']), // [3, 1]
      node('Mul', ['column', 'colsum'], ['output0']),
    ],
    initializers: [int64Tensor('axis0', [1], [0]), int64Tensor('axis1', [1], [1])],
  });
  return {
    bytes,
    inputs,
    outputs,
    expected: (input0, input1) => input1.flatMap((b) => [0, 1].map((j) => (b ? (input0[j] as number) + (input0[2 + j] as number) : 0))),
  };
}

/** y = Reshape(x, shape): x float32 ['n'], shape int64 [2]. Zeros mean "copy dimension 1 of x", which x lacks. */
export function reshapeInputModel(): BuiltModel {
  const inputs = [
    { name: 'x', dtype: 'float32' as const, shape: ['n'] as Dim[] },
    { name: 'shape', dtype: 'int64' as const, shape: [2] as Dim[] },
  ];
  const outputs = [{ name: 'y', dtype: 'float32' as const, shape: ['rows', 'cols'] as Dim[] }];
  const bytes = encodeModel({
    name: 'reshape_input',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [node('Reshape', ['x', 'shape'], ['y'])],
  });
  return { bytes, inputs, outputs };
}

/** y = Resize(x, scales) (nearest): x float32 [1, 1, 'h', 'w'], scales float32 [4]; zero scales are refused. */
export function resizeInputModel(): BuiltModel {
  const inputs = [
    { name: 'x', dtype: 'float32' as const, shape: [1, 1, 'h', 'w'] as Dim[] },
    { name: 'scales', dtype: 'float32' as const, shape: [4] as Dim[] },
  ];
  const outputs = [{ name: 'y', dtype: 'float32' as const, shape: [1, 1, 'H', 'W'] as Dim[] }];
  const bytes = encodeModel({
    name: 'resize_input',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [node('Resize', ['x', '', 'scales'], ['y'], { mode: 'nearest' })],
  });
  return { bytes, inputs, outputs };
}

/**
 * A streaming audio model: x float32 [1, 'n'] samples, state_in float32 [1, 4], sr int64 [] (scalar
 * sample rate). Every sr/100-th sample is averaged (Range with step sr/100: a zero rate is an error) and
 * state_out = y = tanh(state_in + mean).
 */
export function streamingModel(): BuiltModel & { step(x: number[], state: number[], sr: number): number[] } {
  const inputs = [
    { name: 'x', dtype: 'float32' as const, shape: [1, 'n'] as Dim[] },
    { name: 'state_in', dtype: 'float32' as const, shape: [1, 4] as Dim[] },
    { name: 'sr', dtype: 'int64' as const, shape: [] as Dim[] },
  ];
  const outputs = [
    { name: 'y', dtype: 'float32' as const, shape: [1, 4] as Dim[] },
    { name: 'state_out', dtype: 'float32' as const, shape: [1, 4] as Dim[] },
  ];
  const bytes = encodeModel({
    name: 'streaming',
    inputs: inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    outputs: outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
    nodes: [
      node('Div', ['sr', 'hundred'], ['hop']),
      node('Shape', ['x'], ['xshape']),
      node('Gather', ['xshape', 'one'], ['len'], { axis: { int: 0 } }),
      node('Range', ['zero', 'len', 'hop'], ['idx']),
      node('Gather', ['x', 'idx'], ['frames'], { axis: { int: 1 } }),
      node('ReduceMean', ['frames'], ['mean'], { axes: [1], keepdims: { int: 1 } }),
      node('Add', ['state_in', 'mean'], ['sum']),
      node('Tanh', ['sum'], ['y']),
      node('Identity', ['y'], ['state_out']),
    ],
    initializers: [int64Tensor('hundred', [], [100]), int64Tensor('one', [], [1]), int64Tensor('zero', [], [0])],
  });
  return {
    bytes,
    inputs,
    outputs,
    step: (x, state, sr) => {
      const hop = Math.trunc(sr / 100);
      const picked = x.filter((_, i) => i % hop === 0);
      const mean = picked.reduce((a, b) => a + b, 0) / picked.length;
      return state.map((s) => Math.tanh(s + mean));
    },
  };
}

/** Reads the opset a model file declares (default domain), e.g. for registry tests. */
export function readOpset(bytes: Uint8Array): number | undefined {
  const model = onnx.ModelProto.decode(bytes);
  const entry = model.opsetImport.find((o) => !o.domain);
  return entry ? Number(entry.version) : undefined;
}

// ------------------------------------------------------------------ manifests and staging for store tests

/**
 * A valid (unsigned) model manifest for these bytes, as the device sees it after verification.
 * `extra` overrides fields (processing, sample, rollback, expiresAt...).
 */
export function testManifest(name: string, version: number, bytes: Uint8Array, extra: Partial<ManifestInput> = {}): Manifest {
  const now = Date.now();
  const chunkSize = 256 * 1024;
  return ManifestSchema.parse({
    kind: 'model',
    name,
    version,
    sha256: sha256Hex(bytes),
    length: bytes.length,
    issuedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 3600_000).toISOString(),
    target: { devices: ['dev-1'] },
    chunking: { size: chunkSize, sha256: chunkHashes(bytes, chunkSize) },
    ...extra,
  });
}

let stagedCounter = 0;

/** Writes bytes to a fresh staging file under `dir` (as a finished transfer would leave them). */
export async function stageFile(dir: string, bytes: Uint8Array): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, `staged-${process.pid}-${++stagedCounter}.onnx`);
  await writeFile(path, bytes);
  return path;
}
