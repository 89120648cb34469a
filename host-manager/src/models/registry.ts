/**
 * The model registry: a content-addressed blob store (`<dataDir>/blobs/sha256/<hex>`)
 * and an index of versions in the fleet state (lowdb). Adding the same bytes under
 * the same name again returns the existing version; version numbers only go up and a
 * removed number is never handed out again.
 */
import { readFile } from 'node:fs/promises';
import { FleetError, ProcessingSchema, assertName, chunkHashes, describe, sha256Hex } from '@edgefleet/protocol';
import type { Processing, ProcessingInput } from '@edgefleet/protocol';
import { readOnnxMetadata } from '@edgefleet/onnx';
import type { OnnxMetadata } from '@edgefleet/onnx';
import type { FleetRepository } from '../state/repository.js';
import type { ModelVersionRecord } from '../state/schema.js';
import { DEFAULT_CHUNK_SIZE, writeChunkTable } from '../delivery/chunk-table.js';
import { blobStore } from './blobs.js';
import { nextVersion, pickVersion, serialQueue } from './versions.js';
import type { BlobStore } from './blobs.js';
import { minOnnxruntimeForOpset } from './compatibility.js';
import { createCheckFiles } from './check-files.js';
import type { CheckFiles, ExpectedUpload, SampleUpload } from './check-files.js';
import { checkFilesOf, checkOf, resolveCheck, sameCheck } from './checks.js';
import type { CheckRequest } from './checks.js';

export interface AddOptions {
  name: string;
  lineage?: ModelVersionRecord['lineage'];
  /** A processing manifest as written (defaults are filled in when it is checked). */
  processing?: ProcessingInput | null;
  /** The lowest onnxruntime version the model needs; derived from the opset when omitted. */
  minOnnxruntime?: string | null;
  /** How errors name the file (the user's own name for an upload, not the staging path). */
  source?: string;
  /** How devices check the version before switching to it (models/checks.ts); zeros when omitted. */
  check?: CheckRequest;
}

export type AddedModel = ModelVersionRecord & { /** False when the same bytes were already registered under this name. */ created: boolean };

export interface Registry {
  add(file: string, opts: AddOptions): Promise<AddedModel>;
  /** Every version of one model (oldest first), or of all models. */
  list(name?: string): ModelVersionRecord[];
  /** One version, or the newest when `version` is omitted. */
  get(name: string, version?: number): ModelVersionRecord | undefined;
  /** Like get, but throws FleetError('not_found') with a sentence. */
  require(name: string, version?: number): ModelVersionRecord;
  remove(name: string, version: number): Promise<{ removed: boolean; blobDeleted: boolean }>;
  /** Absolute path of a version's blob. */
  blobPath(record: Pick<ModelVersionRecord, 'blob' | 'sha256'>): string;
  /** Keeps a sample request for a version about to be added (check.sample names it by the sha256 answered). */
  putSample(body: Uint8Array, headerLength?: number): Promise<SampleUpload>;
  /** Keeps expected outputs for a version about to be added (check.expected). */
  putExpected(json: unknown): Promise<ExpectedUpload>;
  /** The files versions' checks name (samples and expected outputs). */
  readonly checkFiles: CheckFiles;
}

function invalid(message: string): FleetError {
  return new FleetError('invalid_params', message);
}

export function createRegistry(state: FleetRepository, dataDir: string): Registry {
  const blobs = blobStore(dataDir);
  const checkFiles = createCheckFiles(dataDir);
  const namedCheckFiles = (): Set<string> => new Set(state.allModelVersions().flatMap((v) => checkFilesOf(v.check)));
  const serial = serialQueue();
  const get = (name: string, version?: number): ModelVersionRecord | undefined => pickVersion(state.modelVersions(name), version);
  return {
    add: (file, opts) => serial(() => addVersion(state, blobs, checkFiles, file, opts)),
    list(name) {
      if (name !== undefined) return [...state.modelVersions(checkedName(name))];
      return state.allModelVersions();
    },
    get: (name, version) => get(checkedName(name), version),
    require(name, version) {
      const found = get(checkedName(name), version);
      if (!found) {
        const known = state.modelVersions(name).map((v) => v.version);
        throw new FleetError(
          'not_found',
          version === undefined
            ? `no model named ${name} in the registry; add it with \`hostManager models add <file> --name ${name}\``
            : `${name} has no version ${version}${known.length ? ` (versions: ${known.join(', ')})` : ''}`,
        );
      }
      return found;
    },
    remove: (name, version) => serial(async () => {
      const removed = await removeVersion(state, blobs, name, version);
      await checkFiles.release(removed.checkFiles, namedCheckFiles(), removed.addedAt);
      return { removed: removed.removed, blobDeleted: removed.blobDeleted };
    }),
    blobPath: (record) => blobs.path(record),
    checkFiles,
    // the sweep runs between adds, so it never takes a file an add is reading
    async putSample(body, headerLength) {
      await serial(() => checkFiles.sweep(namedCheckFiles()));
      return checkFiles.putSample(body, headerLength);
    },
    async putExpected(json) {
      await serial(() => checkFiles.sweep(namedCheckFiles()));
      return checkFiles.putExpected(json);
    },
  };
}

