// The host manager's public API: the controller factory, and the pieces a script or
// benchmark composes without a controller (state, requests, registry, keys, delivery).
export { createManager, defaultDataDir, DEFAULT_HTTP_PORT, DEFAULT_MQTT_PORT, DEFAULT_MQTT_WS_PORT } from './manager.js';
export type { Manager, ManagerOptions, SshDeliveryView } from './manager.js';
export { openState } from './state.js';
export type { FleetState, FleetDb, DeviceRecord, ModelVersionRecord, AuditEntry, RolloutRecord, RolloutPolicy } from './state.js';
export { createRequester, DEFAULT_TIMEOUT_MS } from './requester.js';
export type { Requester, RequestFn } from './requester.js';
export { loadOrCreateFleetKeys } from './keys.js';
export type { FleetKeys } from './keys.js';
export { createRegistry, checkCompatibility } from './registry.js';
export type { Registry } from './registry.js';
export { deliverModel, DEFAULT_CHUNK_SIZE, DEFAULT_WINDOW } from './transfer.js';
export type { DeliverOptions, DeliveryTarget, DeliveryResults } from './transfer.js';
export { deliverViaSsh } from './ssh.js';
export type { SshDeliveryOptions, SshDeliveryResult } from './ssh.js';
export { runCli, EXIT } from './cli.js';
