// The host manager's public API: the controller factory, its contract, and the pieces a
// script, test or benchmark composes without a controller (state, requests, registry,
// keys, delivery).
export { createManager } from './main.js';
export type { Manager, ManagerOptions } from './main.js';
export { DEFAULTS, defaultDataDir, DEFAULT_HTTP_PORT, DEFAULT_MQTT_PORT, DEFAULT_MQTT_WS_PORT } from './defaults.js';
export type { Operations, SshDeliveryView, SshImageDeliveryView, ExecResult, PublicDevice, RolloutView, ImageView, AppCommandResult } from './api/contract.js';
export { openState, FleetRepository } from './state/repository.js';
export { emptyState, FleetStateSchema } from './state/schema.js';
export type { FleetState, DeviceRecord, ModelVersionRecord, ImageVersionRecord, AuditEntry, RolloutRecord, RolloutPolicy } from './state/schema.js';
export { createRequester, DEFAULT_TIMEOUT_MS } from './devices/requester.js';
export type { Requester, RequestFn } from './devices/requester.js';
export { loadOrCreateFleetKeys } from './access/fleet-keys.js';
export type { FleetKeys } from './access/fleet-keys.js';
export { createRegistry } from './models/registry.js';
export type { Registry } from './models/registry.js';
export { checkCompatibility } from './models/compatibility.js';
export { createImageRegistry } from './images/registry.js';
export type { ImageRegistry, AddImageOptions } from './images/registry.js';
export { loadImageViaSsh } from './images/ssh.js';
export { deliverModel } from './delivery/mqtt-sender.js';
export type { DeliverOptions, DeliveryResults } from './delivery/mqtt-sender.js';
export { DEFAULT_CHUNK_SIZE } from './delivery/chunk-table.js';
export { DEFAULT_WINDOW, transferIdFor } from './delivery/manifest.js';
export type { ArtifactRecord, DeliveryTarget } from './delivery/manifest.js';
export { deliverViaSsh } from './delivery/ssh.js';
export type { SshDeliveryOptions, SshDeliveryResult } from './delivery/ssh.js';
export { runCli } from './cli/run.js';
export { EXIT } from './cli/io.js';
