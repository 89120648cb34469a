/**
 * The on-disk model store:
 *
 *   <dataDir>/models/state.json                      active versions, history, highest accepted (atomic)
 *   <dataDir>/models/<name>/<version>/manifest.json  the manifest it was installed with
 *   <dataDir>/models/<name>/<version>/info.json      inputs, outputs, opset read from the file
 *   <dataDir>/models/<name>/<version>/model.onnx     written last: a version exists once this exists
 *   <dataDir>/models/<name>/<version>/sample.bin     the sample request its manifest names by hash, once
 *                                                    delivered whole (sample.part while it arrives)
 *
 * Every write is tmp file + fsync + rename + fsync of the directory, so a `kill -9` or a power cut leaves
 * either the old or the new file, never half of one. Deleting a version renames its directory to a
 * `.trash-*` name first (atomic), then removes it; leftovers are cleaned on the next open.
 */
import { copyFile, mkdir, open, readFile, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { TMP_MARK, fsyncDir, fsyncFile, tmpPathFor, writeFileAtomic } from '@edgefleet/node-io';
import { FleetError, ManifestSchema, TensorInfoSchema, isValidName, ownEntry, sha256Hex } from '@edgefleet/protocol';
import type { Manifest, TensorInfo } from '@edgefleet/protocol';
import type { Logger } from 'pino';

export const MODEL_FILE = 'model.onnx';
export const MANIFEST_FILE = 'manifest.json';
export const INFO_FILE = 'info.json';
export const STATE_FILE = 'state.json';
export const SAMPLE_FILE = 'sample.bin';
const SAMPLE_PART = 'sample.part';

const ModelRecordSchema = z.object({
  active: z.number().int().positive().nullable(),
  /** Previously active versions, oldest first; the last one is what `rollback` returns to. */
  history: z.array(z.number().int().positive()),
  highestAccepted: z.number().int().nonnegative(),
  /** The highest rollback sequence number used for this model (a signed rollback works once); absent in files written before it was kept. */
  rollbackSeq: z.number().int().nonnegative().default(0),
});
export type ModelRecord = z.infer<typeof ModelRecordSchema>;

const StateSchema = z.object({ version: z.literal(1), models: z.record(z.string(), ModelRecordSchema) });
export type StoreState = z.infer<typeof StateSchema>;

export const VersionInfoSchema = z.object({
  irVersion: z.number(),
  opset: z.number().nullable(),
  sha256: z.string(),
  length: z.number(),
  inputs: z.array(TensorInfoSchema),
  outputs: z.array(TensorInfoSchema),
});
export type VersionInfo = z.infer<typeof VersionInfoSchema>;

/** Called at named points of the writes; a crash test kills the process from here. */
export type StepHook = (step: string) => void | Promise<void>;

let trashCounter = 0;

export function diskError(error: unknown, what: string): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new FleetError('disk_full', `no space left on the device while ${what}; free disk space and retry`);
  }
  return error;
}

