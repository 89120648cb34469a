/**
 * Declarative pre- and post-processing from a model's manifest (protocol ProcessingSchema), so a device
 * answers with labels, not only tensors:
 * - image-classification: decode JPEG/PNG (sharp), resize the shorter side, centre-crop, /255, mean/std,
 *   NCHW or NHWC; softmax and top-k with labels → `{ top: [{ label, index, probability }] }`.
 * - text-bow: lowercase, split into words, word index, multi-hot of vocabularySize; optional sigmoid,
 *   threshold to one of two labels → `{ label, score }`.
 * Bad images and unknown words are FleetError('invalid_input') with a sentence, never a crash.
 */
import * as ort from 'onnxruntime-common';
import type { OutputInfo, default as Sharp } from 'sharp';
import { FleetError } from '@edgefleet/protocol';
import type { Processing, TensorInfo } from '@edgefleet/protocol';
import type { OrtTensor } from '../models/tensors.js';

export type ImageClassification = Extract<Processing, { kind: 'image-classification' }>;
export type TextBagOfWords = Extract<Processing, { kind: 'text-bow' }>;
export type RawInput = { text: string } | { imageBase64: string };

/** Largest decoded image accepted (pixels), against decompression bombs. */
export const MAX_IMAGE_PIXELS = 40_000_000;

const bad = (message: string) => new FleetError('invalid_input', message);

/**
 * Checks at activation that the processing fits the model: the input and output it names exist, with
 * compatible dtypes and shapes. Throws FleetError('load_failed') naming the mismatch.
 */
export function checkProcessing(p: Processing, model: string, inputs: readonly TensorInfo[], outputs: readonly TensorInfo[]): void {
  const fail = (why: string) => new FleetError('load_failed', `${model}: the manifest's ${p.kind} processing ${why}; fix the manifest and send the model again`);
  const input = inputs.find((i) => i.name === p.input);
  if (!input) throw fail(`names input "${p.input}", but the model's inputs are ${inputs.map((i) => i.name).join(', ')}`);
  if (inputs.length !== 1) throw fail(`can feed only one input, but the model has ${inputs.length}`);
  if (p.output !== undefined && !outputs.some((o) => o.name === p.output)) {
    throw fail(`names output "${p.output}", but the model's outputs are ${outputs.map((o) => o.name).join(', ')}`);
  }
  const fixed = (axis: number) => {
    const d = input.shape[axis];
    return typeof d === 'number' && d >= 0 ? d : undefined;
  };
  if (p.kind === 'image-classification') {
    if (input.dtype !== 'float32') throw fail(`needs a float32 input, but "${input.name}" is ${input.dtype}`);
    if (input.shape.length !== 4) throw fail(`needs a 4-dimensional image input, but "${input.name}" has ${input.shape.length} dimensions`);
    const [c, h, w] = p.layout === 'NCHW' ? [1, 2, 3] : [3, 1, 2];
    for (const [axis, want] of [[c, 3], [h, p.height], [w, p.width]] as const) {
      const got = fixed(axis);
      if (got !== undefined && got !== want) throw fail(`produces ${p.layout} size ${want} on axis ${axis}, but the model wants ${got}`);
    }
    if ((p.resize ?? 0) !== 0 && (p.resize as number) < Math.max(p.width, p.height)) {
      throw fail(`resizes to ${p.resize}, smaller than the ${p.width}x${p.height} crop`);
    }
  } else {
    if (!['float32', 'float64', 'int32', 'int64', 'uint8', 'bool'].includes(input.dtype)) {
      throw fail(`cannot build a multi-hot vector of dtype ${input.dtype}`);
    }
    if (input.shape.length < 1 || input.shape.length > 2) throw fail(`needs a [1, vocabulary] input, but "${input.name}" has ${input.shape.length} dimensions`);
    const last = fixed(input.shape.length - 1);
    if (last !== undefined && last !== p.vocabularySize) {
      throw fail(`has a vocabulary of ${p.vocabularySize}, but the model's input is ${last} wide`);
    }
  }
}

