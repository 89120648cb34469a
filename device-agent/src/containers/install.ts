/**
 * Installing an image from a `docker save` archive whose signed manifest has been verified (signature,
 * target, expiry, anti-rollback: the transfer receiver's job). Deny, verify, then act:
 *
 *   1. the manifest is an image manifest whose platform (if it names one) this board runs
 *   2. the archive has the manifest's exact length and sha256
 *   3. the archive holds one image whose config hashes to the pinned ID, for this board's platform
 *   4. the engine's data root has room for the archive's copy and the unpacked layers
 *   5. the engine loads it (tags stripped); what it reports loaded must be the pinned ID, with the
 *      platform checked again on what the engine now holds. Otherwise every image the load added is removed.
 *   6. the agent tags it edgefleet/<device>:<app>.v<version> and records the release (image ID + spec).
 *
 * Steps 1-4 refuse with nothing loaded; step 5 is the engine's word, kept even though 3 checked the same
 * thing, because the engine reads the archive itself (an archive can be read two ways; the engine's way is
 * the one that runs).
 */
import { createReadStream } from 'node:fs';
import { stat, statfs } from 'node:fs/promises';
import type { Logger } from 'pino';
import { FleetError } from '@edgefleet/protocol';
import type { Manifest } from '@edgefleet/protocol';
import { inspectArchive, untaggedArchive } from '@edgefleet/node-io';
import type { ArchiveImage } from '@edgefleet/node-io';
import { BUSY_ENGINE_MS } from './engine.js';
import type { Engine } from './engine.js';
import { imageTag } from './labels.js';
import { platformMismatch } from './platform.js';
import type { BoardPlatform } from './platform.js';
import type { AppStore } from './state.js';

export interface InstallDeps {
  device: string;
  board: BoardPlatform;
  engine: Engine;
  store: AppStore;
  logger: Logger;
  /** The engine's data root as this agent sees it (default: the engine's DockerRootDir). */
  engineRoot?: string | undefined;
  /** Bytes kept free beyond what the image needs. */
  reserveBytes?: number;
}

export interface InstallOptions {
  /** The caller checked the archive's length and sha256 against the manifest just before (the transfer's commit): not hashed again. */
  sha256Verified?: boolean;
}

export interface InstallResult {
  app: string;
  version: number;
  image: string;
  /** False when the image was already on the engine and no load was needed. */
  loaded: boolean;
}

/** The checks that need only the manifest: what the transfer can refuse before a byte is sent. */
export function checkImageManifest(manifest: Manifest, board: BoardPlatform): FleetError | undefined {
  const where = `${manifest.name}@${manifest.version}`;
  if (manifest.kind !== 'image' || !manifest.image) return new FleetError('invalid_params', `${where} is a ${manifest.kind} manifest, not an image`);
  const platform = manifest.image.platform;
  const mismatch = platform ? platformMismatch(platform, board) : undefined;
  return mismatch ? new FleetError('incompatible', `${where}: ${mismatch}`) : undefined;
}

async function checkArchive(manifest: Manifest, path: string, board: BoardPlatform, sha256Verified: boolean): Promise<ArchiveImage> {
  const where = `${manifest.name}@${manifest.version}`;
  const size = await stat(path).then(
    (s) => s.size,
    () => {
      throw new FleetError('not_found', `the image archive for ${where} is missing (${path}); send the image again`);
    },
  );
  if (size < manifest.length) throw new FleetError('truncated', `the image archive for ${where} is ${size} bytes, the manifest says ${manifest.length}; resume the transfer`);
  if (size > manifest.length) throw new FleetError('too_long', `the image archive for ${where} is ${size} bytes, longer than the ${manifest.length} the manifest declares`);
  const archive = await inspectArchive(path, { hash: !sha256Verified });
  if (archive.sha256 !== undefined && archive.sha256 !== manifest.sha256) {
    throw new FleetError('corrupt_chunk', `the image archive for ${where} has sha256 ${archive.sha256}, the manifest says ${manifest.sha256}; send it again`);
  }
  const pinned = manifest.image!.digest;
  if (archive.id !== pinned) {
    throw new FleetError('digest_mismatch', `the archive for ${where} holds image ${archive.id}, but the signed manifest pins ${pinned}; nothing was loaded`);
  }
  const mismatch = platformMismatch(archive.platform, board);
  if (mismatch) throw new FleetError('incompatible', `${where}: ${mismatch}; nothing was loaded`);
  return archive;
}

