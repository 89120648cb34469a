/**
 * The fleet's state, kept by the controller alone in one lowdb JSON file.
 * Writes go to a temporary file that is fsync'd and renamed over the old one
 * (then the directory is fsync'd), so a `kill -9` or a power cut leaves either
 * the previous or the new state, never half of one. Concurrent writes coalesce:
 * a caller's `await db.write()` resolves only once a write that includes its
 * change is on disk.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { writeFileAtomic } from '@edgefleet/node-io';
import { Low } from 'lowdb';
import type { Adapter } from 'lowdb';
import type { DeviceInfo, ErrorBody, Processing, TelemetrySample, TensorInfo } from '@edgefleet/protocol';

export interface DeviceRecord {
  id: string;
  groups: string[];
  /** scrypt hash of the device token (see broker's hashSecret); the token itself is never stored. Empty for a device seen but never provisioned here. */
  tokenHash: string;
  createdAt: string;
  online: boolean;
  lastSeen: string | null;
  info: DeviceInfo | null;
  telemetry: TelemetrySample | null;
  /** Why it went offline, from its last will or its goodbye. */
  offlineReason?: string | null;
  /** False for a device the controller saw on an external broker without provisioning it. */
  provisioned?: boolean;
  /** Provisioned by itself with the fleet provisioning key (POST /enrol). */
  enrolled?: boolean;
}

export interface ModelVersionRecord {
  name: string;
  version: number;
  sha256: string;
  length: number;
  addedAt: string;
  /** Path of the content-addressed blob, relative to the data directory. */
  blob: string;
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  opset: number | null;
  minOnnxruntime: string | null;
  lineage: { dataset?: string; metrics?: Record<string, number>; notes?: string; gitCommit?: string } | null;
  processing: Processing | null;
}

export interface AuditEntry {
  ts: string;
  actor: string; // 'operator:<id>' or 'device:<id>' or 'controller'
  action: string;
  target?: string;
  result: 'ok' | 'error';
  detail?: unknown;
}

// ---------------------------------------------------------------- rollouts

/** What a rollout is allowed to do and when it must stop. */
export interface RolloutPolicy {
  /** Devices in the first (canary) wave; 0 = no canary wave. */
  canary: number;
  /** Cumulative percentages of the target reached after each wave that follows the canary; the last is forced to 100. */
  waves: number[];
  /** Install failures tolerated per wave, as a percentage of the wave's devices (0 = none). */
  maxFailuresPercent: number;
  /** Seconds the switched devices of a wave are watched before the next wave starts. */
  soakS: number;
  /** Error rate (errors / requests) of the new version above which the gate fails, whatever it was before. */
  maxErrorRate: number;
  /** Error rate allowed above the same devices' rate before the switch. */
  maxErrorRateIncrease: number;
  /** p95 latency of the new version divided by the old version's p95 on the same devices above which the gate fails. */
  maxLatencyRatio: number;
  /** p95 latencies under this many milliseconds never fail the gate (noise on tiny models). */
  latencyFloorMs: number;
  /** Requests the switched devices must serve during the soak for the health part of the gate to count; fewer = gate passes on install results alone, noted. */
  minRequests: number;
  /** A device offline during its wave is retried when it returns, until this many seconds after the rollout started. */
  offlineDeadlineS: number;
  /** Roll the switched devices back when a gate fails. */
  rollbackOnFailure: boolean;
}

export type RolloutStatus = 'running' | 'aborted' | 'succeeded' | 'failed' | 'rolled-back';

export type RolloutDeviceState =
  | 'pending' // not reached yet
  | 'delivering'
  | 'switched' // the new version is active
  | 'failed' // delivery or activation failed
  | 'waiting' // offline when its wave came; retried when it returns
  | 'skipped' // still offline at the deadline
  | 'rolled-back';

/** Aggregate inference health of some devices for one model version over a time window. */
export interface HealthSummary {
  requests: number;
  errors: number;
  errorRate: number | null;
  p95Ms: number | null;
  samples: number;
}

export interface RolloutDevice {
  id: string;
  wave: number;
  state: RolloutDeviceState;
  /** The version active before the switch (null = none). */
  previous: number | null;
  attempts: number;
  switchedAt?: string;
  error?: ErrorBody;
  /** Health of the previous version on this device just before the switch. */
  before?: HealthSummary;
}