/** Turns a raw request (text or base64 image) into the model's input tensor. */
export async function preprocess(p: Processing, raw: RawInput, model: string, inputs: readonly TensorInfo[]): Promise<Record<string, OrtTensor>> {
  const spec = inputs.find((i) => i.name === p.input);
  if (!spec) throw new FleetError('internal', `${model}: processing input ${p.input} vanished`);
  if (p.kind === 'image-classification') {
    if (!('imageBase64' in raw)) throw bad(`${model} classifies images: send raw.imageBase64 (a JPEG or PNG, base64)`);
    return { [p.input]: await imageTensor(p, raw.imageBase64) };
  }
  if (!('text' in raw)) throw bad(`${model} classifies text: send raw.text`);
  return { [p.input]: textTensor(p, raw.text, spec) };
}

// ------------------------------------------------------------------ image

let sharpLoad: Promise<typeof Sharp> | undefined;

/**
 * sharp (libvips, native), imported with the first image rather than at start: most devices never
 * decode one, and its library costs resident memory. Where its binary does not load on this board, image
 * requests are refused with the reason; tensor inputs keep working.
 */
function loadSharp(): Promise<typeof Sharp> {
  sharpLoad ??= import('sharp').then(
    (m) => m.default,
    (error: unknown) => {
      sharpLoad = undefined; // a later request tries again (e.g. after the missing package was installed)
      const reason = String((error as Error)?.message ?? error).split('\n')[0];
      throw new FleetError(
        'unavailable',
        `image pre-processing is not available on this device: sharp does not load on ${process.platform}/${process.arch} (${reason}); send tensors in "inputs" instead, or install the agent bundle built for this board`,
      );
    },
  );
  return sharpLoad;
}

async function imageTensor(p: ImageClassification, base64: string): Promise<OrtTensor> {
  if (!/^[A-Za-z0-9+/_-]*={0,2}\s*$/.test(base64.replace(/\s+/g, ''))) throw bad('raw.imageBase64 is not base64');
  const bytes = Buffer.from(base64, 'base64');
  if (bytes.length === 0) throw bad('raw.imageBase64 is empty: send a JPEG or PNG image, base64-encoded');
  const shorter = p.resize ?? Math.max(p.width, p.height);
  const sharp = await loadSharp();
  let pixels: Buffer;
  let info: OutputInfo;
  try {
    const meta = await sharp(bytes, { failOn: 'error', limitInputPixels: MAX_IMAGE_PIXELS }).metadata();
    if (meta.format !== 'jpeg' && meta.format !== 'png') {
      throw bad(`the image is ${meta.format ?? 'of an unknown format'}; send a JPEG or PNG`);
    }
    ({ data: pixels, info } = await sharp(bytes, { failOn: 'error', limitInputPixels: MAX_IMAGE_PIXELS, autoOrient: true })
      .removeAlpha()
      .toColourspace('srgb')
      .resize({ width: shorter, height: shorter, fit: 'outside' })
      .raw()
      .toBuffer({ resolveWithObject: true }));
  } catch (error) {
    if (error instanceof FleetError) throw error;
    throw bad(`the image could not be decoded (${(error as Error).message}); send a complete JPEG or PNG, base64-encoded`);
  }
  const { width: rw, height: rh, channels } = info;
  if (rw < p.width || rh < p.height) throw new FleetError('internal', `resized image ${rw}x${rh} is smaller than the ${p.width}x${p.height} crop`);
  const left = Math.floor((rw - p.width) / 2);
  const top = Math.floor((rh - p.height) / 2);
  const { width: w, height: h } = p;
  const out = new Float32Array(3 * w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const src = ((top + y) * rw + (left + x)) * channels;
      for (let c = 0; c < 3; c++) {
        const value = pixels[src + (channels >= 3 ? c : 0)] as number;
        const v = (value / 255 - p.mean[c]!) / p.std[c]!;
        out[p.layout === 'NCHW' ? c * h * w + y * w + x : (y * w + x) * 3 + c] = v;
      }
    }
  }
  return new ort.Tensor('float32', out, p.layout === 'NCHW' ? [1, 3, h, w] : [1, h, w, 3]);
}

