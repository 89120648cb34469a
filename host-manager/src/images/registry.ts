/**
 * The image registry: `docker save` archives in the content-addressed blob store (models/blobs.ts) and an
 * index of versions in the fleet state, versioned like models: the same image (ID) with the same container
 * spec under the same name is the existing version; numbers only go up; a removed number is never reused.
 *
 * What a manifest pins is read from the archive itself (node-io's inspectArchive: the sha256 of its config,
 * which `docker load` reproduces), never taken from the sender's word; a claimed ID that differs is refused.
 */
import { rm } from 'node:fs/promises';
import { inspectArchive } from '@edgefleet/node-io';
import type { ArchiveImage } from '@edgefleet/node-io';
import { ContainerSpecSchema, FleetError, assertName, canonicalJson, describe } from '@edgefleet/protocol';
import type { ContainerSpecInput } from '@edgefleet/protocol';
import { DEFAULT_CHUNK_SIZE, hashChunks, writeChunkTable } from '../delivery/chunk-table.js';
import { blobStore } from '../models/blobs.js';
import { nextVersion, pickVersion, serialQueue } from '../models/versions.js';
import type { BlobStore } from '../models/blobs.js';
import type { FleetRepository } from '../state/repository.js';
import type { ImageVersionRecord } from '../state/schema.js';

export interface AddImageOptions {
  name: string;
  /** The operator's name for it (name:tag); informative. */
  reference?: string;
  /** How devices run it (validated here); absent: installed only. */
  container?: ContainerSpecInput | null;
  /** The image ID the sender says the archive holds; refused when the archive holds another. */
  expectId?: string;
}

export type AddedImage = ImageVersionRecord & { /** False when this image with this spec was already registered under the name. */ created: boolean };

export interface ImageRegistry {
  /** Registers an archive file the registry may consume: it is moved into the blob store, or removed. */
  addArchive(file: string, opts: AddImageOptions): Promise<AddedImage>;
  list(name?: string): ImageVersionRecord[];
  get(name: string, version?: number): ImageVersionRecord | undefined;
  require(name: string, version?: number): ImageVersionRecord;
  remove(name: string, version: number): Promise<{ removed: boolean; blobDeleted: boolean }>;
  blobPath(record: Pick<ImageVersionRecord, 'blob' | 'sha256'>): string;
}

function invalid(message: string): FleetError {
  return new FleetError('invalid_params', message);
}

function checkedName(name: string): string {
  try {
    return assertName('image name', name);
  } catch (error) {
    throw invalid((error as Error).message);
  }
}

export function createImageRegistry(state: FleetRepository, dataDir: string): ImageRegistry {
  const blobs = blobStore(dataDir);
  const serial = serialQueue();
  const get = (name: string, version?: number): ImageVersionRecord | undefined => pickVersion(state.imageVersions(name), version);
  return {
    addArchive: (file, opts) => serial(() => addArchive(state, blobs, file, opts)),
    list: (name) => (name !== undefined ? [...state.imageVersions(checkedName(name))] : state.allImageVersions()),
    get: (name, version) => get(checkedName(name), version),
    require(name, version) {
      const found = get(checkedName(name), version);
      if (found) return found;
      const known = state.imageVersions(name).map((v) => v.version);
      throw new FleetError(
        'not_found',
        version === undefined
          ? `no image named ${name} in the registry; push one with \`hostManager image push <image> --name ${name} --to <target>\``
          : `image ${name} has no version ${version}${known.length ? ` (versions: ${known.join(', ')})` : ''}`,
      );
    },
    remove: (name, version) => serial(() => removeVersion(state, blobs, name, version)),
    blobPath: (record) => blobs.path(record),
  };
}

function parseSpec(value: ContainerSpecInput | null | undefined): ImageVersionRecord['container'] {
  if (value === undefined || value === null) return null;
  const parsed = ContainerSpecSchema.safeParse(value);
  if (!parsed.success) throw invalid(`container spec: ${describe(parsed.error)}`);
  return parsed.data;
}

async function addArchive(state: FleetRepository, blobs: BlobStore, file: string, opts: AddImageOptions): Promise<AddedImage> {
  try {
    const name = checkedName(opts.name);
    const container = parseSpec(opts.container);
    let archive: ArchiveImage & { sha256: string };
    try {
      archive = await inspectArchive(file);
    } catch (error) {
      if (error instanceof FleetError && error.code === 'not_found') throw new FleetError('not_found', `cannot read the image archive ${file}`);
      throw error;
    }
    if (opts.expectId !== undefined && opts.expectId !== archive.id) {
      throw new FleetError('digest_mismatch', `the archive holds image ${archive.id}, not ${opts.expectId} as its sender said; nothing was added`);
    }
    if (archive.platform.os !== 'linux') throw invalid(`the image is for ${archive.platform.os}; devices run linux images only`);
    const versions = state.imageVersions(name);
    const same = versions.find((v) => v.image.digest === archive.id && canonicalJson(v.container) === canonicalJson(container));
    if (same) return { ...same, created: false };
    const stored = await blobs.adopt(file, archive.sha256);
    // the manifest's chunk table for the default chunk size, so the first delivery need not hash the archive again
    const table = await hashChunks(stored, DEFAULT_CHUNK_SIZE);
    await writeChunkTable(stored, { sha256: archive.sha256, length: archive.archiveBytes, size: DEFAULT_CHUNK_SIZE, chunks: table.chunks });
    const version = nextVersion(state.highestImageVersionEver(name), versions);
    const { variant, architecture } = archive.platform;
    const record: ImageVersionRecord = {
      name,
      version,
      sha256: archive.sha256,
      length: archive.archiveBytes,
      addedAt: new Date().toISOString(),
      blob: blobs.relativePath(archive.sha256),
      image: { reference: opts.reference ?? `${name}:${version}`, digest: archive.id, platform: { os: 'linux', architecture, ...(variant ? { variant } : {}) } },
      layerBytes: archive.layerBytes,
      container,
    };
    state.setImageVersions(name, [...versions, record]);
    state.recordImageVersionGiven(name, version);
    await state.write();
    return { ...record, created: true };
  } finally {
    await rm(file, { force: true }); // moved into the store, or refused: the upload is not kept either way
  }
}

async function removeVersion(state: FleetRepository, blobs: BlobStore, name: string, version: number): Promise<{ removed: boolean; blobDeleted: boolean }> {
  checkedName(name);
  const versions = state.imageVersions(name);
  const record = versions.find((v) => v.version === version);
  if (!record) return { removed: false, blobDeleted: false };
  state.setImageVersions(name, versions.filter((v) => v !== record));
  state.recordImageVersionGiven(name, version);
  await state.write();
  if (state.allImageVersions().some((v) => v.sha256 === record.sha256)) return { removed: true, blobDeleted: false };
  await blobs.remove(record);
  return { removed: true, blobDeleted: true };
}
