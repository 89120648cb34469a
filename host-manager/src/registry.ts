/**
 * The model registry: a content-addressed blob store (`<dataDir>/blobs/sha256/<hex>`)
 * and an index of versions in the fleet state (lowdb). Adding the same bytes under
 * the same name again returns the existing version; version numbers only go up and a
 * removed number is never handed out again.
 */
import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { hashFile, mib, writeFileAtomic } from '@edgefleet/node-io';
import { join, relative, resolve, sep } from 'node:path';
import { FleetError, ProcessingSchema, assertName, chunkHashes, sha256Hex } from '@edgefleet/protocol';
import type { DeviceInfo, Processing, ProcessingInput } from '@edgefleet/protocol';
import type { FleetDb, FleetState, ModelVersionRecord } from './state.js';
import { readOnnxMetadata } from '@edgefleet/onnx';
import { DEFAULT_CHUNK_SIZE, writeChunkTable } from './chunk-table.js';

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

/**
 * The highest version number ever given per model, kept beside `models` in the same
 * state file so a removed number is never reused. (Not in FleetState's type: the
 * registry is its only reader and writer.)
 */
type RegistryState = FleetState & { modelVersionHighWater?: Record<string, number> };

function invalid(message: string): FleetError {
  return new FleetError('invalid_params', message);
}

