/**
 * The model registry: a content-addressed blob store (`<dataDir>/blobs/sha256/<hex>`)
 * and an index of versions in the fleet state (lowdb). Adding the same bytes under
 * the same name again returns the existing version; version numbers only go up and a
 * removed number is never handed out again.
 *
 * A file is never read into memory: its size is checked against `maxModelBytes` (the
 * controller's --max-model-mb), its ONNX metadata is read from the file, then a private
 * copy is made beside the blobs (by the kernel), checked again and hashed as a stream,
 * so what is checked is what is stored even if the file changes meanwhile.
 */
import { rm, stat } from 'node:fs/promises';
import { mib } from '@edgefleet/node-io';
import { FleetError, ProcessingSchema, assertName, describe } from '@edgefleet/protocol';
import type { Processing, ProcessingInput } from '@edgefleet/protocol';
import { readOnnxMetadataFromFile } from '@edgefleet/onnx';
import type { OnnxMetadata } from '@edgefleet/onnx';
import type { FleetRepository } from '../state/repository.js';
import type { ModelVersionRecord, VersionCheck } from '../state/schema.js';
import { DEFAULT_CHUNK_SIZE, hashChunks, writeChunkTable } from '../delivery/chunk-table.js';
import { DEFAULTS } from '../defaults.js';
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

export interface RegistryOptions {
  /** The largest model file accepted, in bytes (default DEFAULTS.maxModelBytes, 2 GiB). */
  maxModelBytes?: number;
}

export function createRegistry(state: FleetRepository, dataDir: string, options: RegistryOptions = {}): Registry {
  const blobs = blobStore(dataDir);
  const maxBytes = options.maxModelBytes ?? DEFAULTS.maxModelBytes;
  const checkFiles = createCheckFiles(dataDir);
  const namedCheckFiles = (): Set<string> => new Set(state.allModelVersions().flatMap((v) => checkFilesOf(v.check)));
  const serial = serialQueue();
  const get = (name: string, version?: number): ModelVersionRecord | undefined => pickVersion(state.modelVersions(name), version);
  return {
    add: (file, opts) => serial(() => addVersion(state, blobs, checkFiles, file, opts, maxBytes)),
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

/** The size of the file to add: not_found only when it is not there, too_long past the cap; `label` names it in errors. */
async function modelFileSize(file: string, label: string, maxBytes: number): Promise<number> {
  let size: number;
  try {
    const info = await stat(file);
    if (!info.isFile()) throw new FleetError('invalid_params', `${label} is not a regular file; give the path of an .onnx file`);
    size = info.size;
  } catch (error) {
    if (error instanceof FleetError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new FleetError('not_found', `no file ${label} on the controller host`);
    throw new FleetError('invalid_params', `cannot read ${label}: ${code ?? (error as Error).message}`);
  }
  if (size > maxBytes) throw modelTooLarge(size, maxBytes);
  return size;
}

/** The refusal of a model over the cap: says the cap and how to raise it. */
export function modelTooLarge(size: number | undefined, maxBytes: number): FleetError {
  const what = size === undefined ? 'the model is' : `the model is ${mib(size)} MiB,`;
  return new FleetError('too_long', `${what} over the controller's limit of ${mib(maxBytes)} MiB per model; raise it with --max-model-mb (hostManager) or maxModelBytes (createManager)`);
}

/** Reads and checks an ONNX file (and the processing it declares) before anything is stored, without loading it; `label` names it in errors. */
async function readModel(file: string, label: string, processing: Processing | null): Promise<OnnxMetadata> {
  const meta = await readOnnxMetadataFromFile(file, label);
  if (processing) {
    if (!meta.inputs.some((i) => i.name === processing.input)) {
      throw invalid(`processing names input "${processing.input}", but the model's inputs are ${meta.inputs.map((i) => i.name).join(', ')}`);
    }
    if (processing.output !== undefined && !meta.outputs.some((o) => o.name === processing.output)) {
      throw invalid(`processing names output "${processing.output}", but the model's outputs are ${meta.outputs.map((o) => o.name).join(', ')}`);
    }
  }
  return meta;
}

interface CheckedCopy {
  /** The version of this name with the same bytes checked the same way, when there is one (nothing was stored). */
  same?: ModelVersionRecord;
  stored: string;
  meta: OnnxMetadata;
  check: VersionCheck;
  hashed: { sha256: string; length: number; chunks: string[] };
}

/**
 * Copies the file beside the blobs and checks the copy (size, ONNX metadata, activation check, hashes), so
 * what is checked is what is stored even if the file changes meanwhile. The copy is moved in under its
 * sha256, or removed (also when this name has a version with the same bytes checked the same way).
 */
async function checkedCopy(
  ctx: { state: FleetRepository; blobs: BlobStore; checkFiles: CheckFiles },
  file: string,
  opts: { name: string; label: string; processing: Processing | null; check: CheckRequest | undefined; maxBytes: number },
): Promise<CheckedCopy> {
  const staged = await ctx.blobs.stage(file, opts.label);
  try {
    await modelFileSize(staged, opts.label, opts.maxBytes); // it may have grown since
    const meta = await readModel(staged, opts.label, opts.processing);
    const check = await resolveCheck(opts.check, { name: opts.name, inputs: meta.inputs, outputs: meta.outputs, processing: opts.processing, file: staged }, ctx.checkFiles);
    const hashed = await hashChunks(staged, DEFAULT_CHUNK_SIZE); // one pass: the file's sha256 and the manifest's chunk table
    // the same bytes checked the same way are the same version; another check makes a new one
    const same = ctx.state.modelVersions(opts.name).find((v) => v.sha256 === hashed.sha256 && sameCheck(checkOf(v), check));
    if (same) {
      await rm(staged, { force: true });
      return { same, stored: '', meta, check, hashed };
    }
    return { stored: await ctx.blobs.adopt(staged, hashed.sha256), meta, check, hashed };
  } catch (error) {
    await rm(staged, { force: true });
    throw error;
  }
}

async function addVersion(state: FleetRepository, blobs: BlobStore, checkFiles: CheckFiles, file: string, opts: AddOptions, maxBytes: number): Promise<AddedModel> {
  const name = checkedName(opts.name);
  const processing = opts.processing ? parseProcessing(opts.processing) : null;
  const label = opts.source ?? file;
  await modelFileSize(file, label, maxBytes);
  await readModel(file, label, processing); // refuses what is not ONNX before anything is copied
  const checked = await checkedCopy({ state, blobs, checkFiles }, file, { name, label, processing, check: opts.check, maxBytes });
  if (checked.same) return { ...checked.same, created: false };
  const { stored, meta, check, hashed } = checked;
  const { sha256, length, chunks } = hashed;
  // the manifest's chunk table for the default chunk size, so the first delivery need not hash the file
  await writeChunkTable(stored, { sha256, length, size: DEFAULT_CHUNK_SIZE, chunks });
  const versions = state.modelVersions(name);
  const version = nextVersion(state.highestVersionEver(name), versions);
  const record: ModelVersionRecord = {
    name,
    version,
    sha256,
    length,
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