async function checkRoom(deps: InstallDeps, archive: ArchiveImage, where: string): Promise<void> {
  const root = deps.engineRoot ?? (await deps.engine.status(BUSY_ENGINE_MS)).rootDir;
  let free: number;
  try {
    if (!root) throw new Error('the engine does not say where its data root is');
    const s = await statfs(root);
    free = s.bavail * s.bsize;
  } catch (error) {
    // an agent in its own mount namespace may not see the engine's disk: the engine's own ENOSPC is then the check
    deps.logger.warn({ err: error, root }, "cannot see the engine's data root to check free space; set dockerRoot to where it is mounted");
    return;
  }
  // `docker load` copies the archive under the data root, then unpacks each layer beside it
  const needed = archive.archiveBytes + archive.layerBytes + (deps.reserveBytes ?? 16 * 1024 * 1024);
  if (free < needed) {
    const mib = (n: number) => `${Math.ceil(n / 1024 / 1024)} MiB`;
    throw new FleetError(
      'disk_full',
      `${where} needs about ${mib(needed)} free under ${root} (archive ${mib(archive.archiveBytes)} + unpacked ${mib(archive.layerBytes)}), ${mib(free)} are free; free space (or use update.strategy stop-then-download) and retry`,
    );
  }
}

/**
 * The engine's word on a load: it must report the pinned ID, whose platform this board runs. On any other
 * outcome every image the load added (not on the engine before) is removed, and the reason thrown.
 */
export async function verifyLoaded(engine: Engine, loaded: readonly string[], pinned: string, board: BoardPlatform, before: ReadonlySet<string>, where: string): Promise<void> {
  let refusal: FleetError | undefined;
  if (!loaded.includes(pinned) || loaded.length !== 1) {
    refusal = new FleetError('digest_mismatch', `loading the archive for ${where} gave ${loaded.join(', ') || 'no image'}, but the signed manifest pins ${pinned}`);
  } else {
    const info = await engine.image(pinned);
    const mismatch = info ? platformMismatch(info, board) : 'the engine does not show the image it reported loading';
    if (mismatch) refusal = new FleetError('incompatible', `${where}: ${mismatch}`);
  }
  if (!refusal) return;
  const added = loaded.filter((id) => !before.has(id));
  for (const id of added) await engine.removeImage(id);
  throw new FleetError(refusal.code, `${refusal.message}; ${added.length > 0 ? `removed what the load added (${added.join(', ')})` : 'the load added nothing'}`);
}

export async function installImage(manifest: Manifest, archivePath: string, deps: InstallDeps, opts: InstallOptions = {}): Promise<InstallResult> {
  const where = `${manifest.name}@${manifest.version}`;
  const early = checkImageManifest(manifest, deps.board);
  if (early) throw early;
  await deps.engine.require();
  const archive = await checkArchive(manifest, archivePath, deps.board, opts.sha256Verified ?? false);
  const pinned = archive.id;
  const record = deps.store.record(manifest.name);
  const previously = record.releases[String(manifest.version)];
  if (previously && previously.image !== pinned && record.active === manifest.version) {
    throw new FleetError('conflict', `${where} is running with image ${previously.image}; a new build needs a new version number`);
  }
  const before = await deps.engine.imageIds();
  const present = before.has(pinned);
  if (!present) {
    await checkRoom(deps, archive, where);
    // an archive that names no tag goes to the engine as it is; one that does, rewritten without its tags
    const loaded = await deps.engine.load(archive.tagged ? untaggedArchive(archivePath) : createReadStream(archivePath, { highWaterMark: 1 << 20 }));
    await verifyLoaded(deps.engine, loaded, pinned, deps.board, before, where);
  }
  const { repo, tag } = imageTag(deps.device, manifest.name, manifest.version);
  await deps.engine.tag(pinned, repo, tag);
  // on the engine before, and not because this agent put it there for another release: never the agent's to delete
  const foreign = present && !deps.store.referencedImages().has(pinned);
  await deps.store.update(manifest.name, (r) => ({
    ...r,
    releases: {
      ...r.releases,
      [String(manifest.version)]: {
        image: pinned,
        ...(manifest.container ? { spec: manifest.container } : {}),
        preexisting: previously?.image === pinned ? previously.preexisting : foreign,
        installedAt: Date.now(),
      },
    },
  }));
  deps.logger.info({ app: manifest.name, version: manifest.version, image: pinned, loaded: !present, bytes: archive.archiveBytes }, 'image installed');
  return { app: manifest.name, version: manifest.version, image: pinned, loaded: !present };
}
