/**
 * Tensors in JSON or binary ↔ onnxruntime tensors, and the check of a request's inputs against what the
 * model declares. Every problem is a FleetError('invalid_input') whose sentence says what was expected.
 *
 * JSON conventions (both directions):
 * - data flattened row-major, or nested as the shape says (the Open Inference Protocol allows both).
 * - float32/float64/float16: numbers; NaN and ±Infinity travel as the strings "NaN", "Infinity", "-Infinity";
 *   a finite number the dtype cannot hold (1e39 as float32, 70000 as float16) is refused, not made Infinity.
 * - float16 is carried as ordinary numbers; on the onnxruntime side it is a Uint16Array of IEEE half bits.
 * - int64/uint64: numbers (safe integers) or decimal strings in requests; replies use numbers when every
 *   value is a safe integer, otherwise decimal strings for the whole tensor.
 * - bool: true/false (0/1 accepted in requests). string: strings.
 */
import ort from 'onnxruntime-node';
import { DTYPES, ELEMENT_BYTES, FleetError, decodeBytesElements, encodeBytesElements } from '@edgefleet/protocol';
import type { DType, Tensor, TensorInfo } from '@edgefleet/protocol';

export type OrtTensor = ort.Tensor;
const DTYPE_SET: ReadonlySet<string> = new Set(DTYPES);

// ------------------------------------------------------------------ float16

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE 754 binary16 bits of a number, rounded to nearest even. */
export function toHalfBits(value: number): number {
  f32[0] = value;
  const x = u32[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // Inf / NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → Inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow → ±0
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++; // a carry into the exponent is still correct
  return sign | half;
}

/** The number whose binary16 bits are given. */
export function fromHalfBits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

// ------------------------------------------------------------------ JSON → onnxruntime

const INT_RANGES: Record<string, [number, number]> = {
  int8: [-128, 127],
  int16: [-32768, 32767],
  int32: [-2147483648, 2147483647],
  uint8: [0, 255],
  uint16: [0, 65535],
  uint32: [0, 4294967295],
};

const INT_ARRAYS = {
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
} as const;

const SPECIAL_FLOATS: Record<string, number> = { NaN: NaN, Infinity: Infinity, '-Infinity': -Infinity };
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

function bad(message: string): FleetError {
  return new FleetError('invalid_input', message);
}

function describeValue(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v.length > 20 ? `${v.slice(0, 20)}…` : v) : String(v);
}

function shapeText(shape: readonly (number | string | null)[]): string {
  return `[${shape.map((d) => (d === null || d === '' ? '?' : String(d))).join(', ')}]`;
}

/**
 * The elements of `data` in row-major order: flat data as is, nested data (one array level per dimension,
 * each as long as its dimension) flattened.
 */
function flatData(name: string, data: unknown[], shape: readonly number[]): unknown[] {
  if (!Array.isArray(data[0])) return data;
  const out: unknown[] = [];
  const walk = (node: unknown, depth: number, at: string): void => {
    if (depth === shape.length) {
      if (Array.isArray(node)) throw bad(`input "${name}": data is nested deeper than its ${shape.length} dimensions ${shapeText(shape)} (at ${at})`);
      out.push(node);
      return;
    }
    if (!Array.isArray(node) || node.length !== shape[depth]) {
      throw bad(`input "${name}": nested data${at ? ` at ${at}` : ''} must be an array of ${shape[depth]} (dimension ${depth} of ${shapeText(shape)}), got ${Array.isArray(node) ? `${node.length} entries` : describeValue(node)}`);
    }
    node.forEach((child, i) => walk(child, depth + 1, `${at}[${i}]`));
  };
  walk(data, 0, '');
  return out;
}

const FLOAT_LIMITS = { float32: '±3.4028235e38', float16: '±65504', float64: '±1.7976931348623157e308' } as const;

/** One JSON element of a float tensor; a finite number the dtype would turn into infinity is refused. */
function floatOf(v: unknown, dt: 'float32' | 'float64' | 'float16', where: (i: number) => string, i: number): number {
  if (typeof v === 'number') {
    // JSON.parse gives ±Infinity only for a number beyond float64 itself
    const fits = Number.isFinite(v) && (dt === 'float64' || (dt === 'float32' ? Number.isFinite(Math.fround(v)) : Math.abs(v) < 65520));
    if (!fits) throw bad(`${where(i)}: ${v} is out of ${dt}'s range (${FLOAT_LIMITS[dt]}); send "Infinity" or "-Infinity" if you mean infinity`);
    return v;
  }
  if (typeof v === 'string' && v in SPECIAL_FLOATS) return SPECIAL_FLOATS[v] as number;
  throw bad(`${where(i)}: expected a number (or "NaN", "Infinity", "-Infinity"), got ${describeValue(v)}`);
}

