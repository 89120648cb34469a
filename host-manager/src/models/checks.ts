/**
 * A version's activation check, chosen when it is added (README.models.md, "check policies"): the policy
 * (`sample`, the default when there is a sample; `zeros`, the default otherwise; `load`), whether NaN in
 * the outputs is acceptable, the sample request, and the outputs it must produce (given by the operator,
 * or computed here by onnxruntime-node when the version is added). The sample is decoded and checked
 * against the model's declared inputs with the agent's own request code (@edgefleet/device-agent), so a
 * sample a device would refuse is refused at add time with the same sentence.
 */
import { z } from 'zod';
import { CHECK_POLICIES, FleetError } from '@edgefleet/protocol';
import type { Processing, TensorInfo } from '@edgefleet/protocol';
import type { OrtTensor, ServedModel } from '@edgefleet/device-agent';
import type { VersionCheck } from '../state/schema.js';
import type { CheckFiles, ExpectedTensor } from './check-files.js';

const Sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 as the upload answered it (64 lowercase hex digits)');

/** The check as the API takes it when a version is added (`check` in JSON, or the base64 `x-model-check` header of an upload). */
export const CheckRequestSchema = z
  .object({
    policy: z.enum(CHECK_POLICIES).optional(),
    allowNaN: z.boolean().optional(),
    /** A sample request uploaded with POST /api/samples. */
    sample: Sha256.optional(),
    /** Expected outputs uploaded with POST /api/expected-outputs. */
    expected: Sha256.optional(),
    /** Run the sample through this controller's onnxruntime now and expect what it outputs. */
    expectFromLocal: z.boolean().optional(),
    atol: z.number().nonnegative().optional(),
    rtol: z.number().nonnegative().optional(),
  })
  .strict();
export type CheckRequest = z.infer<typeof CheckRequestSchema>;

/** The protocol's default tolerances (ExpectedOutputsSchema). */
export const DEFAULT_ATOL = 1e-4;
export const DEFAULT_RTOL = 1e-3;

/** The check of a version added before checks were chosen per version. */
export const LEGACY_CHECK: VersionCheck = { policy: 'zeros', allowNaN: false, sample: null, expected: null };

/** What the check needs to know about the model being added. */
export interface ModelUnderCheck {
  name: string;
  inputs: readonly TensorInfo[];
  outputs: readonly TensorInfo[];
  processing: Processing | null;
  /** The model file (for expectFromLocal). */
  file: string;
}

const invalid = (message: string) => new FleetError('invalid_params', message);
const firstLine = (error: unknown) => String((error as Error)?.message ?? error).split('\n')[0]?.slice(0, 300) ?? '';

/** Loaded only when a version is added with a sample or expectations: the controller does not need the agent's modules otherwise. */
const agentCode = () => import('@edgefleet/device-agent');

function refuseCombinations(r: CheckRequest, policy: VersionCheck['policy']): void {
  if (policy === 'sample' && !r.sample) {
    throw invalid('check policy "sample" needs a sample request: upload it (POST /api/samples) and name it in check.sample, or run hostManager models add FILE --sample SAMPLE');
  }
  if (r.sample && policy !== 'sample') throw invalid(`a sample request is only fed under check policy "sample", not "${policy}"; drop the sample or use --check sample`);
  if (r.expected && r.expectFromLocal) throw invalid('give expected outputs (--expect) or compute them here (--expect-from-local), not both');
  const expects = r.expected !== undefined || r.expectFromLocal === true;
  if (policy === 'load' && expects) throw invalid('expected outputs need a run: use check policy sample or zeros, not load');
  if (!expects && (r.atol !== undefined || r.rtol !== undefined)) throw invalid('--atol and --rtol go with expected outputs (--expect or --expect-from-local)');
}

function served(model: ModelUnderCheck): ServedModel {
  return { name: model.name, version: 0, key: model.name, inputs: model.inputs, outputNames: model.outputs.map((o) => o.name), processing: model.processing ?? undefined };
}

/** The sample's feeds, decoded and checked as a device would; refused with what does not fit. */
async function sampleFeeds(model: ModelUnderCheck, files: CheckFiles, sha256: string): Promise<Record<string, OrtTensor>> {
  const { prepareRequest } = await agentCode();
  const sample = await files.readSample(sha256);
  try {
    const params = { ...sample.body, model: model.name } as Parameters<typeof prepareRequest>[1];
    return (await prepareRequest(served(model), params, sample.binary)).feeds;
  } catch (error) {
    if (!(error instanceof FleetError)) throw error;
    throw new FleetError('invalid_input', `the sample request does not fit ${model.name}: ${error.message}`);
  }
}

