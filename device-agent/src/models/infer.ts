/**
 * One inference request, in either form, on a served model version: its tensors decoded (JSON, nested
 * JSON or binary views) and checked against the declared inputs, the outputs it asks for, and the answer
 * in the form of the request (the tensor-map answer, or the Open Inference Protocol's
 * `$inference_response`, with binary outputs where asked). The HTTP API, the MQTT `infer` command and
 * the activation check all go through here, so one request behaves the same on every path.
 */
import { DTYPE_OF, FleetError, OIP_DATATYPE, isOipRequest, sliceBinaryTensors } from '@edgefleet/protocol';
import type { CommandResult, DType, OipInferResponse, OipResponseOutput, ParsedParams, Processing, TensorInfo } from '@edgefleet/protocol';
import { postprocess, preprocess } from '../processing/index.js';
import type { RawInput } from '../processing/index.js';
import { checkFeeds, checkNames, decodeInputs, decodeTensor, encodeTensor, tensorBytes, tensorFromBytes } from './tensors.js';
import type { OrtTensor } from './tensors.js';

export type InferParams = ParsedParams<'infer'>;
export type OipParams = Extract<InferParams, { inputs: unknown[] }>;
export type TensorMapParams = Exclude<InferParams, OipParams>;
export type TensorMapResult = Extract<CommandResult<'infer'>, { latencyMs: number }>;

/** What a request needs to know about the version that serves it. */
export interface ServedModel {
  name: string;
  version: number;
  /** `name@version`, for sentences. */
  key: string;
  inputs: readonly TensorInfo[];
  outputNames: readonly string[];
  processing: Processing | undefined;
}

/** An output the request asked for, and whether it goes back as binary data. */
export interface RequestedOutput {
  name: string;
  binary: boolean;
}

export interface PreparedRequest {
  feeds: Record<string, OrtTensor>;
  /** Open Inference Protocol requests only: the outputs to answer with, in order. */
  outputs: RequestedOutput[] | undefined;
}

/** An answer and, for binary outputs, their bytes in the order the answer lists them. */
export interface InferAnswer {
  result: CommandResult<'infer'>;
  binary: Uint8Array[];
}

const bad = (message: string) => new FleetError('invalid_input', message);

/** Parameters of other servers' extensions: refused, so a client never gets an answer it did not ask for. */
const UNSUPPORTED: Record<string, string> = {
  classification: "Triton's classification extension is not supported; ask for the output tensor and rank it yourself",
  shared_memory_region: 'the shared-memory extension is not supported; send the tensor in the body (JSON or binary data)',
};

function refuseUnsupported(parameters: Record<string, unknown> | undefined, where: string): void {
  for (const key of Object.keys(parameters ?? {})) {
    const why = UNSUPPORTED[key];
    if (why) throw bad(`${where}: parameter ${key}: ${why}`);
  }
}

function flag(parameters: Record<string, unknown> | undefined, key: string, where: string): boolean | undefined {
  const value = parameters?.[key];
  if (value === undefined || typeof value === 'boolean') return value;
  throw bad(`${where}: parameters.${key} must be true or false, got ${JSON.stringify(value)}`);
}

/** Decodes and checks a request's inputs; names the outputs an Open Inference Protocol request asks for. */
export async function prepareRequest(model: ServedModel, params: InferParams, binary: Uint8Array | undefined): Promise<PreparedRequest> {
  if (isOipRequest(params)) return prepareOip(model, params, binary);
  if (binary !== undefined && binary.byteLength > 0) {
    throw bad('binary tensor data needs the Open Inference Protocol form: {"inputs": [{"name", "datatype", "shape", "parameters": {"binary_data_size"}}]}');
  }
  const { inputs, raw } = params;
  if (inputs !== undefined && raw !== undefined) throw bad('give either inputs (tensors) or raw (text or image), not both');
  if (raw !== undefined) {
    if (!model.processing) throw bad(`${model.key} declares no pre-processing in its manifest; send tensors in "inputs"`);
    return { feeds: await preprocess(model.processing, raw as RawInput, model.key, [...model.inputs]), outputs: undefined };
  }
  if (inputs !== undefined) return { feeds: decodeInputs(model.key, inputs, model.inputs), outputs: undefined };
  throw bad(`send "inputs": {name: {dtype, shape, data}} or [{name, datatype, shape, data}]; ${model.key} expects ${model.inputs.map((i) => i.name).join(', ')}`);
}

