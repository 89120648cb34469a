/**
 * The fleet's state, kept by the controller alone in one lowdb JSON file.
 * lowdb (through steno) writes a temporary file and renames it over the old
 * one, so a `kill -9` leaves either the previous or the new state, never half.
 */
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { JSONFilePreset } from 'lowdb/node';
import type { Low } from 'lowdb';
import type { DeviceInfo, Processing, TelemetrySample, TensorInfo } from '@edgefleet/protocol';

export interface DeviceRecord {
  id: string;
  groups: string[];
  /** scrypt hash of the device token (see broker's hashSecret); the token itself is never stored. */
  tokenHash: string;
  createdAt: string;
  online: boolean;
  lastSeen: string | null;
  info: DeviceInfo | null;
  telemetry: TelemetrySample | null;
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
  actor: string; // 'operator:<id>' or 'device:<id>'
  action: string;
  target?: string;
  result: 'ok' | 'error';
  detail?: unknown;
}

export interface FleetState {
  devices: Record<string, DeviceRecord>;
  /** Model name → its versions, oldest first. */
  models: Record<string, ModelVersionRecord[]>;
  /** Rollout id → rollout; its shape belongs to the rollout module. */
  rollouts: Record<string, unknown>;
  operators: Record<string, { id: string; tokenHash: string; createdAt: string }>;
  audit: AuditEntry[];
}

export type FleetDb = Low<FleetState>;

export function emptyState(): FleetState {
  return { devices: {}, models: {}, rollouts: {}, operators: {}, audit: [] };
}

export async function openState(file: string): Promise<FleetDb> {
  await mkdir(dirname(file), { recursive: true });
  const db = await JSONFilePreset<FleetState>(file, emptyState());
  db.data = { ...emptyState(), ...db.data };
  return db;
}