export interface GateResult {
  pass: boolean;
  reasons: string[];
  install: { switched: number; failed: number; waiting: number };
  before: HealthSummary;
  after: HealthSummary;
}

export interface RolloutWave {
  index: number;
  /** 'canary' or a cumulative percentage. */
  label: string;
  devices: string[];
  state: 'pending' | 'delivering' | 'soaking' | 'passed' | 'failed';
  startedAt?: string;
  switchedAt?: string;
  soakUntil?: string;
  finishedAt?: string;
  gate?: GateResult;
}

export type RolloutTarget = { kind: 'device'; name: string } | { kind: 'group'; name: string } | { kind: 'all' };

export interface RolloutRecord {
  id: string;
  model: string;
  version: number;
  target: RolloutTarget;
  policy: RolloutPolicy;
  status: RolloutStatus;
  createdAt: string;
  updatedAt: string;
  createdBy: string;
  /** Why it stopped (failed gate, abort, rollback), in a sentence. */
  reason?: string;
  waves: RolloutWave[];
  devices: Record<string, RolloutDevice>;
  /** Offline devices are retried until then. */
  deadline: string;
  finishedAt?: string;
}

export interface GroupRecord {
  name: string;
  createdAt: string;
  description?: string;
}

export interface OperatorRecord {
  id: string;
  tokenHash: string;
  createdAt: string;
}

export interface FleetState {
  devices: Record<string, DeviceRecord>;
  groups: Record<string, GroupRecord>;
  /** Model name → its versions, oldest first. */
  models: Record<string, ModelVersionRecord[]>;
  rollouts: Record<string, RolloutRecord>;
  operators: Record<string, OperatorRecord>;
  /** Enrolment with the fleet provisioning key (off unless the controller runs with --enrolment). */
  enrolment?: { keyHash: string; createdAt: string; groups: string[] };
  /** Newest last; capped at AUDIT_LIMIT entries (oldest dropped). */
  audit: AuditEntry[];
}

export const AUDIT_LIMIT = 20_000;

export type FleetDb = Low<FleetState>;

export function emptyState(): FleetState {
  return { devices: {}, groups: {}, models: {}, rollouts: {}, operators: {}, audit: [] };
}

/** A lowdb adapter that writes atomically and durably (node-io's writeFileAtomic), coalescing bursts of writes. */
export class DurableJsonFile<T> implements Adapter<T> {
  readonly #file: string;
  #writing: Promise<void> | null = null;
  /** The next write: serialized only when it starts, so a burst of changes costs one JSON.stringify. */
  #queued: { data: T; waiters: { resolve(): void; reject(e: unknown): void }[] } | null = null;

  constructor(file: string) {
    this.#file = file;
  }

  async read(): Promise<T | null> {
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
    return JSON.parse(text) as T;
  }

  write(data: T): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#queued) {
        // A write is running and another is queued: the queued one now carries the newest data.
        this.#queued.data = data;
        this.#queued.waiters.push({ resolve, reject });
        return;
      }
      this.#queued = { data, waiters: [{ resolve, reject }] };
      if (!this.#writing) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    while (this.#queued) {
      const job = this.#queued;
      this.#queued = null;
      this.#writing = (async () => this.#writeNow(JSON.stringify(job.data)))();
      try {
        await this.#writing;
        for (const w of job.waiters) w.resolve();
      } catch (error) {
        for (const w of job.waiters) w.reject(error);
      }
    }
    this.#writing = null;
  }

  #writeNow(text: string): Promise<void> {
    return writeFileAtomic(this.#file, text, { mode: 0o600 });
  }
}

export async function openState(file: string): Promise<FleetDb> {
  await mkdir(dirname(file), { recursive: true });
  const db = new Low<FleetState>(new DurableJsonFile<FleetState>(file), emptyState());
  await db.read();
  db.data = { ...emptyState(), ...db.data };
  return db;
}

/** Appends to the audit log in memory (the caller writes), dropping the oldest entries past the cap. */
export function appendAudit(state: FleetState, entry: Omit<AuditEntry, 'ts'> & { ts?: string }): AuditEntry {
  const full: AuditEntry = { ts: entry.ts ?? new Date().toISOString(), ...entry } as AuditEntry;
  state.audit.push(full);
  if (state.audit.length > AUDIT_LIMIT) state.audit.splice(0, state.audit.length - AUDIT_LIMIT);
  return full;
}
