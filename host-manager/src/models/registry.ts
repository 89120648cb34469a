/**
 * The model registry: a content-addressed blob store (`<dataDir>/blobs/sha256/<hex>`)
 * and an index of versions in the fleet state (lowdb). Adding the same bytes under
 * the same name again returns the existing version; version numbers only go up and a
 * removed number is never handed out again.
 */
import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { hashFile, writeFileAtomic } from '@edgefleet/node-io';
import { join, relative, resolve, sep } from 'node:path';
import { FleetError, ProcessingSchema, assertName, chunkHashes, describe, sha256Hex } from '@edgefleet/protocol';
import type { Processing, ProcessingInput } from '@edgefleet/protocol';
import { readOnnxMetadata } from '@edgefleet/onnx';
import type { OnnxMetadata } from '@edgefleet/onnx';
import type { FleetRepository } from '../state/repository.js';
import type { ModelVersionRecord } from '../state/schema.js';
import { DEFAULT_CHUNK_SIZE, writeChunkTable } from '../delivery/chunk-table.js';
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
  /** Stores the bytes under their sha256 (atomically; kept when already there and whole). */
  store(bytes: Uint8Array, sha256: string): Promise<string>;
}

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
    async store(bytes, sha256) {
      await mkdir(dir, { recursive: true });
      const target = join(dir, sha256);
      const present = await stat(target).catch(() => undefined); // not there yet: written below
      if (present?.size === bytes.length && (await hashFile(target)) === sha256) return target;
      await writeFileAtomic(target, bytes);
      return target;
    },
  };
}

export function createRegistry(state: FleetRepository, dataDir: string): Registry {
  const blobs = blobStore(dataDir);
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
    add: (file, opts) => serial(() => addVersion(state, blobs, file, opts)),
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

/** Reads and checks an ONNX file (and the processing it declares) before anything is stored. */
async function readModel(file: string, processing: Processing | null): Promise<{ bytes: Buffer; meta: OnnxMetadata }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    throw new FleetError('not_found', `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const meta = readOnnxMetadata(bytes, file);
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

async function addVersion(state: FleetRepository, blobs: BlobStore, file: string, opts: AddOptions): Promise<AddedModel> {
  const name = checkedName(opts.name);
  const processing = opts.processing ? parseProcessing(opts.processing) : null;
  const { bytes, meta } = await readModel(file, processing);
  const sha256 = sha256Hex(bytes);
  const versions = state.modelVersions(name);
  const same = versions.find((v) => v.sha256 === sha256);
  if (same) return { ...same, created: false };
  const stored = await blobs.store(bytes, sha256);
  // the manifest's chunk table for the default chunk size, so the first delivery need not hash the file
  await writeChunkTable(stored, { sha256, length: bytes.length, size: DEFAULT_CHUNK_SIZE, chunks: chunkHashes(bytes, DEFAULT_CHUNK_SIZE) });
  const version = Math.max(state.highestVersionEver(name), ...versions.map((v) => v.version)) + 1;
  const record: ModelVersionRecord = {
    name,
    version,
    sha256,
    length: bytes.length,
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
