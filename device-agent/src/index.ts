// The agent's public API: the factory, its configuration, and the parts a test or
// benchmark composes without a whole agent (model service, HTTP API, transfer receiver, containers service).
export { createAgent } from './agent.js';
export type { Agent, AgentDeps } from './agent.js';
export { loadConfig, makeConfig, parseFlags, redactConfig, ConfigError } from './config.js';
export type { AgentConfig, LoadedConfig } from './config.js';
export { createAgentLogger } from './logs.js';
export { brokerOrder } from './connection.js';
export { createModelService, createInferenceServer, encodeTensor, decodeInputs } from './models/index.js';
// The request code the controller checks a version's sample request with when it is added, and decodes binary answers with.
export { prepareRequest, decodeTensor, zerosFor, tensorFromBytes } from './models/index.js';
export type { OrtTensor, ServedModel, InferParams } from './models/index.js';
export type { ModelService, ModelServiceOptions, InferenceServer, InferenceServerOptions } from './models/index.js';
export { createTransferReceiver } from './transfer/index.js';
// the connection (own identity, retained will, jittered reconnects), the request dispatcher and the
// in-order telemetry flush: what a fleet simulator composes around its own (file-only) model store
export { DeviceConnection } from './connection.js';
export type { ConnectionEvents } from './connection.js';
export { Dispatcher } from './commands.js';
export type { DispatcherOptions, HandlerTable } from './commands.js';
export { TelemetryFlusher } from './telemetry/flush.js';
export type { TelemetryQueue } from './telemetry/flush.js';
export type { TransferReceiver, TransferReceiverOptions, ReceiverAgentBundles, ReceiverModels, ReceiverImages, DiskSpace } from './transfer/index.js';
export { createContainerService } from './containers/index.js';
export type { ContainerService, ContainerServiceOptions } from './containers/index.js';
export { RESTART_EXIT_CODE, installAgentBundle, createAgentUpdater, BundleJsonSchema, BUNDLE_ENTRY } from './update/index.js';
export type { AgentUpdater, BundleJson, InstallContext, InstalledBundle } from './update/index.js';
