/**
 * Reads what the agent needs from an ONNX file without loading it: is it an ONNX ModelProto at all,
 * its IR version and opset, and the graph's inputs and outputs. A small protobuf wire-format walker
 * (no generated code): ModelProto → GraphProto → ValueInfoProto → TypeProto.Tensor → TensorShapeProto.
 */
import { FleetError } from '@edgefleet/protocol';
import type { TensorInfo } from '@edgefleet/protocol';

export interface OnnxFileInfo {
  irVersion: number;
  /** Version of the default (ai.onnx) operator set, or null when the file imports none. */
  opset: number | null;
  inputs: TensorInfo[];
  outputs: TensorInfo[];
}

const ELEM_TYPES: Record<number, string> = {
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

interface Field {
  num: number;
  wire: number;
  /** Varint value (wire 0). */
  int: number;
  /** Payload bounds (wire 2). */
  start: number;
  end: number;
}

class Malformed extends Error {}

function readVarint(buf: Uint8Array, pos: number, end: number): [number, number] {
  let result = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new Malformed('truncated varint');
    const byte = buf[pos++] as number;
    result += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return [result, pos];
    scale *= 128;
  }
  throw new Malformed('varint longer than 10 bytes');
}

function* fields(buf: Uint8Array, start: number, end: number): Generator<Field> {
  let pos = start;
  while (pos < end) {
    const [tag, afterTag] = readVarint(buf, pos, end);
    pos = afterTag;
    const num = Math.floor(tag / 8);
    const wire = tag % 8;
    if (num === 0) throw new Malformed('field number 0');
    switch (wire) {
      case 0: {
        const [int, next] = readVarint(buf, pos, end);
        yield { num, wire, int, start: pos, end: next };
        pos = next;
        break;
      }
      case 1:
        if (pos + 8 > end) throw new Malformed('truncated fixed64');
        yield { num, wire, int: 0, start: pos, end: pos + 8 };
        pos += 8;
        break;
      case 2: {
        const [len, next] = readVarint(buf, pos, end);
        if (next + len > end) throw new Malformed('length-delimited field runs past its parent');
        yield { num, wire, int: 0, start: next, end: next + len };
        pos = next + len;
        break;
      }
      case 5:
        if (pos + 4 > end) throw new Malformed('truncated fixed32');
        yield { num, wire, int: 0, start: pos, end: pos + 4 };
        pos += 4;
        break;
      default:
        throw new Malformed(`wire type ${wire}`);
    }
  }
  if (pos !== end) throw new Malformed('message overruns its bounds');
}

const text = (buf: Uint8Array, f: Field) => Buffer.from(buf.buffer, buf.byteOffset + f.start, f.end - f.start).toString('utf8');

function expectWire(f: Field, wire: number, what: string): void {
  if (f.wire !== wire) throw new Malformed(`${what} has wire type ${f.wire}`);
}

function parseValueInfo(buf: Uint8Array, start: number, end: number): TensorInfo {
  let name = '';
  let dtype = 'non-tensor';
  const shape: TensorInfo['shape'] = [];
  for (const f of fields(buf, start, end)) {
    if (f.num === 1) {
      expectWire(f, 2, 'ValueInfoProto.name');
      name = text(buf, f);
    } else if (f.num === 2) {
      expectWire(f, 2, 'ValueInfoProto.type');
      for (const t of fields(buf, f.start, f.end)) {
        if (t.num !== 1 || t.wire !== 2) continue; // sequence/map/optional types: not a tensor
        for (const tt of fields(buf, t.start, t.end)) {
          if (tt.num === 1 && tt.wire === 0) dtype = ELEM_TYPES[tt.int] ?? `onnx-type-${tt.int}`;
          if (tt.num === 2 && tt.wire === 2) {
            for (const d of fields(buf, tt.start, tt.end)) {
              if (d.num !== 1 || d.wire !== 2) continue;
              let dim: number | string | null = null;
              for (const dv of fields(buf, d.start, d.end)) {
                if (dv.num === 1 && dv.wire === 0) dim = dv.int;
                if (dv.num === 2 && dv.wire === 2) dim = text(buf, dv) || null;
              }
              shape.push(dim);
            }
          }
        }
      }
    }
  }
  return { name, dtype, shape };
}

/**
 * Inspects ONNX bytes. Throws FleetError('not_onnx') when they are not a well-formed ModelProto with a graph.
 * `what` names the file in the error sentence.
 */
export function inspectOnnx(bytes: Uint8Array, what = 'the file'): OnnxFileInfo {
  try {
    let irVersion: number | undefined;
    let opset: number | null = null;
    let graph: Field | undefined;
    for (const f of fields(bytes, 0, bytes.length)) {
      if (f.num === 1) {
        expectWire(f, 0, 'ir_version');
        irVersion = f.int;
      } else if (f.num === 7) {
        expectWire(f, 2, 'graph');
        graph = f;
      } else if (f.num === 8) {
        expectWire(f, 2, 'opset_import');
        let domain = '';
        let version = 0;
        for (const o of fields(bytes, f.start, f.end)) {
          if (o.num === 1 && o.wire === 2) domain = text(bytes, o);
          if (o.num === 2 && o.wire === 0) version = o.int;
        }
        if (domain === '' || domain === 'ai.onnx') opset = version;
      } else if ([2, 3, 4, 6, 14, 20, 25].includes(f.num)) {
        expectWire(f, 2, `ModelProto field ${f.num}`);
      } else if (f.num === 5) {
        expectWire(f, 0, 'model_version');
      }
    }
    if (irVersion === undefined || irVersion < 1 || irVersion > 100) throw new Malformed('no plausible ir_version');
    if (!graph) throw new Malformed('no graph');
    const inputs: TensorInfo[] = [];
    const outputs: TensorInfo[] = [];
    const initializers = new Set<string>();
    for (const g of fields(bytes, graph.start, graph.end)) {
      if (g.num === 11 && g.wire === 2) inputs.push(parseValueInfo(bytes, g.start, g.end));
      else if (g.num === 12 && g.wire === 2) outputs.push(parseValueInfo(bytes, g.start, g.end));
      else if (g.num === 5 && g.wire === 2) {
        for (const t of fields(bytes, g.start, g.end)) if (t.num === 8 && t.wire === 2) initializers.add(text(bytes, t));
      }
    }
    if (outputs.length === 0) throw new Malformed('graph has no outputs');
    // Before IR 4, initializers were also listed as graph inputs; they are not inputs a caller feeds.
    return { irVersion, opset, inputs: inputs.filter((i) => !initializers.has(i.name)), outputs };
  } catch (error) {
    if (error instanceof Malformed) {
      throw new FleetError('not_onnx', `${what} is not an ONNX model (${error.message}); export the model to .onnx and send it again`);
    }
    throw error;
  }
}
