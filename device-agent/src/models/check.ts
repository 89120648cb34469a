/**
 * The activation check: what a loaded version must do before it may serve, as its signed manifest says
 * (`check`): run its sample request (`sample`, the default when it has one), run zeros of the declared
 * shapes with symbolic dimensions 1 (`zeros`, the default otherwise), or only load (`load`). A run fails
 * on an error, on NaN in a float output (unless `allowNaN`), and on outputs outside the expected ones'
 * tolerance. The sentence says what was fed, what failed, and what the operator can do about it; which
 * version keeps serving is for the caller to say (it knows whether there was one).
 */
import { FleetError, activationCheck, parseInferBody, sha256Hex, splitInferBody } from '@edgefleet/protocol';
import type { ActivationCheck, CheckPolicy, InferBody, Manifest } from '@edgefleet/protocol';
import { prepareRequest } from './infer.js';
import type { InferParams, ServedModel } from './infer.js';
import { decodeTensor, fromHalfBits, zerosFor } from './tensors.js';
import type { OrtTensor } from './tensors.js';

export interface CheckTarget extends ServedModel {
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
}

export interface CheckOutcome {
  policy: CheckPolicy;
  /** What was fed, e.g. "zeros of the declared input shapes (x: float32 [1, 4])". */
  fed: string | undefined;
}

const FLOATS = new Set(['float32', 'float64', 'float16']);
const firstLine = (error: unknown) => {
  const line = String((error as Error)?.message ?? error).split('\n')[0] ?? '';
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
};
const shapeText = (dims: readonly unknown[]) => `[${dims.join(', ')}]`;

const HINT = {
  zeros: 'If zeros are not a valid input for this model, add it with a sample request (hostManager models add FILE --sample SAMPLE, a request body as the inference API takes it) or check only that it loads (--check load)',
  sample: 'Check that the sample request is a valid input for this model (it is a request body as the inference API takes it), or check only that it loads (--check load)',
  nan: 'if this model outputs NaN by design, allow it (--allow-nan)',
  expected: 'check the model file and the expected outputs, or widen the tolerance',
};

class CheckFailure extends Error {}

/** Runs the check; throws smoke_test_failed with what was fed, what failed, and how to fix it. */
export async function checkActivation(target: CheckTarget, manifest: Manifest, storedSample: Uint8Array | undefined): Promise<CheckOutcome> {
  const check = activationCheck(manifest);
  if (check.policy === 'load') return { policy: 'load', fed: undefined };
  const hint = check.policy === 'zeros' ? HINT.zeros : HINT.sample;
  const fail = (fed: string, what: string, extraHint?: string): FleetError =>
    new FleetError('smoke_test_failed', `${target.key} failed its activation check (${check.policy}): fed ${fed}; ${what}. ${hint}${extraHint ? `; ${extraHint}` : ''}.`);

  let feeds: Record<string, OrtTensor>;
  try {
    feeds = check.policy === 'zeros' ? Object.fromEntries(target.inputs.map((spec) => [spec.name, zerosFor(spec)])) : await sampleFeeds(target, check, storedSample);
  } catch (error) {
    const fed = check.policy === 'zeros' ? 'zeros of the declared input shapes' : "the manifest's sample request";
    throw fail(fed, error instanceof CheckFailure ? error.message : `it does not fit the model: ${firstLine(error)}`);
  }
  const described = Object.entries(feeds).map(([name, t]) => `${name}: ${t.type} ${shapeText(t.dims)}`).join(', ');
  const fed = check.policy === 'zeros' ? `zeros of the declared input shapes, symbolic dimensions 1 (${described})` : `the manifest's sample request (${described})`;
  let results: Record<string, OrtTensor>;
  try {
    results = await target.run(feeds);
  } catch (error) {
    throw fail(fed, `onnxruntime failed on it: ${firstLine(error)}`);
  }
  for (const name of target.outputNames) {
    const tensor = results[name];
    if (!tensor) throw fail(fed, `output ${name} is missing from the results`);
    const nan = check.allowNaN ? undefined : nanCount(tensor);
    if (nan) throw fail(fed, `output ${name} contains NaN (${nan.count} of ${tensor.size} values, the first at element ${nan.first})`, HINT.nan);
  }
  if (check.expected) {
    const mismatch = compareExpected(target, results, check.expected);
    if (mismatch) throw fail(fed, mismatch, HINT.expected);
  }
  return { policy: check.policy, fed };
}

