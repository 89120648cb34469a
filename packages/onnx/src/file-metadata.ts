/**
 * The same metadata as readOnnxMetadata, read from a file without loading it: the protobuf
 * wire format is walked with positional reads, and only the small fields the metadata needs
 * (IR version, producer, opset imports, the graph's inputs and outputs, the initializers'
 * names) are read; the weights (initializers' data, node attributes) are skipped over by
 * their lengths. Memory stays at a 64 KiB window plus those fields, whatever the file's size,
 * so a registry can take a model of several GB without holding it.
 */
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import onnxProto from 'onnx-proto';
import { metadataOf, notOnnx, toNumber } from './metadata.js';
import type { ModelParts, OnnxMetadata } from './metadata.js';

const { onnx } = onnxProto;

const WINDOW = 64 * 1024;
/** Largest single field read whole (a graph input or output, an opset import, a name). */
const MAX_FIELD = 16 * 1024 * 1024;

// ModelProto, GraphProto and TensorProto field numbers (onnx.proto3)
const MODEL = { irVersion: 1, producerName: 2, producerVersion: 3, graph: 7, opsetImport: 8 } as const;
const GRAPH = { initializer: 5, input: 11, output: 12 } as const;
const TENSOR_NAME = 8;

class NotProtobuf extends Error {}

/** Positional reads through a small window over a file. */
class Source {
  #window = Buffer.alloc(WINDOW);
  #start = 0;
  #length = 0;
  constructor(
    readonly handle: FileHandle,
    readonly size: number,
  ) {}

  async byte(pos: number): Promise<number> {
    if (pos < this.#start || pos >= this.#start + this.#length) {
      if (pos >= this.size) throw new NotProtobuf(`a field runs past the end of the file at byte ${pos}`);
      const { bytesRead } = await this.handle.read(this.#window, 0, WINDOW, pos);
      this.#start = pos;
      this.#length = bytesRead;
    }
    return this.#window[pos - this.#start]!;
  }

  async varint(pos: number): Promise<[value: number, next: number]> {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const b = await this.byte(pos + i);
      value += (b & 0x7f) * scale;
      scale *= 128;
      if ((b & 0x80) === 0) return [value, pos + i + 1];
    }
    throw new NotProtobuf(`a varint at byte ${pos} is longer than 10 bytes`);
  }

  async bytes(pos: number, length: number): Promise<Buffer> {
    if (length > MAX_FIELD) throw new NotProtobuf(`a field of ${length} bytes at byte ${pos} is larger than any metadata field`);
    const out = Buffer.alloc(length);
    const { bytesRead } = await this.handle.read(out, 0, length, pos);
    if (bytesRead !== length) throw new NotProtobuf(`a field runs past the end of the file at byte ${pos}`);
    return out;
  }
}

interface Field {
  number: number;
  /** Varint fields: the value. */
  value: number;
  /** Length-delimited fields: where the payload starts and ends. */
  start: number;
  end: number;
}

/** Every field in [start, end), in order; length-delimited payloads are not read. */
async function* fields(src: Source, start: number, end: number): AsyncGenerator<Field> {
  let pos = start;
  while (pos < end) {
    const [key, afterKey] = await src.varint(pos);
    const number = Math.floor(key / 8);
    const wire = key % 8;
    if (number === 0) throw new NotProtobuf(`field number 0 at byte ${pos}`);
    if (wire === 0) {
      const [value, next] = await src.varint(afterKey);
      yield { number, value, start: afterKey, end: next };
      pos = next;
    } else if (wire === 2) {
      const [length, payload] = await src.varint(afterKey);
      if (payload + length > end) throw new NotProtobuf(`a field of ${length} bytes at byte ${payload} runs past its message`);
      yield { number, value: 0, start: payload, end: payload + length };
      pos = payload + length;
    } else if (wire === 1 || wire === 5) {
      pos = afterKey + (wire === 1 ? 8 : 4);
    } else {
      throw new NotProtobuf(`wire type ${wire} at byte ${pos}`);
    }
  }
  if (pos !== end) throw new NotProtobuf(`a field runs past its message at byte ${end}`);
}

async function graphParts(src: Source, start: number, end: number, into: NonNullable<ModelParts['graph']>): Promise<void> {
  for await (const f of fields(src, start, end)) {
    if (f.number === GRAPH.input) into.input.push(onnx.ValueInfoProto.decode(await src.bytes(f.start, f.end - f.start)));
    else if (f.number === GRAPH.output) into.output.push(onnx.ValueInfoProto.decode(await src.bytes(f.start, f.end - f.start)));
    else if (f.number === GRAPH.initializer) {
      for await (const t of fields(src, f.start, f.end)) {
        if (t.number === TENSOR_NAME) into.initializerNames.push((await src.bytes(t.start, t.end - t.start)).toString('utf8'));
      }
    }
  }
}

async function modelParts(src: Source): Promise<ModelParts> {
  const parts: ModelParts = { irVersion: 0, producerName: '', producerVersion: '', opsetImport: [], graph: undefined };
  const text = async (f: Field): Promise<string> => (await src.bytes(f.start, f.end - f.start)).toString('utf8');
  for await (const f of fields(src, 0, src.size)) {
    if (f.number === MODEL.irVersion) parts.irVersion = toNumber(f.value);
    else if (f.number === MODEL.producerName) parts.producerName = await text(f);
    else if (f.number === MODEL.producerVersion) parts.producerVersion = await text(f);
    else if (f.number === MODEL.opsetImport) parts.opsetImport.push(onnx.OperatorSetIdProto.decode(await src.bytes(f.start, f.end - f.start)));
    else if (f.number === MODEL.graph) {
      parts.graph ??= { input: [], output: [], initializerNames: [] }; // a repeated graph field merges, as protobuf does
      await graphParts(src, f.start, f.end, parts.graph);
    }
  }
  return parts;
}

/** readOnnxMetadata for a file on disk, in constant memory; the same refusals (`not_onnx`, with the same reasons). */
export async function readOnnxMetadataFromFile(file: string, label = file): Promise<OnnxMetadata> {
  const handle = await open(file, 'r');
  try {
    const size = (await handle.stat()).size;
    if (size === 0) throw notOnnx(label, 'it is empty');
    let parts: ModelParts;
    try {
      parts = await modelParts(new Source(handle, size));
    } catch (error) {
      // A read that failed (EIO, …) is the disk's problem, not the file's; anything else is the bytes (the walk's or protobufjs's refusal).
      if (typeof (error as NodeJS.ErrnoException).code === 'string' && !(error instanceof NotProtobuf)) throw error;
      throw notOnnx(label, `it does not parse as a ModelProto: ${(error as Error).message}`);
    }
    return metadataOf(parts, label);
  } finally {
    await handle.close();
  }
}
