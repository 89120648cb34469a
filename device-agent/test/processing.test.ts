/**
 * Declared pre/post-processing end to end on real models: PNG/JPEG images made with sharp from raw pixels
 * go through decode, resize, centre crop and normalisation to the expected top-k; text goes through the
 * bag of words to the expected label; bad images and unknown words are clear errors.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import sharp from 'sharp';
import { FleetError } from '@edgefleet/protocol';
import type { Processing } from '@edgefleet/protocol';
import { createModelService } from '../src/models/index.js';
import type { ImageAnswer, ModelService, TextAnswer } from '../src/models/index.js';
import { imageClassifierModel, softmax, stageFile, testManifest, textBowModel } from '../../test/support/onnx-models.js';
import type { ImageClassifierModel } from '../../test/support/onnx-models.js';

const MEAN = [0.485, 0.456, 0.406] as const;
const STD = [0.229, 0.224, 0.225] as const;
const LABELS = ['pizza', 'sushi', 'ramen', 'tacos', 'salad'];
const RED = [200, 30, 60] as const;
const BLUE = [0, 0, 255] as const;

/** RGB pixels: `inside` in columns [from, to), `outside` elsewhere. */
function stripes(width: number, height: number, from: number, to: number, inside: readonly number[], outside: readonly number[]): Buffer {
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const c = x >= from && x < to ? inside : outside;
      px.set(c, (y * width + x) * 3);
    }
  }
  return px;
}

const encode = (pixels: Buffer, width: number, height: number, channels: 1 | 3 = 3) => sharp(pixels, { raw: { width, height, channels } });