function prepareOip(model: ServedModel, params: OipParams, binary: Uint8Array | undefined): PreparedRequest {
  if (params.model_name !== undefined && params.model_name !== model.name) {
    throw bad(`the body names model "${params.model_name}", but the request is for "${model.name}"`);
  }
  if (params.model_version !== undefined && params.model_version !== String(model.version)) {
    throw new FleetError('not_found', `${model.name}@${params.model_version} is not being served; the active version is ${model.version}`);
  }
  refuseUnsupported(params.parameters, 'the request');
  checkNames(model.key, params.inputs.map((i) => i.name), model.inputs);
  const slices = sliceBinaryTensors(params.inputs, binary, 'input');
  const feeds: Record<string, OrtTensor> = {};
  params.inputs.forEach((input, i) => {
    if (Object.hasOwn(feeds, input.name)) throw bad(`input "${input.name}" is given twice`);
    refuseUnsupported(input.parameters, `input "${input.name}"`);
    const dtype: DType = DTYPE_OF[input.datatype];
    const bytes = slices[i];
    if (bytes !== undefined && input.data !== undefined) throw bad(`input "${input.name}" has both data and binary_data_size; send one`);
    if (bytes !== undefined) feeds[input.name] = tensorFromBytes(input.name, dtype, input.shape, bytes);
    else if (input.data !== undefined) feeds[input.name] = decodeTensor(input.name, { dtype, shape: input.shape, data: input.data });
    else throw bad(`input "${input.name}" has no data: give "data" (JSON) or parameters.binary_data_size (binary, after the JSON header)`);
  });
  checkFeeds(model.key, feeds, model.inputs);
  return { feeds, outputs: requestedOutputs(model, params) };
}

function requestedOutputs(model: ServedModel, params: OipParams): RequestedOutput[] {
  const allBinary = flag(params.parameters, 'binary_data_output', 'the request') ?? false;
  if (params.outputs === undefined) return model.outputNames.map((name) => ({ name, binary: allBinary }));
  const seen = new Set<string>();
  return params.outputs.map((o) => {
    if (!model.outputNames.includes(o.name)) throw bad(`${model.key} has no output "${o.name}"; it has ${model.outputNames.join(', ')}`);
    if (seen.has(o.name)) throw bad(`output "${o.name}" is asked for twice`);
    seen.add(o.name);
    refuseUnsupported(o.parameters, `output "${o.name}"`);
    return { name: o.name, binary: flag(o.parameters, 'binary_data', `output "${o.name}"`) ?? allBinary };
  });
}

/**
 * The answer in the form of the request. With `binaryAllowed` false every output goes back as JSON (for
 * callers that only pass JSON on).
 */
export function answerRequest(
  model: ServedModel,
  params: InferParams,
  prepared: PreparedRequest,
  results: Record<string, OrtTensor>,
  latencyMs: number,
  binaryAllowed: boolean,
): InferAnswer {
  if (!prepared.outputs) {
    const outputs: TensorMapResult['outputs'] = {};
    for (const name of model.outputNames) {
      const tensor = results[name];
      if (tensor) outputs[name] = encodeTensor(tensor);
    }
    const answer = model.processing ? postprocess(model.processing, results, model.outputNames) : undefined;
    const result: TensorMapResult = { model: model.name, version: model.version, outputs, latencyMs };
    if (answer !== undefined) result.answer = answer;
    return { result, binary: [] };
  }
  const binary: Uint8Array[] = [];
  const outputs = prepared.outputs.map(({ name, binary: asBinary }): OipResponseOutput => {
    const tensor = results[name];
    if (!tensor) throw new FleetError('internal', `${model.key} did not produce output "${name}"`);
    const datatype = (OIP_DATATYPE as Record<string, OipResponseOutput['datatype'] | undefined>)[tensor.type];
    if (!datatype) throw new FleetError('internal', `output "${name}" of ${model.key} is ${tensor.type}, which the protocol cannot carry`);
    const head = { name, datatype, shape: Array.from(tensor.dims) };
    if (!asBinary || !binaryAllowed) return { ...head, data: encodeTensor(tensor).data };
    const bytes = tensorBytes(tensor);
    binary.push(bytes);
    return { ...head, parameters: { binary_data_size: bytes.byteLength } };
  });
  const result: OipInferResponse = { model_name: model.name, model_version: String(model.version), outputs };
  const id = (params as OipParams).id;
  if (id !== undefined) result.id = id;
  return { result, binary };
}
