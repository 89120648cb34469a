// The shared I/O of the Node parts: one atomic write, file hashing, secret hashing, reading `docker save` archives.
export { writeFileAtomic, fsyncDir, fsyncFile, tmpPathFor, mib, TMP_MARK } from './files.js';
export type { AtomicWriteOptions } from './files.js';
export { hashFile } from './hashing.js';
export { hashRandomToken, hashSecret, verifySecret, verifySecretAsync, isSecretHash, decoySecretHash } from './secrets.js';
export { inspectArchive, untaggedArchive } from './docker-archive.js';
export type { ArchiveImage } from './docker-archive.js';
