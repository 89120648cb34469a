/**
 * The registry's content-addressed blob store, `<dataDir>/blobs/sha256/<hex>`, shared by models and images:
 * a blob is named by its sha256, written atomically, and a record's path is checked to stay inside it.
 */
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { fsyncDir, fsyncFile, hashFile, writeFileAtomic } from '@edgefleet/node-io';
import { FleetError } from '@edgefleet/protocol';

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
  /** Stores the bytes under their sha256 (atomically; kept when already there and whole). */
  store(bytes: Uint8Array, sha256: string): Promise<string>;
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
    async store(bytes, sha256) {
      await mkdir(dir, { recursive: true });
      const target = checked(sha256);
      const present = await stat(target).catch(() => undefined); // not there yet: written below
      if (present?.size === bytes.length && (await hashFile(target)) === sha256) return target;
      await writeFileAtomic(target, bytes);
      return target;
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