/** node-io's atomic write, with the crash tests' step hook and disk-full errors in the fleet's words. */
async function writeStoreFile(path: string, data: string, hook: StepHook | undefined, step: string): Promise<void> {
  try {
    await writeFileAtomic(path, data, { beforeRename: hook ? () => hook(`${step}:tmp-written`) : undefined });
  } catch (error) {
    throw diskError(error, `writing ${path}`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false; // any stat failure means we cannot use it
  }
}

export class ModelStore {
  readonly root: string;
  state: StoreState = { version: 1, models: {} };
  private writes: Promise<unknown> = Promise.resolve();
  /** Installed versions per model (those whose model.onnx exists), with their info. */
  readonly installed = new Map<string, Map<number, { info: VersionInfo; manifest: Manifest }>>();

  private constructor(
    dataDir: string,
    private readonly logger: Logger,
    private readonly hook: StepHook | undefined,
  ) {
    this.root = join(dataDir, 'models');
  }

  static async open(dataDir: string, logger: Logger, hook?: StepHook): Promise<ModelStore> {
    const store = new ModelStore(dataDir, logger, hook);
    await mkdir(store.root, { recursive: true });
    await store.load();
    return store;
  }

  modelDir(name: string): string {
    if (!isValidName(name)) throw new FleetError('invalid_params', `invalid model name "${name}": use 1-64 letters, digits, '.', '_' or '-'`);
    return join(this.root, name);
  }
  versionDir(name: string, version: number): string {
    if (!Number.isInteger(version) || version < 1) throw new FleetError('invalid_params', `invalid version ${version}: a positive integer`);
    return join(this.modelDir(name), String(version));
  }
  modelFile(name: string, version: number): string {
    return join(this.versionDir(name, version), MODEL_FILE);
  }

  record(name: string): ModelRecord {
    return ownEntry(this.state.models, name) ?? { active: null, history: [], highestAccepted: 0, rollbackSeq: 0 };
  }

  versions(name: string): number[] {
    return [...(this.installed.get(name)?.keys() ?? [])].sort((a, b) => a - b);
  }

  has(name: string, version: number): boolean {
    return this.installed.get(name)?.has(version) ?? false;
  }

  get(name: string, version: number): { info: VersionInfo; manifest: Manifest } | undefined {
    return this.installed.get(name)?.get(version);
  }

  /**
   * Changes one model's record and persists the whole state atomically before it becomes the in-memory
   * state. Updates are serialised, so concurrent changes to different models never overwrite each other.
   */
  updateRecord(name: string, change: (record: ModelRecord) => ModelRecord, step = 'state'): Promise<ModelRecord> {
    const run = this.writes.then(async () => {
      const record = change(this.record(name));
      const next: StoreState = { version: 1, models: { ...this.state.models, [name]: record } };
      await writeStoreFile(join(this.root, STATE_FILE), `${JSON.stringify(next, null, 1)}\n`, this.hook, step);
      this.state = next;
      return record;
    });
    this.writes = run.catch(() => undefined); // the caller gets the error; the queue goes on
    return run;
  }

  private async load(): Promise<void> {
    try {
      const raw = await readFile(join(this.root, STATE_FILE), 'utf8');
      this.state = StateSchema.parse(JSON.parse(raw));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        // Atomic writes make this unexpected; keep serving what is on disk rather than refuse to start.
        this.logger.error({ err: error }, 'models/state.json is unreadable; starting with no active models');
      }
    }
    for (const entry of await readdir(this.root, { withFileTypes: true })) {
      const path = join(this.root, entry.name);
      if (entry.name.startsWith('.trash-') || entry.name.includes(TMP_MARK)) {
        await rm(path, { recursive: true, force: true });
        continue;
      }
      if (!entry.isDirectory() || !isValidName(entry.name)) continue;
      const versions = new Map<number, { info: VersionInfo; manifest: Manifest }>();
      for (const v of await readdir(path, { withFileTypes: true })) {
        const vpath = join(path, v.name);
        if (v.name.startsWith('.trash-') || v.name.includes(TMP_MARK)) {
          await rm(vpath, { recursive: true, force: true });
          continue;
        }
        if (!v.isDirectory() || !/^[1-9]\d{0,9}$/.test(v.name)) continue;
        for (const f of await readdir(vpath)) if (f.includes(TMP_MARK)) await rm(join(vpath, f), { force: true });
        if (!(await exists(join(vpath, MODEL_FILE)))) {
          // An install that died before its last step: nothing refers to it.
          this.logger.warn({ model: entry.name, version: v.name }, 'removing an incomplete install');
          await rm(vpath, { recursive: true, force: true });
          continue;
        }
        try {
          const manifest = ManifestSchema.parse(JSON.parse(await readFile(join(vpath, MANIFEST_FILE), 'utf8')));
          const info = VersionInfoSchema.parse(JSON.parse(await readFile(join(vpath, INFO_FILE), 'utf8')));
          versions.set(Number(v.name), { info, manifest });
        } catch (error) {
          this.logger.error({ err: error, model: entry.name, version: v.name }, 'stored version has an unreadable manifest or info; ignoring it');
        }
      }
      if (versions.size > 0) this.installed.set(entry.name, versions);
    }
  }

  /**
   * Moves a staged, verified file into the store: manifest.json and info.json first, model.onnx last
   * (rename, same file system; a copy + fsync + rename across file systems), then fsync the directories.
   */
  async install(manifest: Manifest, info: VersionInfo, stagedFile: string): Promise<void> {
    const { name, version } = manifest;
    const modelDir = this.modelDir(name);
    const dir = this.versionDir(name, version);
    try {
      await mkdir(dir, { recursive: true });
      await fsyncDir(this.root);
      await fsyncDir(modelDir);
      await writeStoreFile(join(dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 1)}\n`, this.hook, 'install:manifest');
      await writeStoreFile(join(dir, INFO_FILE), `${JSON.stringify(info, null, 1)}\n`, this.hook, 'install:info');
      await this.hook?.('install:before-model');
      await fsyncFile(stagedFile);
      const target = join(dir, MODEL_FILE);
      try {
        await rename(stagedFile, target);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
        const tmp = tmpPathFor(target);
        await copyFile(stagedFile, tmp);
        await fsyncFile(tmp);
        await rename(tmp, target);
        await unlink(stagedFile);
      }
      await fsyncDir(dir);
      await this.hook?.('install:done');
    } catch (error) {
      throw diskError(error, `installing ${name}@${version}`);
    }
    let versions = this.installed.get(name);
    if (!versions) this.installed.set(name, (versions = new Map()));
    versions.set(version, { info, manifest });
  }

  /** The sample request delivered for a version (models.sample), or undefined when there is none yet. */
  async readSample(name: string, version: number): Promise<Uint8Array | undefined> {
    try {
      return await readFile(join(this.versionDir(name, version), SAMPLE_FILE));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  /**
   * Appends delivered sample bytes at `offset` (resumable: a part already held is acknowledged, a gap is
   * refused with the offset to send from). Once `want.length` bytes are there and their sha256 matches the
   * signed manifest's, they move in as sample.bin (fsync + rename); a mismatch discards them.
   */
  async receiveSample(name: string, version: number, offset: number, bytes: Uint8Array, want: { sha256: string; length: number }): Promise<{ received: number; length: number; complete: boolean }> {
    const dir = this.versionDir(name, version);
    const done = { received: want.length, length: want.length, complete: true };
    if (await exists(join(dir, SAMPLE_FILE))) return done;
    const part = join(dir, SAMPLE_PART);
    const have = (await stat(part).catch(() => undefined))?.size ?? 0; // no part file yet: nothing held
    if (offset < have && offset + bytes.byteLength <= have) return { received: have, length: want.length, complete: false };
    if (offset !== have) throw new FleetError('invalid_params', `the device holds ${have} of the sample's ${want.length} bytes; send from offset ${have}`);
    if (have + bytes.byteLength > want.length) {
      throw new FleetError('too_long', `the sample would be ${have + bytes.byteLength} bytes, longer than the ${want.length} its manifest declares`);
    }
    try {
      const fh = await open(part, 'a', 0o644);
      try {
        await fh.write(bytes);
        if (have + bytes.byteLength === want.length) await fh.sync();
      } finally {
        await fh.close();
      }
      if (have + bytes.byteLength < want.length) return { received: have + bytes.byteLength, length: want.length, complete: false };
      const sha256 = sha256Hex(await readFile(part));
      if (sha256 !== want.sha256) {
        await unlink(part);
        throw new FleetError('corrupt_chunk', `the delivered sample has sha256 ${sha256}, its manifest says ${want.sha256}; send it again from offset 0`);
      }
      await rename(part, join(dir, SAMPLE_FILE));
      await fsyncDir(dir);
      return done;
    } catch (error) {
      throw diskError(error, `storing the sample of ${name}@${version}`);
    }
  }

  /** Deletes a stored version: one atomic rename out of the way, then the removal. */
  async deleteVersion(name: string, version: number): Promise<void> {
    const dir = this.versionDir(name, version);
    const trash = join(this.modelDir(name), `.trash-${version}-${process.pid}-${++trashCounter}`);
    this.installed.get(name)?.delete(version);
    try {
      await rename(dir, trash);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    await fsyncDir(this.modelDir(name));
    await this.hook?.('delete:renamed');
    await rm(trash, { recursive: true, force: true });
  }
}
