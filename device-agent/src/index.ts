// The agent's public API: the factory, its configuration, and the types its parts meet at.
export { createAgent } from './agent.js';
export type { Agent, AgentDeps } from './agent.js';
export { loadConfig, parseFlags, redactConfig, ConfigError } from './config.js';
export type { AgentConfig, LoadedConfig } from './config.js';
export { createAgentLogger } from './logs.js';
export type { ModelService } from './models/index.js';
export type { TransferReceiver } from './transfer.js';
export type { InferenceServer } from './http.js';
export { RESTART_EXIT_CODE, installAgentBundle, createAgentUpdater, BundleJsonSchema, BUNDLE_ENTRY } from './update/index.js';
export type { AgentUpdater, BundleJson, InstallContext, InstalledBundle } from './update/index.js';