// ------------------------------------------------------------------ text

/** Lowercase words of a text (letters and digits, inner apostrophes kept: "don't"). */
export function words(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+(?:'[\p{L}\p{N}]+)*/gu) ?? [];
}

function textTensor(p: TextBagOfWords, text: string, spec: TensorInfo): OrtTensor {
  const hot = new Set<number>();
  const unknown: string[] = [];
  for (const word of words(text)) {
    const index = Object.hasOwn(p.wordIndex, word) ? p.wordIndex[word] : undefined;
    if (index === undefined || index >= p.vocabularySize) {
      if (!unknown.includes(word)) unknown.push(word);
    } else hot.add(index);
  }
  if (unknown.length > 0 && p.unknownWords === 'error') {
    const shown = unknown.slice(0, 10).map((w) => `"${w}"`).join(', ');
    throw bad(`unknown word${unknown.length > 1 ? 's' : ''} ${shown}${unknown.length > 10 ? ` and ${unknown.length - 10} more` : ''}: not in the model's vocabulary; rephrase without them`);
  }
  const v = p.vocabularySize;
  const dims = spec.shape.length === 1 ? [v] : [1, v];
  switch (spec.dtype) {
    case 'float64': {
      const data = new Float64Array(v);
      for (const i of hot) data[i] = 1;
      return new ort.Tensor('float64', data, dims);
    }
    case 'int32': {
      const data = new Int32Array(v);
      for (const i of hot) data[i] = 1;
      return new ort.Tensor('int32', data, dims);
    }
    case 'int64': {
      const data = new BigInt64Array(v);
      for (const i of hot) data[i] = 1n;
      return new ort.Tensor('int64', data, dims);
    }
    case 'uint8':
    case 'bool': {
      const data = new Uint8Array(v);
      for (const i of hot) data[i] = 1;
      return new ort.Tensor(spec.dtype, data, dims);
    }
    default: {
      const data = new Float32Array(v);
      for (const i of hot) data[i] = 1;
      return new ort.Tensor('float32', data, dims);
    }
  }
}

// ------------------------------------------------------------------ post-processing

function outputValues(p: Processing, outputs: Record<string, OrtTensor>, outputNames: readonly string[]): number[] {
  const name = p.output ?? outputNames[0];
  const tensor = name === undefined ? undefined : outputs[name];
  if (!tensor) throw new FleetError('internal', `model output ${name ?? '(none)'} is missing`);
  const data = tensor.data;
  if (typeof data === 'string' || !ArrayBuffer.isView(data) || data instanceof BigInt64Array || data instanceof BigUint64Array) {
    throw new FleetError('internal', `model output ${name} is ${tensor.type}, not numbers to post-process`);
  }
  return Array.from(data as ArrayLike<number>);
}

export function softmax(values: readonly number[]): number[] {
  const max = Math.max(...values);
  const exps = values.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

export type ImageAnswer = { top: { label: string; index: number; probability: number }[] };
export type TextAnswer = { label: string; score: number };

/** The answer a person reads: top-k labels for images, a label and score for text. */
export function postprocess(p: Processing, outputs: Record<string, OrtTensor>, outputNames: readonly string[]): ImageAnswer | TextAnswer {
  const values = outputValues(p, outputs, outputNames);
  if (p.kind === 'image-classification') {
    const probabilities = p.softmax ? softmax(values) : values;
    const top = probabilities
      .map((probability, index) => ({ label: p.labels[index] ?? `class ${index}`, index, probability }))
      .sort((a, b) => b.probability - a.probability || a.index - b.index)
      .slice(0, p.topK);
    return { top };
  }
  const first = values[0];
  if (first === undefined) throw new FleetError('internal', 'the model returned an empty score');
  const score = p.sigmoid ? 1 / (1 + Math.exp(-first)) : first;
  return { label: score >= p.threshold ? p.labels[1] : p.labels[0], score };
}