export function createRegistry(db: FleetDb, dataDir: string): Registry {
  const root = resolve(dataDir);
  const blobDir = join(root, 'blobs', 'sha256');
  let queue: Promise<unknown> = Promise.resolve();
  /** add/remove run one at a time, so two adds of one name cannot take the same number. */
  function serial<T>(task: () => Promise<T>): Promise<T> {
    const run = queue.then(task, task);
    queue = run.catch(() => undefined);
    return run;
  }
  const state = (): RegistryState => db.data as RegistryState;

  function blobPath(record: Pick<ModelVersionRecord, 'blob' | 'sha256'>): string {
    const full = resolve(root, record.blob);
    if (!/^[0-9a-f]{64}$/.test(record.sha256) || full !== join(blobDir, record.sha256)) {
      throw new FleetError('internal', `registry record points outside the blob store (${record.blob}); the state file was edited by hand`);
    }
    return full;
  }

  async function storeBlob(bytes: Uint8Array, sha256: string): Promise<string> {
    await mkdir(blobDir, { recursive: true });
    const target = join(blobDir, sha256);
    const present = await stat(target).catch(() => undefined);
    if (present?.size === bytes.length && (await hashFile(target)) === sha256) return target;
    await writeFileAtomic(target, bytes);
    return target;
  }

  function get(name: string, version?: number): ModelVersionRecord | undefined {
    const versions = state().models[name];
    if (!versions || versions.length === 0) return undefined;
    if (version === undefined) return versions.reduce((a, b) => (b.version > a.version ? b : a));
    return versions.find((v) => v.version === version);
  }

  return {
    add(file, opts) {
      return serial(async () => {
        const name = checkedName(opts.name);
        const processing = opts.processing ? parseProcessing(opts.processing) : null;
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
        const sha256 = sha256Hex(bytes);
        const versions = state().models[name] ?? [];
        const same = versions.find((v) => v.sha256 === sha256);
        if (same) return { ...same, created: false };
        const stored = await storeBlob(bytes, sha256);
        // the manifest's chunk table for the default chunk size, so the first delivery need not hash the file
        await writeChunkTable(stored, { sha256, length: bytes.length, size: DEFAULT_CHUNK_SIZE, chunks: chunkHashes(bytes, DEFAULT_CHUNK_SIZE) });
        const highWater = state().modelVersionHighWater ?? {};
        const version = Math.max(highWater[name] ?? 0, ...versions.map((v) => v.version)) + 1;
        const record: ModelVersionRecord = {
          name,
          version,
          sha256,
          length: bytes.length,
          addedAt: new Date().toISOString(),
          blob: relative(root, join(blobDir, sha256)).split(sep).join('/'),
          inputs: meta.inputs,
          outputs: meta.outputs,
          opset: meta.opset,
          minOnnxruntime: opts.minOnnxruntime ?? (meta.opset === null ? null : minOnnxruntimeForOpset(meta.opset)),
          lineage: opts.lineage ?? null,
          processing,
        };
        state().models[name] = [...versions, record];
        state().modelVersionHighWater = { ...highWater, [name]: version };
        await db.write();
        return { ...record, created: true };
      });
    },
    list(name) {
      if (name !== undefined) return [...(state().models[checkedName(name)] ?? [])];
      return Object.values(state().models).flat();
    },
    get(name, version) {
      return get(checkedName(name), version);
    },
    require(name, version) {
      const found = get(checkedName(name), version);
      if (!found) {
        const known = (state().models[name] ?? []).map((v) => v.version);
        throw new FleetError(
          'not_found',
          version === undefined
            ? `no model named ${name} in the registry; add it with \`hostManager models add <file> --name ${name}\``
            : `${name} has no version ${version}${known.length ? ` (versions: ${known.join(', ')})` : ''}`,
        );
      }
      return found;
    },
    remove(name, version) {
      return serial(async () => {
        checkedName(name);
        const versions = state().models[name] ?? [];
        const record = versions.find((v) => v.version === version);
        if (!record) return { removed: false, blobDeleted: false };
        const rest = versions.filter((v) => v !== record);
        if (rest.length > 0) state().models[name] = rest;
        else delete state().models[name];
        const highWater = state().modelVersionHighWater ?? {};
        state().modelVersionHighWater = { ...highWater, [name]: Math.max(highWater[name] ?? 0, version) };
        await db.write();
        const stillUsed = Object.values(state().models).some((list) => list.some((v) => v.sha256 === record.sha256));
        if (stillUsed) return { removed: true, blobDeleted: false };
        const blob = blobPath(record);
        await rm(blob, { force: true });
        const prefix = `${record.sha256}.chunks-`;
        for (const entry of await readdir(blobDir).catch(() => [] as string[])) {
          if (entry.startsWith(prefix)) await rm(join(blobDir, entry), { force: true });
        }
        return { removed: true, blobDeleted: true };
      });
    },
    blobPath,
  };
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
  if (!parsed.success) {
    throw invalid(`processing manifest: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  }
  return parsed.data;
}

// ---------------------------------------------------------------- compatibility (pure)

/**
 * The first onnxruntime release that runs each default-domain opset (from the
 * onnxruntime compatibility table; conservative where releases overlap).
 */
export const OPSET_MIN_ONNXRUNTIME: readonly (readonly [opset: number, ort: string])[] = [
  [7, '0.1.4'],
  [8, '0.2.1'],
  [9, '0.3.0'],
  [10, '0.5.0'],
  [11, '1.0.0'],
  [12, '1.3.0'],
  [13, '1.6.0'],
  [14, '1.8.0'],
  [15, '1.10.0'],
  [16, '1.11.0'],
  [17, '1.13.0'],
  [18, '1.14.0'],
  [19, '1.16.0'],
  [20, '1.17.0'],
  [21, '1.18.0'],
  [22, '1.20.0'],
  [23, '1.22.0'],
];

/** The lowest onnxruntime that runs this opset, or null for an opset newer than the table knows. */
export function minOnnxruntimeForOpset(opset: number): string | null {
  if (opset <= 7) return OPSET_MIN_ONNXRUNTIME[0]![1];
  return OPSET_MIN_ONNXRUNTIME.find(([o]) => o === opset)?.[1] ?? null;
}

/** Compares dotted versions numerically: negative if a < b. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.+-]/).map((p) => Number.parseInt(p, 10) || 0);
  const pb = b.split(/[.+-]/).map((p) => Number.parseInt(p, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length, 3); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** A session needs roughly the weights twice (file + arena) plus the runtime itself. */
export function estimatedMemoryBytes(length: number): number {
  return 2 * length + 64 * 1024 * 1024;
}

/**
 * Whether a device can run a model version: its onnxruntime (opset, minimum
 * version) and its memory against the file size. Returns the reason it cannot, or undefined.
 */
export function checkCompatibility(
  record: Pick<ModelVersionRecord, 'name' | 'version' | 'opset' | 'minOnnxruntime' | 'length'>,
  device: Pick<DeviceInfo, 'onnxruntime' | 'memoryBytes'>,
): string | undefined {
  const label = `${record.name}@${record.version}`;
  if (!device.onnxruntime) return `the device has no onnxruntime, so it cannot run ${label}; install an agent build with onnxruntime`;
  const ort = device.onnxruntime.version;
  if (record.opset !== null) {
    const needed = minOnnxruntimeForOpset(record.opset);
    if (needed === null) {
      const newest = OPSET_MIN_ONNXRUNTIME[OPSET_MIN_ONNXRUNTIME.length - 1]!;
      if (compareVersions(ort, newest[1]) <= 0) {
        return `${label} uses opset ${record.opset}, newer than any onnxruntime this host knows; the device has ${ort}. Re-export the model with opset ${newest[0]} or lower`;
      }
    } else if (compareVersions(ort, needed) < 0) {
      return `${label} uses opset ${record.opset}, which needs onnxruntime ${needed} or newer; the device has ${ort}. Upgrade the agent or re-export with a lower opset`;
    }
  }
  if (record.minOnnxruntime && compareVersions(ort, record.minOnnxruntime) < 0) {
    return `${label} needs onnxruntime ${record.minOnnxruntime} or newer; the device has ${ort}`;
  }
  const needBytes = estimatedMemoryBytes(record.length);
  if (device.memoryBytes > 0 && device.memoryBytes < needBytes) {
    return `${label} (${mib(record.length, 0)} MiB) needs about ${mib(needBytes, 0)} MiB of memory; the device has ${mib(device.memoryBytes, 0)} MiB`;
  }
  return undefined;
}
