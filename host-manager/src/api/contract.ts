/**
 * The controller's operations: the contract the HTTP API, the console and the CLI
 * (through the API) are written against. Every operator action is one of these; the
 * feature folders implement them (devices/, models/, images/, delivery/, rollouts/) and
 * main.ts puts them together.
 */
import type { CommandParams, CommandResult, ErrorBody } from '@edgefleet/protocol';
import type { VitalsSeries } from '../devices/vitals-history.js';
import type { AddedModel, AddOptions } from '../models/registry.js';
import type { BatchProvisionResult, ProvisionResult } from '../devices/provisioning.js';
import type { AddedImage, AddImageOptions } from '../images/registry.js';
import type { AddedAgentBundle } from '../agents/registry.js';
import type { ExpectedUpload, SampleUpload } from '../models/check-files.js';
import type { DeviceReport, DroppedCounts } from '../devices/reports.js';
import type { CreateRolloutInput } from '../rollouts/executor.js';
import type { RolloutTiming } from '../rollouts/summary.js';
import type { AgentBundleRecord, ArtifactKind, AuditEntry, DeviceRecord, ImageVersionRecord, ModelVersionRecord, RolloutRecord, RolloutTarget } from '../state/schema.js';

/** A device as the API shows it: never its token hash. */
export type PublicDevice = Omit<DeviceRecord, 'tokenHash'> & { provisioned: boolean };

export interface HealthView {
  ok: boolean;
  /** `accounts`: who holds the devices' broker credentials (the embedded broker reads the fleet state; Mosquitto's dynamic security; or the external broker itself). */
  broker: { connected: boolean; embedded: boolean; url: string; accounts: 'embedded' | 'mosquitto-dynsec' | 'external' };
  devices: { total: number; online: number };
  rollouts: { running: number };
}

export interface DeviceUpdateView {
  device: PublicDevice;
  /** What the operator must still do (e.g. restart an agent whose subscribed groups differ now). */
  notes: string[];
}

export interface GroupView {
  name: string;
  devices: string[];
  online: number;
}

export type ModelView = ModelVersionRecord & { versions: number[]; activeOn: string[] };

export type RolloutView = RolloutRecord & { progress: Record<string, { received: number; total: number }>; timing: RolloutTiming };

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

export type ImageView = ImageVersionRecord & { versions: number[]; runningOn: string[] };

/** One device's answer to an app command (`image run|stop|rm --from`). */
export interface AppCommandResult {
  device: string;
  ok: boolean;
  /** The version that runs (run), or that was stopped (stop). */
  version?: number | null;
  message?: string;
  error?: ErrorBody;
}

export interface SshImageDeliveryRequest {
  name: string;
  version?: number;
  host: string;
  port?: number;
  username: string;
  /** A private key file on the controller host; read there, never sent, logged, audited or returned. */
  keyPath: string;
  hostKeyFingerprint?: string;
  actor: string;
}

/** An image loaded into a device's engine over SSH (`image push --via ssh`). */
export interface SshImageDeliveryView {
  name: string;
  version: number;
  target: { username: string; host: string; port: number };
  image: string;
  tag: string;
  loaded: boolean;
  bytes: number;
  seconds: number;
  hostKeyPinned: boolean;
}

/** A device's answer to an inference, with the binary part of its reply (binary output tensors) when it has one. */
export interface InferAnswer {
  result: CommandResult<'infer'>;
  binary: Uint8Array | undefined;
}

