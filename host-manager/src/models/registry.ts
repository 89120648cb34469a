/**
 * The model registry: a content-addressed blob store (`<dataDir>/blobs/sha256/<hex>`)
 * and an index of versions in the fleet state (lowdb). Adding the same bytes under
 * the same name again returns the existing version; version numbers only go up and a
 * removed number is never handed out again. A model file is never held in memory: it is
 * hashed, walked for its metadata and copied as a stream, so its size is bounded by
 * `maxModelBytes` (the controller's --max-model-mb), not by the controller's memory.
 */
import { copyFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { fsyncDir, fsyncFile, hashFile, mib, tmpPathFor } from '@edgefleet/node-io';
import { join, relative, resolve, sep } from 'node:path';
import { FleetError, ProcessingSchema, assertName, describe } from '@edgefleet/protocol';
import type { Processing, ProcessingInput } from '@edgefleet/protocol';
import { readOnnxMetadataFromFile } from '@edgefleet/onnx';
import type { OnnxMetadata } from '@edgefleet/onnx';
import type { FleetRepository } from '../state/repository.js';
import type { ModelVersionRecord } from '../state/schema.js';
import { DEFAULT_CHUNK_SIZE, hashChunks, writeChunkTable } from '../delivery/chunk-table.js';
import { DEFAULTS } from '../defaults.js';
import { minOnnxruntimeForOpset } from './compatibility.js';

export interface AddOptions {
  name: string;
  lineage?: ModelVersionRecord['lineage'];
  /** A processing manifest as written (defaults are filled in when it is checked). */
  processing?: ProcessingInput | null;
  /** The lowest onnxruntime version the model needs; derived from the opset when omitted. */
  minOnnxruntime?: string | null;
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
}

function invalid(message: string): FleetError {
  return new FleetError('invalid_params', message);
}

/** The content-addressed blob store under `<dataDir>/blobs/sha256`. */
interface BlobStore {
  root: string;
  dir: string;
  /** Absolute path of a version's blob; refuses a record that points elsewhere. */
  path(record: Pick<ModelVersionRecord, 'blob' | 'sha256'>): string;
  /** A private copy of `file` beside the blobs (copied by the kernel, never through this process), to check and then commit or drop. */
  stage(file: string): Promise<string>;
  /** Moves a staged copy in under its sha256 (fsync, rename, fsync of the directory); an existing whole blob is kept instead. */
  commit(staged: string, sha256: string, length: number): Promise<string>;
}

/** Where a file being added is copied to be checked, relative to the data directory (emptied when the controller starts). */
export const INCOMING_DIR = join('blobs', 'incoming');

function blobStore(dataDir: string): BlobStore {
  const root = resolve(dataDir);
  const dir = join(root, 'blobs', 'sha256');
  return {
    root,
    dir,
    path(record) {
      const full = resolve(root, record.blob);
      if (!/^[0-9a-f]{64}$/.test(record.sha256) || full !== join(dir, record.sha256)) {
        throw new FleetError('internal', `registry record points outside the blob store (${record.blob}); the state file was edited by hand`);
      }
      return full;
    },
    async stage(file) {
      const incoming = join(root, INCOMING_DIR);
      await mkdir(incoming, { recursive: true, mode: 0o700 });
      const tmp = tmpPathFor(join(incoming, 'model'));
      try {
        await copyFile(file, tmp);
      } catch (error) {
        await rm(tmp, { force: true });
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') throw new FleetError('not_found', `no file ${file} on the controller host`);
        throw error;
      }
      return tmp;
    },
    async commit(staged, sha256, length) {
      const target = join(dir, sha256);
      const present = await stat(target).catch(() => undefined); // not there yet: moved in below
      if (present?.size === length && (await hashFile(target)) === sha256) {
        await rm(staged, { force: true });
        return target;
      }
      await fsyncFile(staged);
      await mkdir(dir, { recursive: true });
      await rename(staged, target);
      await fsyncDir(dir);
      return target;
    },
  };
}

export interface RegistryOptions {
  /** The largest model file accepted, in bytes (default DEFAULTS.maxModelBytes, 2 GiB). */
  maxModelBytes?: number;
}

export function createRegistry(state: FleetRepository, dataDir: string, options: RegistryOptions = {}): Registry {
  const blobs = blobStore(dataDir);
  const maxBytes = options.maxModelBytes ?? DEFAULTS.maxModelBytes;
  let queue: Promise<unknown> = Promise.resolve();
  /** add/remove run one at a time, so two adds of one name cannot take the same number. */
  function serial<T>(task: () => Promise<T>): Promise<T> {
    const run = queue.then(task, task);
    queue = run.catch(() => undefined);
    return run;
  }
  function get(name: string, version?: number): ModelVersionRecord | undefined {
    const versions = state.modelVersions(name);
    if (versions.length === 0) return undefined;
    if (version === undefined) return versions.reduce((a, b) => (b.version > a.version ? b : a));
    return versions.find((v) => v.version === version);
  }
  return {
    add: (file, opts) => serial(() => addVersion(state, blobs, file, opts, maxBytes)),
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
    remove: (name, version) => serial(() => removeVersion(state, blobs, name, version)),
    blobPath: (record) => blobs.path(record),
  };
}

/** The size of the file to add: not_found only when it is not there, too_long past the cap. */
async function modelFileSize(file: string, maxBytes: number): Promise<number> {
  let size: number;
  try {
    const s = await stat(file);
    if (!s.isFile()) throw new FleetError('invalid_params', `${file} is not a regular file; give the path of an .onnx file`);
    size = s.size;
  } catch (error) {
    if (error instanceof FleetError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new FleetError('not_found', `no file ${file} on the controller host`);
    throw new FleetError('invalid_params', `cannot read ${file}: ${code ?? (error as Error).message}`);
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

/**
 * Copies the file beside the blobs and checks the copy (size, ONNX metadata, hashes), so what is checked
 * is what is stored even if the file changes meanwhile; the version of this name with the same bytes
 * instead when there is one. The copy is moved in under its sha256, or removed.
 */
async function checkedCopy(
  state: FleetRepository,
  blobs: BlobStore,
  file: string,
  opts: { name: string; processing: Processing | null; maxBytes: number },
): Promise<{ same: ModelVersionRecord } | { stored: string; meta: OnnxMetadata; hashed: { sha256: string; length: number; chunks: string[] } }> {
  const staged = await blobs.stage(file);
  try {
    await modelFileSize(staged, opts.maxBytes); // it may have grown since
    const meta = await readModel(staged, file, opts.processing);
    const hashed = await hashChunks(staged, DEFAULT_CHUNK_SIZE); // one pass: the file's sha256 and the manifest's chunk table
    const same = state.modelVersions(opts.name).find((v) => v.sha256 === hashed.sha256);
    if (same) {
      await rm(staged, { force: true });
      return { same };
    }
    return { stored: await blobs.commit(staged, hashed.sha256, hashed.length), meta, hashed };
  } catch (error) {
    await rm(staged, { force: true });
    throw error;
  }
}

async function addVersion(state: FleetRepository, blobs: BlobStore, file: string, opts: AddOptions, maxBytes: number): Promise<AddedModel> {
  const name = checkedName(opts.name);
  const processing = opts.processing ? parseProcessing(opts.processing) : null;
  await modelFileSize(file, maxBytes);
  await readModel(file, file, processing); // refuses what is not ONNX before anything is copied
  const checked = await checkedCopy(state, blobs, file, { name, processing, maxBytes });
  if ('same' in checked) return { ...checked.same, created: false };
  const { stored, meta, hashed } = checked;
  const { sha256, length, chunks } = hashed;
  const versions = state.modelVersions(name);
  await writeChunkTable(stored, { sha256, length, size: DEFAULT_CHUNK_SIZE, chunks });
  const version = Math.max(state.highestVersionEver(name), ...versions.map((v) => v.version)) + 1;
  const record: ModelVersionRecord = {
    name,
    version,
    sha256,
    length,
    addedAt: new Date().toISOString(),
    blob: relative(blobs.root, join(blobs.dir, sha256)).split(sep).join('/'),
    inputs: meta.inputs,
    outputs: meta.outputs,
    opset: meta.opset,
    minOnnxruntime: opts.minOnnxruntime ?? (meta.opset === null ? null : minOnnxruntimeForOpset(meta.opset)),
    lineage: opts.lineage ?? null,
    processing,
  };
  state.setModelVersions(name, [...versions, record]);
  state.recordVersionGiven(name, version);
  await state.write();
  return { ...record, created: true };
}

/** Removes a version; its number is never given again, and its blob goes when no other version has the same bytes. */
async function removeVersion(state: FleetRepository, blobs: BlobStore, name: string, version: number): Promise<{ removed: boolean; blobDeleted: boolean }> {
  checkedName(name);
  const versions = state.modelVersions(name);
  const record = versions.find((v) => v.version === version);
  if (!record) return { removed: false, blobDeleted: false };
  state.setModelVersions(name, versions.filter((v) => v !== record));
  state.recordVersionGiven(name, version);
  await state.write();
  const stillUsed = state.allModelVersions().some((v) => v.sha256 === record.sha256);
  if (stillUsed) return { removed: true, blobDeleted: false };
  await rm(blobs.path(record), { force: true });
  const prefix = `${record.sha256}.chunks-`;
  for (const entry of await readdir(blobs.dir).catch(() => [] as string[])) {
    if (entry.startsWith(prefix)) await rm(join(blobs.dir, entry), { force: true });
  }
  return { removed: true, blobDeleted: true };
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