/** The sample request's feeds, through the same decoding as a request on the inference API. */
async function sampleFeeds(target: CheckTarget, check: ActivationCheck, stored: Uint8Array | undefined): Promise<Record<string, OrtTensor>> {
  const sample = check.sample;
  if (!sample) throw new CheckFailure('the manifest asks for a sample check but carries no sample');
  let body: InferBody;
  let binary: Uint8Array | undefined;
  if ('body' in sample) {
    body = parseInferBody(sample.body);
  } else {
    const bytes = 'base64' in sample ? Buffer.from(sample.base64, 'base64') : storedBytes(sample, stored);
    const split = splitInferBody(bytes, sample.headerLength);
    body = parseInferBody(split.json);
    binary = split.binary;
  }
  const params = { ...body, model: target.name } as InferParams;
  return (await prepareRequest(target, params, binary)).feeds;
}

function storedBytes(sample: { sha256: string; length: number }, stored: Uint8Array | undefined): Uint8Array {
  const what = `a sample request of ${sample.length} bytes (sha256 ${sample.sha256.slice(0, 12)}…)`;
  if (!stored) {
    throw new CheckFailure(
      `the manifest names ${what} that is not on this device; deliver it with the models.sample command (the controller sends it with the version) before activating`,
    );
  }
  if (stored.byteLength !== sample.length || sha256Hex(stored) !== sample.sha256) {
    throw new CheckFailure(`the stored sample is not ${what}: it changed on disk; deliver it again with models.sample`);
  }
  return stored;
}

function nanCount(tensor: OrtTensor): { count: number; first: number } | undefined {
  if (!FLOATS.has(tensor.type)) return undefined;
  const data = tensor.data as Float32Array | Float64Array | Uint16Array;
  const isNaNAt = tensor.type === 'float16' ? (i: number) => ((data[i] as number) & 0x7fff) > 0x7c00 : (i: number) => Number.isNaN(data[i]);
  let count = 0;
  let first = -1;
  for (let i = 0; i < data.length; i++) {
    if (!isNaNAt(i)) continue;
    if (count++ === 0) first = i;
  }
  return count > 0 ? { count, first } : undefined;
}

function valueAt(tensor: OrtTensor, i: number): number | bigint | string | boolean {
  const v = (tensor.data as ArrayLike<number | bigint | string>)[i] as number | bigint | string;
  if (tensor.type === 'float16') return fromHalfBits(v as number);
  if (tensor.type === 'bool') return v !== 0;
  return v;
}

/** The first difference between the outputs and the expected ones, as a sentence; undefined when they match. */
export function compareExpected(target: ServedModel, results: Record<string, OrtTensor>, expected: NonNullable<ActivationCheck['expected']>): string | undefined {
  const { atol, rtol } = expected;
  for (const [name, want] of Object.entries(expected.outputs)) {
    const got = results[name];
    if (!got) return `the expected outputs name "${name}", which ${target.key} does not output (it has ${target.outputNames.join(', ')})`;
    let wanted: OrtTensor;
    try {
      wanted = decodeTensor(`expected ${name}`, want);
    } catch (error) {
      return `the expected output ${name} is malformed: ${firstLine(error)}`;
    }
    if (got.type !== wanted.type || shapeText(got.dims) !== shapeText(wanted.dims)) {
      return `output ${name} is ${got.type} ${shapeText(got.dims)}, the expected one ${wanted.type} ${shapeText(wanted.dims)}`;
    }
    const float = FLOATS.has(got.type);
    for (let i = 0; i < got.size; i++) {
      const a = valueAt(got, i);
      const e = valueAt(wanted, i);
      const same = float
        ? Number.isNaN(e) ? Number.isNaN(a) : a === e || Math.abs((a as number) - (e as number)) <= atol + rtol * Math.abs(e as number)
        : a === e;
      if (!same) {
        return `output ${name} element ${i} is ${String(a)} where ${String(e)} was expected${float ? ` (within atol ${atol} + rtol ${rtol}·|expected|)` : ''}`;
      }
    }
  }
  return undefined;
}
