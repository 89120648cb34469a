/**
 * The registry's content-addressed blob store, `<dataDir>/blobs/sha256/<hex>`, shared by models and images:
 * a blob is named by its sha256, moved in atomically, and a record's path is checked to stay inside it.
 * Files go in by path (a private staged copy, or a streamed upload), never as bytes held in memory.
 */
import { copyFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { fsyncDir, fsyncFile, hashFile, tmpPathFor } from '@edgefleet/node-io';
import { FleetError } from '@edgefleet/protocol';

/** Where a file being added is copied to be checked, relative to the data directory (emptied when the controller starts). */
export const INCOMING_DIR = join('blobs', 'incoming');

export interface BlobRef {
  blob: string;
  sha256: string;
}

export interface BlobStore {
  root: string;
  dir: string;
  /** Absolute path of a version's blob; refuses a record that points elsewhere. */
  path(record: BlobRef): string;
  /** The record's `blob` field for a sha256 (relative to the data directory). */
  relativePath(sha256: string): string;
  /**
   * A private copy of `file` beside the blobs (copied by the kernel, never through this process), to check and
   * then adopt or drop; `label` names the file in errors.
   */
  stage(file: string, label?: string): Promise<string>;
  /** Moves a file whose sha256 the caller computed into the store (same file system: a rename); an existing blob wins. */
  adopt(file: string, sha256: string): Promise<string>;
  /** Removes a blob and the chunk tables kept beside it. */
  remove(record: BlobRef): Promise<void>;
}

export function blobStore(dataDir: string): BlobStore {
  const root = resolve(dataDir);
  const dir = join(root, 'blobs', 'sha256');
  const checked = (sha256: string): string => {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new FleetError('internal', `"${sha256}" is not a sha256`);
    return join(dir, sha256);
  };
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
    relativePath: (sha256) => relative(root, checked(sha256)).split(sep).join('/'),
    async stage(file, label = file) {
      const incoming = join(root, INCOMING_DIR);
      await mkdir(incoming, { recursive: true, mode: 0o700 });
      const tmp = tmpPathFor(join(incoming, 'model'));
      try {
        await copyFile(file, tmp);
      } catch (error) {
        await rm(tmp, { force: true });
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') throw new FleetError('not_found', `no file ${label} on the controller host`);
        throw error;
      }
      return tmp;
    },
    async adopt(file, sha256) {
      await mkdir(dir, { recursive: true });
      const target = checked(sha256);
      const present = await stat(target).catch(() => undefined); // not there yet: moved in below
      if (present && (await hashFile(target)) === sha256) {
        await rm(file, { force: true });
        return target;
      }
      // durable as writeFileAtomic is: the bytes on disk before the name, the name on disk before we answer
      await fsyncFile(file);
      await rename(file, target);
      await fsyncDir(dir);
      return target;
    },
    async remove(record) {
      const full = this.path(record);
      await rm(full, { force: true });
      const prefix = `${record.sha256}.chunks-`;
      for (const entry of await readdir(dir).catch(() => [] as string[])) {
        if (entry.startsWith(prefix)) await rm(join(dir, entry), { force: true });
      }
    },
  };
}
