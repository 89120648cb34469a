/** Public API of the device agent's model half: store, activation, inference, tensors, processing. */
export { createModelService } from './service.js';
export type { ModelService, ModelServiceOptions, ActivationResult, GraphOptimizationLevel } from './service.js';
export { decodeTensor, encodeTensor, decodeInputs, checkFeeds, tensorFromBytes, tensorBytes, tensorInfo, zerosFor, toHalfBits, fromHalfBits } from './tensors.js';
export { prepareRequest, answerRequest } from './infer.js';
export type { InferAnswer, InferParams, OipParams, TensorMapParams, TensorMapResult, ServedModel } from './infer.js';
export { checkActivation, compareExpected } from './check.js';
export type { OrtTensor } from './tensors.js';
export { HealthCounters } from './health.js';
export { MODEL_FILE, MANIFEST_FILE, STATE_FILE } from './store.js';
export type { StepHook } from './store.js';
export { checkProcessing, preprocess, postprocess, words, softmax } from '../processing/index.js';
export type { ImageAnswer, TextAnswer, RawInput } from '../processing/index.js';
export { createInferenceServer, parseRoute, bodyFormat, DEFAULT_MAX_BODY_BYTES } from '../http.js';
export type { InferenceServer, InferenceServerOptions } from '../http.js';