/** The answer the device must give for an image whose crop is the solid colour `rgb`. */
function expectedTop(model: ImageClassifierModel, rgb: readonly number[], k: number): ImageAnswer['top'] {
  const means = [0, 1, 2].map((c) => ((rgb[c] as number) / 255 - MEAN[c]!) / STD[c]!) as [number, number, number];
  return softmax(model.logits(means))
    .map((probability, index) => ({ label: LABELS[index] as string, index, probability }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, k);
}

function expectTopClose(actual: ImageAnswer['top'], expected: ImageAnswer['top'], tol: number): void {
  expect(actual.map((t) => t.label)).toEqual(expected.map((t) => t.label));
  actual.forEach((t, i) => expect(Math.abs(t.probability - (expected[i]?.probability as number))).toBeLessThan(tol));
}

async function expectInvalid(promise: Promise<unknown>, message: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(FleetError);
  expect((error as FleetError).code).toBe('invalid_input');
  expect((error as FleetError).message).toMatch(message);
}

describe('pre- and post-processing', () => {
  let dataDir: string;
  let models: ModelService;
  const nchw = imageClassifierModel({ height: 8, width: 8, classes: 5, layout: 'NCHW', seed: 5 });
  const nhwc = imageClassifierModel({ height: 8, width: 8, classes: 5, layout: 'NHWC', seed: 6 });
  const vocabulary = { great: 1, good: 2, awful: 3, bad: 4, the: 5, movie: 6, "don't": 7 };
  const text = textBowModel({ vocabularySize: 8, weights: [0, 2, 1.5, -2.5, -2, 0, 0, -1], bias: 0.1 });

  async function add(name: string, bytes: Buffer, processing: Processing | Record<string, unknown>): Promise<void> {
    await models.install(testManifest(name, 1, bytes, { processing: processing as Processing }), await stageFile(join(dataDir, 'staging'), bytes));
    await models.activate(name, 1);
  }

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'edgefleet-processing-'));
    models = await createModelService({ dataDir, logger: pino({ level: 'silent' }), threads: 1 });
    const image = { kind: 'image-classification', input: 'image', width: 8, height: 8, labels: LABELS, topK: 3 };
    await add('food', nchw.bytes, { ...image, resize: 8, layout: 'NCHW' });
    await add('food-nhwc', nhwc.bytes, { ...image, layout: 'NHWC' });
    const bow = { kind: 'text-bow', input: 'words', vocabularySize: 8, wordIndex: vocabulary, labels: ['negative', 'positive'] };
    await add('imdb', text.bytes, bow);
    await add('imdb-strict', text.bytes, { ...bow, unknownWords: 'error' });
  });
  afterAll(async () => {
    await models.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('classifies a PNG: the centre crop alone decides, top-k with labels and softmax probabilities', async () => {
    // 16x8, red in the centre 8 columns, blue outside: a correct centre crop sees only red.
    const png = await encode(stripes(16, 8, 4, 12, RED, BLUE), 16, 8).png().toBuffer();
    const result = await models.infer({ model: 'food', raw: { imageBase64: png.toString('base64') } });
    const answer = result.answer as ImageAnswer;
    expectTopClose(answer.top, expectedTop(nchw, RED, 3), 1e-5);
    expect(result.outputs.logits?.shape).toEqual([1, 5]);
  });

  it('resizes the shorter side before cropping (96x32 → 24x8 → centre 8x8)', async () => {
    const png = await encode(stripes(96, 32, 16, 80, RED, BLUE), 96, 32).png().toBuffer();
    const result = await models.infer({ model: 'food', raw: { imageBase64: png.toString('base64') } });
    expectTopClose((result.answer as ImageAnswer).top, expectedTop(nchw, RED, 3), 1e-2);
  });

  it('classifies a JPEG into an NHWC model, and a grayscale PNG', async () => {
    const colour = [120, 200, 40];
    const jpeg = await encode(stripes(40, 30, 0, 40, colour, colour), 40, 30).jpeg({ quality: 100 }).toBuffer();
    const result = await models.infer({ model: 'food-nhwc', raw: { imageBase64: jpeg.toString('base64') } });
    expectTopClose((result.answer as ImageAnswer).top, expectedTop(nhwc, colour, 3), 2e-2);

    const gray = await encode(Buffer.alloc(20 * 20, 128), 20, 20, 1).png().toBuffer();
    const grayResult = await models.infer({ model: 'food', raw: { imageBase64: gray.toString('base64') } });
    expectTopClose((grayResult.answer as ImageAnswer).top, expectedTop(nchw, [128, 128, 128], 3), 1e-2);
  });

  it('refuses bad images with a clear error and keeps serving', async () => {
    const png = await encode(stripes(16, 8, 4, 12, RED, BLUE), 16, 8).png().toBuffer();
    await expectInvalid(models.infer({ model: 'food', raw: { imageBase64: png.subarray(0, png.length / 2).toString('base64') } }), /could not be decoded/);
    await expectInvalid(models.infer({ model: 'food', raw: { imageBase64: Buffer.from('definitely not an image').toString('base64') } }), /could not be decoded/);
    const webp = await encode(stripes(16, 8, 4, 12, RED, BLUE), 16, 8).webp().toBuffer();
    await expectInvalid(models.infer({ model: 'food', raw: { imageBase64: webp.toString('base64') } }), /image is webp; send a JPEG or PNG/);
    await expectInvalid(models.infer({ model: 'food', raw: { imageBase64: '@@@ not base64 @@@' } }), /not base64/);
    await expectInvalid(models.infer({ model: 'food', raw: { imageBase64: '' } }), /empty/);
    await expectInvalid(models.infer({ model: 'food', raw: { text: 'a photo of pizza' } }), /classifies images/);
    const ok = await models.infer({ model: 'food', raw: { imageBase64: png.toString('base64') } });
    expect((ok.answer as ImageAnswer).top).toHaveLength(3);
  });

  it('labels text with the bag of words: positive, negative, and ignores unknown words by default', async () => {
    const pos = await models.infer({ model: 'imdb', raw: { text: 'A GREAT movie, really good!' } });
    expect(pos.answer).toEqual({ label: 'positive', score: expect.any(Number) });
    expect((pos.answer as TextAnswer).score).toBeCloseTo(text.score([1, 6, 2]), 5);
    const neg = await models.infer({ model: 'imdb', raw: { text: "Awful. Bad, bad movie; don't." } });
    expect((neg.answer as TextAnswer).label).toBe('negative');
    expect((neg.answer as TextAnswer).score).toBeCloseTo(text.score([3, 4, 6, 7]), 5);
    const empty = await models.infer({ model: 'imdb', raw: { text: '' } });
    expect((empty.answer as TextAnswer).score).toBeCloseTo(text.score([]), 5);
  });

  it('names unknown words when the manifest says so, and never crashes on odd text', async () => {
    await expectInvalid(models.infer({ model: 'imdb-strict', raw: { text: 'great zebra, great yak' } }), /unknown words "zebra", "yak"/);
    await expectInvalid(models.infer({ model: 'imdb-strict', raw: { text: 'the constructor __proto__ toString' } }), /unknown words "constructor", "proto", "tostring":/);
    await expectInvalid(models.infer({ model: 'imdb', raw: { imageBase64: 'aGVsbG8=' } }), /classifies text: send raw.text/);
    const ok = await models.infer({ model: 'imdb-strict', raw: { text: 'great good' } });
    expect((ok.answer as TextAnswer).label).toBe('positive');
  });

  it('post-processes tensor inputs too', async () => {
    const words = [0, 0, 0, 1, 1, 0, 0, 0];
    const result = await models.infer({ model: 'imdb', inputs: { words: { dtype: 'float32', shape: [1, 8], data: words } } });
    expect((result.answer as TextAnswer).label).toBe('negative');
  });

  it('refuses to activate a model whose processing does not fit it', async () => {
    const bytes = textBowModel({ vocabularySize: 8 }).bytes;
    const bad = { kind: 'text-bow', input: 'nope', vocabularySize: 8, wordIndex: {}, labels: ['n', 'p'] };
    await models.install(testManifest('mismatch', 1, bytes, { processing: bad as unknown as Processing }), await stageFile(join(dataDir, 'staging'), bytes));
    await expect(models.activate('mismatch', 1)).rejects.toMatchObject({ code: 'load_failed', message: expect.stringMatching(/names input "nope"/) });
    const wide = { kind: 'text-bow', input: 'words', vocabularySize: 9, wordIndex: {}, labels: ['n', 'p'] };
    await models.install(testManifest('mismatch', 2, bytes, { processing: wide as unknown as Processing }), await stageFile(join(dataDir, 'staging'), bytes));
    await expect(models.activate('mismatch', 2)).rejects.toMatchObject({ code: 'load_failed', message: expect.stringMatching(/vocabulary of 9.*8 wide/) });
  });
});
