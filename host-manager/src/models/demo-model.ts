/**
 * A demo model for a first rollout without a model of one's own: `y = x·W + b`, x float32[batch, 4]
 * and y float32[batch, 3], with small whole-number weights so an answer can be checked by hand.
 */
import onnxProto from 'onnx-proto';

/** Row k of W holds the weights of input k; y[c] = sum_k x[k]·W[k][c] + b[c]. */
const W = [
  [1, 0, 1],
  [1, 0, 0],
  [0, 1, 0],
  [0, 1, -1],
];
const B = [0, 0, 10];

export const DEMO_INPUT = { x: { dtype: 'float32', shape: [1, 4], data: [1, 2, 3, 4] } } as const;

/** What the demo model answers for `x` (one row). */
export function demoAnswer(x: readonly number[]): number[] {
  return B.map((b, c) => x.reduce((sum, v, k) => sum + v * W[k]![c]!, b));
}

export function demoModel(): Buffer {
  const { onnx } = onnxProto;
  const FLOAT = onnx.TensorProto.DataType.FLOAT;
  const raw = (values: number[]): Uint8Array => new Uint8Array(Float32Array.from(values).buffer);
  const io = (name: string, width: number) => ({ name, type: { tensorType: { elemType: FLOAT, shape: { dim: [{ dimParam: 'batch' }, { dimValue: width }] } } } });
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'edgefleet demo',
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'demo',
      node: [
        { opType: 'MatMul', input: ['x', 'W'], output: ['xw'] },
        { opType: 'Add', input: ['xw', 'b'], output: ['y'] },
      ],
      input: [io('x', 4)],
      output: [io('y', 3)],
      initializer: [
        { name: 'W', dims: [4, 3], dataType: FLOAT, rawData: raw(W.flat()) },
        { name: 'b', dims: [3], dataType: FLOAT, rawData: raw(B) },
      ],
    },
  });
  return Buffer.from(onnx.ModelProto.encode(model).finish());
}