/** Converts one JSON tensor to an onnxruntime tensor; `name` is only used in error sentences. */
export function decodeTensor(name: string, tensor: unknown): OrtTensor {
  if (tensor === null || typeof tensor !== 'object' || Array.isArray(tensor)) {
    throw bad(`input "${name}" must be an object {dtype, shape, data}`);
  }
  const { dtype, shape, data: given } = tensor as Partial<Tensor>;
  if (typeof dtype !== 'string' || !DTYPE_SET.has(dtype)) {
    throw bad(`input "${name}": dtype must be one of ${DTYPES.join(', ')}, got ${describeValue(dtype)}`);
  }
  if (!Array.isArray(shape) || shape.length > 16 || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw bad(`input "${name}": shape must be an array of at most 16 non-negative integers`);
  }
  if (!Array.isArray(given)) throw bad(`input "${name}": data must be an array (flattened row-major, or nested as the shape)`);
  const data = flatData(name, given, shape);
  const size = shape.reduce((a, b) => a * b, 1);
  if (data.length !== size) {
    throw bad(`input "${name}": shape ${shapeText(shape)} holds ${size} values, but data has ${data.length}`);
  }
  const dims = shape as number[];
  const where = (i: number) => `input "${name}" element ${i}`;
  const dt = dtype as DType;
  switch (dt) {
    case 'float32':
    case 'float64':
    case 'float16': {
      const out = dt === 'float32' ? new Float32Array(size) : dt === 'float64' ? new Float64Array(size) : new Uint16Array(size);
      for (let i = 0; i < size; i++) {
        const n = floatOf(data[i], dt, where, i);
        out[i] = dt === 'float16' ? toHalfBits(n) : n;
      }
      return new ort.Tensor(dt, out, dims);
    }
    case 'int8':
    case 'int16':
    case 'int32':
    case 'uint8':
    case 'uint16':
    case 'uint32': {
      const [lo, hi] = INT_RANGES[dt] as [number, number];
      const out = new INT_ARRAYS[dt](size);
      for (let i = 0; i < size; i++) {
        const v = data[i];
        if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
          throw bad(`${where(i)}: expected an integer from ${lo} to ${hi} (${dt}), got ${describeValue(v)}`);
        }
        out[i] = v;
      }
      return new ort.Tensor(dt, out, dims);
    }
    case 'int64':
    case 'uint64': {
      const out = dt === 'int64' ? new BigInt64Array(size) : new BigUint64Array(size);
      const [lo, hi] = dt === 'int64' ? [INT64_MIN, INT64_MAX] : [0n, UINT64_MAX];
      for (let i = 0; i < size; i++) {
        const v = data[i];
        let n: bigint | undefined;
        if (typeof v === 'number' && Number.isSafeInteger(v)) n = BigInt(v);
        else if (typeof v === 'string' && /^-?\d{1,20}$/.test(v)) n = BigInt(v);
        if (n === undefined || n < lo || n > hi) {
          throw bad(`${where(i)}: expected a ${dt} as a safe integer or a decimal string, got ${describeValue(v)}`);
        }
        out[i] = n;
      }
      return new ort.Tensor(dt, out, dims);
    }
    case 'bool': {
      const out = new Uint8Array(size);
      for (let i = 0; i < size; i++) {
        const v = data[i];
        if (v === true || v === 1) out[i] = 1;
        else if (v === false || v === 0) out[i] = 0;
        else throw bad(`${where(i)}: expected true or false, got ${describeValue(v)}`);
      }
      return new ort.Tensor('bool', out, dims);
    }
    case 'string': {
      for (let i = 0; i < size; i++) {
        if (typeof data[i] !== 'string') throw bad(`${where(i)}: expected a string, got ${describeValue(data[i])}`);
      }
      return new ort.Tensor('string', (data as string[]).slice(), dims);
    }
  }
}

// ------------------------------------------------------------------ onnxruntime → JSON

function floatJson(v: number): number | string {
  return Number.isFinite(v) ? v : Number.isNaN(v) ? 'NaN' : v > 0 ? 'Infinity' : '-Infinity';
}

