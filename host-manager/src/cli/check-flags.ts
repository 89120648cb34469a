/**
 * `models add` flags for the version's activation check (README.models.md of the agent: check policies).
 * A sample request and expected outputs are uploaded first (`POST /api/samples`, `POST /api/expected-outputs`),
 * then named by their sha256 in the model upload's `x-model-check` header.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { CHECK_POLICIES, splitStoredInferBody } from '@edgefleet/protocol';
import type { Client } from './client.js';
import { UsageError } from './io.js';

export interface CheckFlags {
  sample?: string;
  'sample-header-length'?: number;
  check?: (typeof CHECK_POLICIES)[number];
  'allow-nan'?: boolean;
  expect?: string;
  'expect-from-local'?: boolean;
  atol?: number;
  rtol?: number;
}

export function checkOptions<T>(y: Argv<T>) {
  return y
    .option('sample', { type: 'string', describe: 'sample request the devices run before switching: a request body as the inference API takes it (JSON, or a binary body: JSON header then tensors)' })
    .option('sample-header-length', { type: 'number', describe: 'the JSON header length of a binary --sample (default: found from the file)' })
    .option('check', { choices: CHECK_POLICIES, describe: 'activation check: sample (default with --sample), zeros (default without), load (only load the model)' })
    .option('allow-nan', { type: 'boolean', describe: 'NaN in the outputs is acceptable (a model that outputs NaN by design)' })
    .option('expect', { type: 'string', describe: 'JSON file of the outputs the check must produce: {"y": {dtype, shape, data}}, or an infer answer' })
    .option('expect-from-local', { type: 'boolean', describe: "run the check's input through the controller's onnxruntime now and expect what it outputs" })
    .option('atol', { type: 'number', describe: 'absolute tolerance of the expected outputs (default 1e-4)' })
    .option('rtol', { type: 'number', describe: 'relative tolerance of the expected outputs (default 1e-3)' });
}

async function readInput(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(resolve(file));
  } catch (error) {
    throw new UsageError(`cannot read ${what} ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

/** Uploads a sample request file as it is (JSON, or binary with its header length); answers its sha256. */
async function uploadSample(c: Client, file: string, headerLength: number | undefined): Promise<string> {
  const bytes = await readInput(file, '--sample');
  let split: ReturnType<typeof splitStoredInferBody>;
  try {
    split = splitStoredInferBody(bytes, headerLength);
  } catch (error) {
    throw new UsageError(`--sample ${file}: ${(error as Error).message}`);
  }
  const headers: Record<string, string> =
    split.headerLength === undefined ? { 'content-type': 'application/json' } : { 'inference-header-content-length': String(split.headerLength) };
  return (await c.upload<{ sha256: string }>('/api/samples', bytes, headers)).sha256;
}

/** The check as the API takes it (uploading its files), or undefined when no check flag is given. */
export async function checkRequest(c: Client, a: CheckFlags): Promise<Record<string, unknown> | undefined> {
  const check: Record<string, unknown> = {};
  if (a['sample-header-length'] !== undefined && !a.sample) throw new UsageError('--sample-header-length goes with --sample');
  if (a.check) check['policy'] = a.check;
  if (a['allow-nan']) check['allowNaN'] = true;
  if (a['expect-from-local']) check['expectFromLocal'] = true;
  if (a.atol !== undefined) check['atol'] = a.atol;
  if (a.rtol !== undefined) check['rtol'] = a.rtol;
  if (a.sample) check['sample'] = await uploadSample(c, a.sample, a['sample-header-length']);
  if (a.expect) {
    let json: unknown;
    try {
      json = JSON.parse((await readInput(a.expect, '--expect')).toString('utf8'));
    } catch (error) {
      if (error instanceof UsageError) throw error;
      throw new UsageError(`--expect ${a.expect} is not JSON: ${(error as Error).message}`);
    }
    check['expected'] = (await c.call<{ sha256: string }>('POST', '/api/expected-outputs', json)).sha256;
  }
  return Object.keys(check).length > 0 ? check : undefined;
}

/** One line on what the devices will check, for the text output. */
export function checkSummary(check: { policy: string; allowNaN: boolean; sample: { inputs: { name: string; dtype: string; shape: number[] }[] } | null; expected: { outputs: string[]; from: string } | null } | undefined): string {
  if (!check) return 'checked with zeros of its inputs before it serves';
  const what =
    check.policy === 'sample' && check.sample
      ? `its sample request (${check.sample.inputs.map((i) => `${i.name} ${i.dtype}[${i.shape.join(',')}]`).join(', ')})`
      : check.policy === 'zeros'
        ? 'zeros of its inputs'
        : 'loading only';
  const expected = check.expected ? `, expecting ${check.expected.outputs.join(', ')}${check.expected.from === 'controller' ? ' as computed here' : ''}` : '';
  return `checked with ${what}${expected}${check.allowNaN ? ', NaN allowed' : ''} before it serves`;
}
