/** The signed manifest of a delivery: what it names, for whom, until when, with the chunk table of the blob. */
import { createHash } from 'node:crypto';
import type { ManifestInput } from '@edgefleet/protocol';
import type { ModelVersionRecord } from '../state/schema.js';
import { estimatedMemoryBytes } from '../models/compatibility.js';

/** Chosen by `npm run bench:transfer` (see README.registry.md). */
export const DEFAULT_WINDOW = 16;
export const DEFAULT_EXPIRY_MS = 60 * 60 * 1000;
export const DEFAULT_DEADLINE_MS = 10 * 60 * 1000;

export type DeliveryTarget = { devices: string[] } | { group: string; devices: string[] };

/** Deterministic per (model, version, bytes, chunk size), so a later delivery resumes a device's staging. */
export function transferIdFor(record: Pick<ModelVersionRecord, 'name' | 'version' | 'sha256'>, chunkSize: number): string {
  const digest = createHash('sha256').update(`${record.name}\n${record.version}\n${record.sha256}\n${chunkSize}`).digest('hex');
  return `t${digest.slice(0, 23)}`;
}

export function buildManifest(
  record: ModelVersionRecord,
  hashes: { chunks: string[] },
  opts: { chunkSize: number; target: DeliveryTarget; expiresInMs: number; rollback: boolean; now?: Date },
): ManifestInput {
  const now = opts.now ?? new Date();
  return {
    kind: 'model',
    name: record.name,
    version: record.version,
    sha256: record.sha256,
    length: record.length,
    issuedAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + opts.expiresInMs).toISOString(),
    target: 'group' in opts.target ? { groups: [opts.target.group] } : { devices: [...opts.target.devices] },
    chunking: { size: opts.chunkSize, sha256: hashes.chunks },
    rollback: opts.rollback,
    requires: {
      ...(record.opset !== null ? { opset: record.opset } : {}),
      ...(record.minOnnxruntime ? { onnxruntime: record.minOnnxruntime } : {}),
      memoryBytes: estimatedMemoryBytes(record.length),
    },
    ...(record.processing ? { processing: record.processing } : {}),
  };
}