/** Expected outputs checked against what the model declares: output names, dtypes, ranks, fixed dimensions, and their values. */
async function checkExpected(model: ModelUnderCheck, outputs: Record<string, ExpectedTensor>): Promise<void> {
  const { decodeTensor } = await agentCode();
  for (const [name, want] of Object.entries(outputs)) {
    const spec = model.outputs.find((o) => o.name === name);
    if (!spec) throw new FleetError('invalid_input', `the expected outputs name "${name}", but ${model.name} outputs ${model.outputs.map((o) => o.name).join(', ')}`);
    try {
      decodeTensor(`expected ${name}`, want);
    } catch (error) {
      throw new FleetError('invalid_input', `expected output ${name}: ${firstLine(error)}`);
    }
    if (spec.dtype !== want.dtype) throw new FleetError('invalid_input', `${model.name} outputs ${name} as ${spec.dtype}; the expected one is ${want.dtype}`);
    const fixed = spec.shape.length === 0 || (spec.shape.length === want.shape.length && spec.shape.every((d, i) => typeof d !== 'number' || d < 0 || d === want.shape[i]));
    if (!fixed) throw new FleetError('invalid_input', `${model.name} outputs ${name} with shape [${spec.shape.join(', ')}]; the expected one is [${want.shape.join(', ')}]`);
  }
}

/** Runs the check's input through onnxruntime-node here and answers its outputs as expectations; refuses NaN unless allowed. */
async function computeExpected(model: ModelUnderCheck, feeds: Record<string, OrtTensor>, allowNaN: boolean): Promise<Record<string, ExpectedTensor>> {
  const [{ encodeTensor }, { default: ort }] = await Promise.all([agentCode(), import('onnxruntime-node')]);
  let session: Awaited<ReturnType<typeof ort.InferenceSession.create>>;
  try {
    // the same graph optimisations as the devices (so outputs match theirs); failures reach the operator as sentences, so onnxruntime's own log stays quiet
    session = await ort.InferenceSession.create(model.file, { graphOptimizationLevel: 'all', logSeverityLevel: 4, intraOpNumThreads: 1 });
  } catch (error) {
    throw new FleetError('load_failed', `${model.name} does not load in this controller's onnxruntime ${ort.env.versions.node ?? ''}: ${firstLine(error)}`);
  }
  try {
    let results: Record<string, OrtTensor>;
    try {
      results = (await session.run(feeds)) as Record<string, OrtTensor>;
    } catch (error) {
      throw new FleetError('invalid_input', `${model.name} fails on its check input in this controller's onnxruntime, as it would on the devices: ${firstLine(error)}`);
    }
    const expected: Record<string, ExpectedTensor> = {};
    for (const name of session.outputNames) {
      const tensor = encodeTensor(results[name]!);
      const nan = tensor.data.indexOf('NaN');
      if (nan >= 0 && !allowNaN) {
        throw new FleetError('invalid_input', `${model.name} outputs NaN on its check input here (output ${name} element ${nan}); if it does so by design, allow it (--allow-nan)`);
      }
      expected[name] = tensor;
    }
    return expected;
  } finally {
    await session.release();
  }
}

/**
 * The check a version gets from what the operator asked for, every file checked against the model: refused
 * (invalid_params, invalid_input, not_found) with a sentence before anything is stored.
 */
export async function resolveCheck(request: CheckRequest | undefined, model: ModelUnderCheck, files: CheckFiles): Promise<VersionCheck> {
  const r = request ?? {};
  const policy = r.policy ?? (r.sample ? 'sample' : 'zeros');
  refuseCombinations(r, policy);
  const allowNaN = r.allowNaN ?? false;
  let sample: VersionCheck['sample'] = null;
  let feeds: Record<string, OrtTensor> | undefined;
  if (r.sample) {
    feeds = await sampleFeeds(model, files, r.sample);
    const kept = await files.readSample(r.sample);
    sample = {
      sha256: r.sample,
      length: kept.bytes.byteLength,
      headerLength: kept.headerLength ?? null,
      inputs: Object.entries(feeds).map(([name, t]) => ({ name, dtype: t.type, shape: Array.from(t.dims) })),
    };
  }
  let expected: VersionCheck['expected'] = null;
  const tolerance = { atol: r.atol ?? DEFAULT_ATOL, rtol: r.rtol ?? DEFAULT_RTOL };
  if (r.expected) {
    const outputs = await files.readExpected(r.expected);
    await checkExpected(model, outputs);
    const kept = await files.putExpected(outputs);
    expected = { sha256: kept.sha256, length: kept.length, outputs: kept.outputs, ...tolerance, from: 'operator' };
  } else if (r.expectFromLocal) {
    const { zerosFor } = await agentCode();
    const input = feeds ?? Object.fromEntries(model.inputs.map((spec) => [spec.name, zerosFor(spec)]));
    const kept = await files.putExpected(await computeExpected(model, input, allowNaN));
    expected = { sha256: kept.sha256, length: kept.length, outputs: kept.outputs, ...tolerance, from: 'controller' };
  }
  return { policy, allowNaN, sample, expected };
}

/** The check of a version as stored (versions from before per-version checks: zeros). */
export function checkOf(record: { check?: VersionCheck | undefined }): VersionCheck {
  return record.check ?? LEGACY_CHECK;
}

/** Whether two checks ask the devices for the same thing (so the same bytes with the same check are the same version). */
export function sameCheck(a: VersionCheck, b: VersionCheck): boolean {
  const key = (c: VersionCheck) => JSON.stringify([c.policy, c.allowNaN, c.sample?.sha256 ?? null, c.expected ? [c.expected.sha256, c.expected.atol, c.expected.rtol] : null]);
  return key(a) === key(b);
}

/** The check files a version names. */
export function checkFilesOf(check: VersionCheck | undefined): string[] {
  return [check?.sample?.sha256, check?.expected?.sha256].filter((s): s is string => s !== undefined);
}