export interface DeviceOperations {
  listDevices(): PublicDevice[];
  showDevice(id: string): PublicDevice;
  addDevice(args: { id: string; groups: string[]; actor: string }): Promise<ProvisionResult>;
  /** Many devices with one durable write (at most MAX_BATCH): all or none. */
  addDevices(args: { devices: { id: string; groups: string[] }[]; actor: string }): Promise<BatchProvisionResult>;
  /** A new device exchanges the fleet provisioning key for its own credential; undefined when the key is wrong. */
  enrol(args: { id: string; key: string | undefined; /** The caller's address, for the attempt limits. */ source?: string }): Promise<ProvisionResult | undefined>;
  removeDevice(args: { id: string; actor: string }): Promise<{ removed: string }>;
  /** Removes those of `ids` that exist; the others are listed as not found. */
  removeDevices(args: { ids: string[]; actor: string }): Promise<{ removed: string[]; notFound: string[] }>;
  /** Replaces its groups and/or merges its labels (a null value removes a label). */
  updateDevice(args: { id: string; groups?: string[]; labels?: Record<string, string | null>; actor: string }): Promise<DeviceUpdateView>;
  listGroups(): GroupView[];
  /** One inference through MQTT; `binary` is the binary part of a request in the binary extension's layout. */
  infer(args: { device: string; params: CommandParams<'infer'>; actor: string; timeoutMs?: number; binary?: Uint8Array }): Promise<InferAnswer>;
  logs(args: { device: string; lines: number }): Promise<CommandResult<'logs'>>;
  /** What devices reported about themselves (kept apart from the audit; each entry names its device), for one device or all. */
  deviceReports(args: { device?: string; limit?: number }): { reports: DeviceReport[]; dropped: DroppedCounts };
  /** Recent telemetry the controller kept in memory (minutes back, at most what it keeps), oldest first. */
  telemetryHistory(args: { device: string; minutes: number }): VitalsSeries & { device: string };
  /** The original plain-text commands, to devices (answered) or on the legacy topic (not answered). */
  exec(args: { to: RolloutTarget; command: string; actor: string; via?: 'command' | 'topic' }): Promise<{ via: string; results: ExecResult[] }>;
}

export interface ModelOperations {
  listModels(name?: string): ModelVersionRecord[];
  showModel(name: string, version?: number): ModelView;
  addModel(args: { file: string; opts: AddOptions; actor: string }): Promise<AddedModel>;
  /** Keeps a sample request for a version about to be added (named by its sha256 in the version's check). */
  addSample(args: { body: Uint8Array; headerLength?: number; actor: string }): Promise<SampleUpload>;
  /** Keeps expected outputs for a version about to be added. */
  addExpected(args: { json: unknown; actor: string }): Promise<ExpectedUpload>;
  removeModel(args: { name: string; version: number; actor: string }): Promise<{ removed: boolean; blobDeleted: boolean }>;
  deliverSsh(args: SshDeliveryRequest): Promise<SshDeliveryView>;
}

export interface ImageOperations {
  listImages(name?: string): ImageVersionRecord[];
  showImage(name: string, version?: number): ImageView;
  /** Registers a `docker save` archive the registry may consume (an upload, or a copy of a file on the controller host). */
  addImage(args: { file: string; opts: AddImageOptions; actor: string }): Promise<AddedImage>;
  removeImage(args: { name: string; version: number; actor: string }): Promise<{ removed: boolean; blobDeleted: boolean }>;
  /** Runs an installed version (default: the registry's newest) on the target's devices. */
  runImage(args: { app: string; version?: number; to: RolloutTarget; actor: string }): Promise<{ results: AppCommandResult[] }>;
  stopImage(args: { app: string; to: RolloutTarget; actor: string }): Promise<{ results: AppCommandResult[] }>;
  /** Removes the app (containers and images) from the target's devices; the registry keeps it. */
  removeImageFromDevices(args: { app: string; to: RolloutTarget; actor: string }): Promise<{ results: AppCommandResult[] }>;
  deliverImageSsh(args: SshImageDeliveryRequest): Promise<SshImageDeliveryView>;
}

export interface AgentOperations {
  listAgentBundles(): AgentBundleRecord[];
  /** Registers an agent bundle the registry may consume (an upload). */
  addAgentBundle(args: { file: string; healthDeadlineS?: number; actor: string }): Promise<AddedAgentBundle>;
}

export interface RolloutOperations {
  deploy(input: CreateRolloutInput): Promise<RolloutRecord>;
  listRollouts(): RolloutRecord[];
  showRollout(id: string): RolloutView;
  abortRollout(id: string, actor: string): Promise<RolloutRecord>;
  resumeRollout(id: string, actor: string): Promise<RolloutRecord>;
  /** The named rollout, or the newest one (of `kind`, when given) that switched devices. */
  rollbackRollout(id: string | undefined, actor: string, kind?: ArtifactKind): Promise<RolloutRecord>;
  /** Switches one device back from what the newest rollout of `model` switched it to. */
  rollbackDevice(args: { device: string; model: string; actor: string }): Promise<RolloutRecord>;
}

export interface ControllerOperations {
  /** Where uploads and keys live (the API stages uploads under it). */
  readonly dataDir: string;
  health(): HealthView;
  keys(): { keyId: string; publicKeyPem: string };
  /** The operator audit: operators' actions and what the controller itself saw, never a device's own word. */
  audit(limit?: number): AuditEntry[];
}

export interface Operations extends DeviceOperations, ModelOperations, ImageOperations, AgentOperations, RolloutOperations, ControllerOperations {}
