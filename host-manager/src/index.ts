export { openState, emptyState } from './state.js';
export type { FleetState, FleetDb, DeviceRecord, ModelVersionRecord, AuditEntry } from './state.js';
export { createRequester, DEFAULT_TIMEOUT_MS } from './requester.js';
export type { Requester, RequestFn } from './requester.js';
