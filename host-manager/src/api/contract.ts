/**
 * The controller's operations: the contract the HTTP API, the console and the CLI
 * (through the API) are written against. Every operator action is one of these; the
 * feature folders implement them (devices/, models/, delivery/, rollouts/) and
 * main.ts puts them together.
 */
import type { CommandParams, CommandResult, ErrorBody } from '@edgefleet/protocol';
import type { AddedModel, AddOptions } from '../models/registry.js';
import type { BatchProvisionResult, ProvisionResult } from '../devices/provisioning.js';
import type { CreateRolloutInput } from '../rollouts/executor.js';
import type { AuditEntry, DeviceRecord, ModelVersionRecord, RolloutRecord, RolloutTarget } from '../state/schema.js';

/** A device as the API shows it: never its token hash. */
export type PublicDevice = Omit<DeviceRecord, 'tokenHash'> & { provisioned: boolean };

export interface HealthView {
  ok: boolean;
  broker: { connected: boolean; embedded: boolean; url: string };
  devices: { total: number; online: number };
  rollouts: { running: number };
}

export interface GroupView {
  name: string;
  devices: string[];
  online: number;
}

export type ModelView = ModelVersionRecord & { versions: number[]; activeOn: string[] };

export type RolloutView = RolloutRecord & { progress: Record<string, { received: number; total: number }> };

export interface ExecResult {
  device: string;
  ok: boolean;
  message?: string;
  error?: ErrorBody;
}

export interface SshDeliveryRequest {
  model: string;
  version?: number;
  host: string;
  port?: number;
  username: string;
  /** A private key file on the controller host; read there, never sent, logged, audited or returned. */
  keyPath: string;
  remotePath?: string;
  hostKeyFingerprint?: string;
  actor: string;
}

/** A model copied to a device over SSH (`deploy --via ssh`). */
export interface SshDeliveryView {
  model: string;
  version: number;
  target: { username: string; host: string; port: number };
  remotePath: string;
  sha256: string;
  bytes: number;
  seconds: number;
  hostKeyPinned: boolean;
}

export interface DeviceOperations {
  listDevices(): PublicDevice[];
  showDevice(id: string): PublicDevice;
  addDevice(args: { id: string; groups: string[]; actor: string }): Promise<ProvisionResult>;
  /** Many devices with one durable write (at most MAX_BATCH): all or none. */
  addDevices(args: { devices: { id: string; groups: string[] }[]; actor: string }): Promise<BatchProvisionResult>;
  /** A new device exchanges the fleet provisioning key for its own credential; undefined when the key is wrong. */
  enrol(args: { id: string; key: string | undefined }): Promise<ProvisionResult | undefined>;
  removeDevice(args: { id: string; actor: string }): Promise<{ removed: string }>;
  /** Removes those of `ids` that exist; the others are listed as not found. */
  removeDevices(args: { ids: string[]; actor: string }): Promise<{ removed: string[]; notFound: string[] }>;
  listGroups(): GroupView[];
  infer(args: { device: string; params: CommandParams<'infer'>; actor: string; timeoutMs?: number }): Promise<CommandResult<'infer'>>;
  logs(args: { device: string; lines: number }): Promise<CommandResult<'logs'>>;
  /** The original plain-text commands, to devices (answered) or on the legacy topic (not answered). */
  exec(args: { to: RolloutTarget; command: string; actor: string; via?: 'command' | 'topic' }): Promise<{ via: string; results: ExecResult[] }>;
}

export interface ModelOperations {
  listModels(name?: string): ModelVersionRecord[];
  showModel(name: string, version?: number): ModelView;
  addModel(args: { file: string; opts: AddOptions; actor: string }): Promise<AddedModel>;
  removeModel(args: { name: string; version: number; actor: string }): Promise<{ removed: boolean; blobDeleted: boolean }>;
  deliverSsh(args: SshDeliveryRequest): Promise<SshDeliveryView>;
}

export interface RolloutOperations {
  deploy(input: CreateRolloutInput): Promise<RolloutRecord>;
  listRollouts(): RolloutRecord[];
  showRollout(id: string): RolloutView;
  abortRollout(id: string, actor: string): Promise<RolloutRecord>;
  resumeRollout(id: string, actor: string): Promise<RolloutRecord>;
  /** The named rollout, or the newest one that switched devices. */
  rollbackRollout(id: string | undefined, actor: string): Promise<RolloutRecord>;
}

export interface ControllerOperations {
  /** Where uploads and keys live (the API stages uploads under it). */
  readonly dataDir: string;
  health(): HealthView;
  keys(): { keyId: string; publicKeyPem: string };
  audit(limit?: number): AuditEntry[];
}

export interface Operations extends DeviceOperations, ModelOperations, RolloutOperations, ControllerOperations {}
