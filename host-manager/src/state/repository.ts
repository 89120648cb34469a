/**
 * The one way into the fleet's state: every read and write of the lowdb document goes
 * through here. Lookups by name ask for own entries only (the records have no
 * prototype), so any device, group, model, rollout or operator name is safe. Records
 * are returned live: a caller changes one, then awaits `write()`.
 */
import type { Low } from 'lowdb';
import { FleetError, ownEntry } from '@edgefleet/protocol';
import { AUDIT_LIMIT } from './schema.js';
import type { AgentBundleRecord, AuditEntry, DeviceRecord, EnrolmentRecord, FleetState, GroupRecord, ImageVersionRecord, ModelVersionRecord, OperatorRecord, RolloutRecord } from './schema.js';
import { openStateFile } from './store.js';
import type { StateFileOptions } from './store.js';
import { cutText } from '../text.js';

export class FleetRepository {
  readonly #db: Low<FleetState>;

  constructor(db: Low<FleetState>) {
    this.#db = db;
  }

  get #data(): FleetState {
    return this.#db.data;
  }

  /** Writes the whole state durably; resolves once a write that includes every change so far is on disk. */
  write(): Promise<void> {
    return this.#db.write();
  }

  // ---------------------------------------------------------------- devices

  device(id: string): DeviceRecord | undefined {
    return ownEntry(this.#data.devices, id);
  }

  /** The device, or not_found with where to look. */
  requireDevice(id: string): DeviceRecord {
    const d = this.device(id);
    if (!d) throw new FleetError('not_found', `no device ${id}; see \`hostManager devices list\``);
    return d;
  }

  devices(): DeviceRecord[] {
    return Object.values(this.#data.devices);
  }

  putDevice(device: DeviceRecord): void {
    this.#data.devices[device.id] = device;
  }

  removeDevice(id: string): boolean {
    if (!this.device(id)) return false;
    delete this.#data.devices[id];
    return true;
  }

  // ---------------------------------------------------------------- groups

  groups(): GroupRecord[] {
    return Object.values(this.#data.groups);
  }

  /** Records a group the first time a device joins it. */
  ensureGroup(name: string, createdAt: string): void {
    if (!ownEntry(this.#data.groups, name)) this.#data.groups[name] = { name, createdAt };
  }

  // ---------------------------------------------------------------- models

  /** The versions of one model, oldest first (empty when there are none). */
  modelVersions(name: string): ModelVersionRecord[] {
    return ownEntry(this.#data.models, name) ?? [];
  }

  allModelVersions(): ModelVersionRecord[] {
    return Object.values(this.#data.models).flat();
  }

  setModelVersions(name: string, versions: ModelVersionRecord[]): void {
    if (versions.length > 0) this.#data.models[name] = versions;
    else delete this.#data.models[name];
  }

  /** The highest version number ever given to this model (removed ones included), or 0. */
  highestVersionEver(name: string): number {
    const highWater = this.#data.modelVersionHighWater;
    return (highWater && ownEntry(highWater, name)) ?? 0;
  }

  recordVersionGiven(name: string, version: number): void {
    const highWater = this.#data.modelVersionHighWater ?? (this.#data.modelVersionHighWater = Object.create(null) as Record<string, number>);
    highWater[name] = Math.max(ownEntry(highWater, name) ?? 0, version);
  }

  /** A rollback sequence number above every one given before (the caller writes before signing with it). */
  nextRollbackSeq(now = Date.now()): number {
    const next = Math.max((this.#data.lastRollbackSeq ?? 0) + 1, Math.floor(now));
    this.#data.lastRollbackSeq = next;
    return next;
  }

  // ---------------------------------------------------------------- images

  /** The versions of one image, oldest first (empty when there are none). */
  imageVersions(name: string): ImageVersionRecord[] {
    const images = this.#data.images;
    return (images && ownEntry(images, name)) ?? [];
  }

  allImageVersions(): ImageVersionRecord[] {
    return Object.values(this.#data.images ?? {}).flat();
  }

  setImageVersions(name: string, versions: ImageVersionRecord[]): void {
    const images = this.#data.images ?? (this.#data.images = Object.create(null) as Record<string, ImageVersionRecord[]>);
    if (versions.length > 0) images[name] = versions;
    else delete images[name];
  }

  /** The highest version number ever given to this image (removed ones included), or 0. */
  highestImageVersionEver(name: string): number {
    const highWater = this.#data.imageVersionHighWater;
    return (highWater && ownEntry(highWater, name)) ?? 0;
  }

  recordImageVersionGiven(name: string, version: number): void {
    const highWater = this.#data.imageVersionHighWater ?? (this.#data.imageVersionHighWater = Object.create(null) as Record<string, number>);
    highWater[name] = Math.max(ownEntry(highWater, name) ?? 0, version);
  }

  // ---------------------------------------------------------------- agent bundles

  /** Every agent bundle in the registry, oldest first. */
  agentBundles(): AgentBundleRecord[] {
    return this.#data.agentBundles ?? [];
  }

  setAgentBundles(bundles: AgentBundleRecord[]): void {
    this.#data.agentBundles = bundles;
  }

  /** The highest agent release number ever given (removed ones included), or 0. */
  highestAgentReleaseEver(): number {
    return this.#data.agentReleaseHighWater ?? 0;
  }

  recordAgentReleaseGiven(version: number): void {
    this.#data.agentReleaseHighWater = Math.max(this.#data.agentReleaseHighWater ?? 0, version);
  }

  // ---------------------------------------------------------------- rollouts

  rollout(id: string): RolloutRecord | undefined {
    return ownEntry(this.#data.rollouts, id);
  }

  rollouts(): RolloutRecord[] {
    return Object.values(this.#data.rollouts);
  }

  putRollout(rollout: RolloutRecord): void {
    this.#data.rollouts[rollout.id] = rollout;
  }

  // ---------------------------------------------------------------- operators and enrolment

  operator(id: string): OperatorRecord | undefined {
    return ownEntry(this.#data.operators, id);
  }

  operators(): OperatorRecord[] {
    return Object.values(this.#data.operators);
  }

  putOperator(operator: OperatorRecord): void {
    this.#data.operators[operator.id] = operator;
  }

  enrolment(): EnrolmentRecord | undefined {
    return this.#data.enrolment;
  }

  setEnrolment(enrolment: EnrolmentRecord): void {
    this.#data.enrolment = enrolment;
  }

  // ---------------------------------------------------------------- audit

  /**
   * Appends to the audit log in memory (the caller writes), dropping the oldest entries past the cap.
   * The log holds what operators did and what the controller itself saw (devices' own reports are
   * kept apart, devices/reports.ts); strings in `detail` are cut to AUDIT_TEXT_LIMIT characters, since
   * some carry a device's answer (an error message, a legacy command's output).
   */
  appendAudit(entry: Omit<AuditEntry, 'ts'> & { ts?: string }): AuditEntry {
    const full = { ts: entry.ts ?? new Date().toISOString(), ...entry } as AuditEntry;
    if (full.detail !== undefined) full.detail = cutStrings(full.detail, AUDIT_TEXT_LIMIT);
    const audit = this.#data.audit;
    audit.push(full);
    if (audit.length > AUDIT_LIMIT) audit.splice(0, audit.length - AUDIT_LIMIT);
    return full;
  }

  /** The newest `limit` entries (1 to 5000), oldest first. */
  auditTail(limit = 100): AuditEntry[] {
    return this.#data.audit.slice(-Math.max(1, Math.min(limit, 5000)));
  }
}

/** Characters kept of any string in an audit entry's detail. */
export const AUDIT_TEXT_LIMIT = 1000;

function cutStrings(value: unknown, max: number, depth = 0): unknown {
  if (typeof value === 'string') return value.length <= max ? value : cutText(value, max);
  if (value === null || typeof value !== 'object' || depth > 16) return value;
  if (Array.isArray(value)) return value.map((v) => cutStrings(v, max, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = cutStrings(v, max, depth + 1);
  return out;
}

/** Opens (and validates) the state file: the controller's repository. */
export async function openState(file: string, opts: StateFileOptions = {}): Promise<FleetRepository> {
  return new FleetRepository(await openStateFile(file, opts));
}