/** Converts an onnxruntime tensor (a model output) to a JSON tensor. */
export function encodeTensor(tensor: OrtTensor): Tensor {
  const shape = Array.from(tensor.dims);
  const type = tensor.type;
  let data: Tensor['data'];
  switch (type) {
    case 'float32':
    case 'float64': {
      const src = tensor.data as Float32Array | Float64Array;
      data = new Array(src.length);
      for (let i = 0; i < src.length; i++) data[i] = floatJson(src[i] as number);
      break;
    }
    case 'float16': {
      const src = tensor.data as Uint16Array;
      data = new Array(src.length);
      for (let i = 0; i < src.length; i++) data[i] = floatJson(fromHalfBits(src[i] as number));
      break;
    }
    case 'int64':
    case 'uint64': {
      const src = tensor.data as BigInt64Array | BigUint64Array;
      const max = BigInt(Number.MAX_SAFE_INTEGER);
      const safe = src.every((v) => v <= max && v >= -max);
      data = Array.from(src, (v) => (safe ? Number(v) : v.toString()));
      break;
    }
    case 'bool':
      data = Array.from(tensor.data as Uint8Array, (v) => v !== 0);
      break;
    case 'string':
      data = (tensor.data as string[]).slice();
      break;
    case 'int8':
    case 'int16':
    case 'int32':
    case 'uint8':
    case 'uint16':
    case 'uint32':
      data = Array.from(tensor.data as ArrayLike<number>);
      break;
    default:
      throw new FleetError('internal', `output of dtype ${type} cannot be sent as JSON`);
  }
  return { dtype: type as DType, shape, data };
}

// ------------------------------------------------------------------ model metadata and input checks

/** TensorInfo from onnxruntime's metadata; unnamed symbolic dimensions become null. */
export function tensorInfo(meta: ort.InferenceSession.ValueMetadata): TensorInfo {
  if (!meta.isTensor) return { name: meta.name, dtype: 'non-tensor', shape: [] };
  return { name: meta.name, dtype: meta.type, shape: meta.shape.map((d) => (d === '' ? null : d)) };
}

function specText(spec: TensorInfo): string {
  return `${spec.name} (${spec.dtype} ${shapeText(spec.shape)})`;
}

/**
 * Decodes a request's JSON inputs and checks them against the model's declared inputs: names, dtypes,
 * ranks, fixed dimensions, and that a symbolic dimension (e.g. "batch") has one size across all inputs.
 */
export function decodeInputs(model: string, inputs: Record<string, unknown>, specs: readonly TensorInfo[]): Record<string, OrtTensor> {
  checkNames(model, Object.keys(inputs), specs);
  const feeds: Record<string, OrtTensor> = {};
  for (const spec of specs) {
    const given = Object.hasOwn(inputs, spec.name) ? inputs[spec.name] : undefined;
    if (given === undefined) throw bad(`${model}: missing input ${specText(spec)}`);
    feeds[spec.name] = decodeTensor(spec.name, given);
  }
  return checkFeeds(model, feeds, specs);
}

/** Refuses names the model does not declare, naming what it does expect. */
export function checkNames(model: string, names: Iterable<string>, specs: readonly TensorInfo[]): void {
  const declared = new Set(specs.map((s) => s.name));
  for (const name of names) {
    if (!declared.has(name)) throw bad(`${model} has no input "${name}"; it expects ${specs.map(specText).join(', ')}`);
  }
}

/** Checks decoded feeds against the declared inputs (every input present, dtype, rank, dimensions); returns them. */
export function checkFeeds(model: string, feeds: Record<string, OrtTensor>, specs: readonly TensorInfo[]): Record<string, OrtTensor> {
  checkNames(model, Object.keys(feeds), specs);
  const symbols = new Map<string, { size: number; input: string }>();
  for (const spec of specs) {
    const tensor = Object.hasOwn(feeds, spec.name) ? feeds[spec.name] : undefined;
    if (tensor === undefined) throw bad(`${model}: missing input ${specText(spec)}`);
    if (tensor.type !== spec.dtype) {
      throw bad(`${model}: input "${spec.name}" must be ${spec.dtype}, got ${tensor.type}`);
    }
    if (spec.shape.length === 0) continue;
    const dims = tensor.dims;
    if (dims.length !== spec.shape.length) {
      throw bad(`${model}: input "${spec.name}" must have ${spec.shape.length} dimensions ${shapeText(spec.shape)}, got ${shapeText(dims)}`);
    }
    spec.shape.forEach((want, axis) => {
      const got = dims[axis] as number;
      if (typeof want === 'number' && want >= 0 && got !== want) {
        throw bad(`${model}: input "${spec.name}" dimension ${axis} must be ${want} (shape ${shapeText(spec.shape)}), got ${got}`);
      }
      if (typeof want === 'string' && want !== '') {
        const seen = symbols.get(want);
        if (seen && seen.size !== got) {
          throw bad(`${model}: dimension "${want}" is ${seen.size} in input "${seen.input}" but ${got} in input "${spec.name}"; they must match`);
        }
        if (!seen) symbols.set(want, { size: got, input: spec.name });
      }
    });
  }
  return feeds;
}

