/** The signed manifest of a delivery (a model or an image): what it names, for whom, until when, with the chunk table of the blob. */
import { createHash } from 'node:crypto';
import type { ManifestInput } from '@edgefleet/protocol';
import type { ImageVersionRecord, ModelVersionRecord } from '../state/schema.js';
import { estimatedMemoryBytes } from '../models/compatibility.js';

/** Chosen by `npm run bench:transfer` (see README.registry.md). */
export const DEFAULT_WINDOW = 16;
export const DEFAULT_EXPIRY_MS = 60 * 60 * 1000;
export const DEFAULT_DEADLINE_MS = 10 * 60 * 1000;

export type DeliveryTarget = { devices: string[] } | { group: string; devices: string[] };

/** What a transfer delivers: a model version, or an image version (a `docker save` archive). */
export type ArtifactRecord = ModelVersionRecord | ImageVersionRecord;

export function isImageRecord(record: ArtifactRecord): record is ImageVersionRecord {
  return 'image' in record && 'layerBytes' in record;
}

export interface ManifestOptions {
  chunkSize: number;
  target: DeliveryTarget;
  expiresInMs: number;
  rollback: boolean;
  now?: Date;
  /** A model's activation check (models/checks.ts), signed with the rest. */
  check?: ManifestInput['check'];
}

/** Deterministic per (model, version, bytes, chunk size), so a later delivery resumes a device's staging. */
export function transferIdFor(record: Pick<ModelVersionRecord, 'name' | 'version' | 'sha256'>, chunkSize: number): string {
  const digest = createHash('sha256').update(`${record.name}\n${record.version}\n${record.sha256}\n${chunkSize}`).digest('hex');
  return `t${digest.slice(0, 23)}`;
}

/** The fields every manifest has: name, version, the blob's bytes, validity, target, chunk table. */
function common(record: ArtifactRecord, hashes: { chunks: string[] }, opts: ManifestOptions) {
  const now = opts.now ?? new Date();
  return {
    name: record.name,
    version: record.version,
    sha256: record.sha256,
    length: record.length,
    issuedAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + opts.expiresInMs).toISOString(),
    target: 'group' in opts.target ? { groups: [opts.target.group] } : { devices: [...opts.target.devices] },
    chunking: { size: opts.chunkSize, sha256: hashes.chunks },
    rollback: opts.rollback,
  };
}

export function buildManifest(record: ArtifactRecord, hashes: { chunks: string[] }, opts: ManifestOptions): ManifestInput {
  if (isImageRecord(record)) {
    // the image ID read from the archive is the pin; the container spec says how devices run it
    return { kind: 'image', ...common(record, hashes, opts), image: record.image, ...(record.container ? { container: record.container } : {}) };
  }
  return {
    kind: 'model',
    ...common(record, hashes, opts),
    requires: {
      ...(record.opset !== null ? { opset: record.opset } : {}),
      ...(record.minOnnxruntime ? { onnxruntime: record.minOnnxruntime } : {}),
      memoryBytes: estimatedMemoryBytes(record.length),
    },
    ...(record.processing ? { processing: record.processing } : {}),
    ...(opts.check ? { check: opts.check } : {}),
  };
}