/** Reads and checks an ONNX file (and the processing it declares) before anything is stored. */
async function readModel(file: string, processing: Processing | null, source = file): Promise<{ bytes: Buffer; meta: OnnxMetadata }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    throw new FleetError('not_found', `cannot read ${source}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const meta = readOnnxMetadata(bytes, source);
  if (processing) {
    if (!meta.inputs.some((i) => i.name === processing.input)) {
      throw invalid(`processing names input "${processing.input}", but the model's inputs are ${meta.inputs.map((i) => i.name).join(', ')}`);
    }
    if (processing.output !== undefined && !meta.outputs.some((o) => o.name === processing.output)) {
      throw invalid(`processing names output "${processing.output}", but the model's outputs are ${meta.outputs.map((o) => o.name).join(', ')}`);
    }
  }
  return { bytes, meta };
}

async function addVersion(state: FleetRepository, blobs: BlobStore, checkFiles: CheckFiles, file: string, opts: AddOptions): Promise<AddedModel> {
  const name = checkedName(opts.name);
  const processing = opts.processing ? parseProcessing(opts.processing) : null;
  const { bytes, meta } = await readModel(file, processing, opts.source);
  const check = await resolveCheck(opts.check, { name, inputs: meta.inputs, outputs: meta.outputs, processing, file }, checkFiles);
  const sha256 = sha256Hex(bytes);
  const versions = state.modelVersions(name);
  // the same bytes checked the same way are the same version; another check makes a new one
  const same = versions.find((v) => v.sha256 === sha256 && sameCheck(checkOf(v), check));
  if (same) return { ...same, created: false };
  const stored = await blobs.store(bytes, sha256);
  // the manifest's chunk table for the default chunk size, so the first delivery need not hash the file
  await writeChunkTable(stored, { sha256, length: bytes.length, size: DEFAULT_CHUNK_SIZE, chunks: chunkHashes(bytes, DEFAULT_CHUNK_SIZE) });
  const version = nextVersion(state.highestVersionEver(name), versions);
  const record: ModelVersionRecord = {
    name,
    version,
    sha256,
    length: bytes.length,
    addedAt: new Date().toISOString(),
    blob: blobs.relativePath(sha256),
    inputs: meta.inputs,
    outputs: meta.outputs,
    opset: meta.opset,
    minOnnxruntime: opts.minOnnxruntime ?? (meta.opset === null ? null : minOnnxruntimeForOpset(meta.opset)),
    lineage: opts.lineage ?? null,
    processing,
    check,
  };
  state.setModelVersions(name, [...versions, record]);
  state.recordVersionGiven(name, version);
  await state.write();
  return { ...record, created: true };
}

/**
 * Removes a version; its number is never given again, and its blob goes when no other version has the same
 * bytes. Answers the check files it named, for the caller to release.
 */
async function removeVersion(state: FleetRepository, blobs: BlobStore, name: string, version: number): Promise<{ removed: boolean; blobDeleted: boolean; checkFiles: string[]; addedAt: number }> {
  checkedName(name);
  const versions = state.modelVersions(name);
  const record = versions.find((v) => v.version === version);
  if (!record) return { removed: false, blobDeleted: false, checkFiles: [], addedAt: 0 };
  state.setModelVersions(name, versions.filter((v) => v !== record));
  state.recordVersionGiven(name, version);
  await state.write();
  const checkFiles = checkFilesOf(record.check);
  const addedAt = Date.parse(record.addedAt);
  const stillUsed = state.allModelVersions().some((v) => v.sha256 === record.sha256);
  if (stillUsed) return { removed: true, blobDeleted: false, checkFiles, addedAt };
  await blobs.remove(record);
  return { removed: true, blobDeleted: true, checkFiles, addedAt };
}

function checkedName(name: string): string {
  try {
    return assertName('model name', name);
  } catch (error) {
    throw invalid((error as Error).message);
  }
}

function parseProcessing(value: unknown): Processing {
  const parsed = ProcessingSchema.safeParse(value);
  if (!parsed.success) throw invalid(`processing manifest: ${describe(parsed.error)}`);
  return parsed.data;
}