// ------------------------------------------------------------------ binary tensor data (little-endian, row-major)

type NumericData = Exclude<OrtTensor['data'], string[]>;
type TypedArrayClass = { new (length: number): NumericData; new (buffer: ArrayBufferLike, byteOffset?: number, length?: number): NumericData };

/** The typed array onnxruntime-node takes for each numeric dtype (float16 as its raw bits, bool as bytes). */
const TYPED_ARRAYS: Record<Exclude<DType, 'string'>, TypedArrayClass> = {
  ...INT_ARRAYS,
  float32: Float32Array,
  float64: Float64Array,
  float16: Uint16Array,
  int64: BigInt64Array,
  uint64: BigUint64Array,
  bool: Uint8Array,
};

// Typed arrays use the host's byte order; the binary format is little-endian, as is every host Node runs on here.
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;
const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/**
 * An onnxruntime tensor over binary tensor data: a view of `bytes` (no copy), copied only when `bytes` is
 * not aligned to the element size. BYTES elements are decoded as UTF-8 text (onnxruntime-node's strings).
 */
export function tensorFromBytes(name: string, dtype: DType, shape: readonly number[], bytes: Uint8Array): OrtTensor {
  if (!LITTLE_ENDIAN) throw new FleetError('internal', 'binary tensor data needs a little-endian host');
  const size = shape.reduce((a, b) => a * b, 1);
  const dims = [...shape];
  if (dtype === 'string') {
    const elements = decodeBytesElements(bytes, size, name);
    const strings = elements.map((e, i) => {
      try {
        return utf8.decode(e);
      } catch {
        throw bad(`input "${name}": BYTES element ${i} is not valid UTF-8; this runtime's string tensors hold text`);
      }
    });
    return new ort.Tensor('string', strings, dims);
  }
  const width = ELEMENT_BYTES[dtype] as number;
  if (bytes.byteLength !== size * width) {
    throw bad(`input "${name}": ${dtype} ${shapeText(shape)} is ${size * width} bytes of binary data, but binary_data_size is ${bytes.byteLength}`);
  }
  const aligned = bytes.byteOffset % width === 0 ? bytes : new Uint8Array(bytes); // the copy owns a fresh, aligned buffer
  const data = new TYPED_ARRAYS[dtype](aligned.buffer, aligned.byteOffset, size);
  if (dtype === 'bool') {
    const i = (data as Uint8Array).findIndex((b) => b > 1);
    if (i >= 0) throw bad(`input "${name}" element ${i}: a BOOL is one byte, 0 or 1, got ${(data as Uint8Array)[i]}`);
  }
  return new ort.Tensor(dtype, data as Float32Array, dims);
}

/** An output's binary tensor data: a view of its buffer (no copy); BYTES encoded as length + UTF-8 bytes. */
export function tensorBytes(tensor: OrtTensor): Uint8Array {
  if (tensor.type === 'string') return encodeBytesElements((tensor.data as string[]).map((s) => utf8Encoder.encode(s)));
  if (!LITTLE_ENDIAN) throw new FleetError('internal', 'binary tensor data needs a little-endian host');
  const data = tensor.data as Uint8Array;
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** A tensor of zeros (empty strings, false) of the declared shape, symbolic dimensions set to 1. */
export function zerosFor(spec: TensorInfo): OrtTensor {
  const dims = spec.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : 1));
  const size = dims.reduce((a, b) => a * b, 1);
  if (spec.dtype === 'string') return new ort.Tensor('string', new Array<string>(size).fill(''), dims);
  const dtype = spec.dtype as Exclude<DType, 'string'>;
  const Zeros = (TYPED_ARRAYS as Partial<Record<string, TypedArrayClass>>)[dtype];
  if (!Zeros) throw new FleetError('smoke_test_failed', `input ${spec.name} has dtype ${spec.dtype}, which a smoke test cannot fill`);
  return new ort.Tensor(dtype, new Zeros(size) as Float32Array, dims);
}
