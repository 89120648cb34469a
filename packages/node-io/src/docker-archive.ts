/**
 * Reading a `docker save` archive before the engine sees it, and the copy of it the engine gets.
 *
 * `inspectArchive` makes one pass over the file: the sha256 of the whole archive (unless the caller has
 * just verified it), every entry's name and
 * size, and the small JSON documents. From `manifest.json` (written by every `docker save`, the classic
 * layout and the OCI layout of newer engines alike) it finds the one image, its config (whose sha256 is the
 * image ID `docker load` will report), the platform in that config, and the bytes its layers unpack to.
 * Anything that is not a complete single-image archive is refused here, with nothing loaded.
 *
 * `untaggedArchive` streams the archive with its tags removed (manifest.json's RepoTags, the legacy
 * `repositories` file, index.json's name annotations), so loading it can never move a tag that something
 * else on the engine relies on; the agent tags the image itself once it has checked it.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import type { Headers } from 'tar-stream';
import { FleetError } from '@edgefleet/protocol';

/** Entries kept in memory while reading: the JSON documents are a few KB; layers are only counted. */
const SMALL_ENTRY = 1024 * 1024;
const SMALL_TOTAL = 16 * 1024 * 1024;

export interface ArchiveImage {
  /** `sha256:` + sha256 of the config blob: the image ID the engine will compute. */
  id: string;
  platform: { os: string; architecture: string; variant: string | undefined };
  /** Bytes of the whole archive, and its sha256 (hex; undefined when inspected with `hash: false`). */
  archiveBytes: number;
  sha256: string | undefined;
  /** Bytes of the layer tars, about what the image takes once unpacked. */
  layerBytes: number;
  layers: number;
  repoTags: string[];
  /** Whether loading it as it is would set a tag: RepoTags, a `repositories` file or index.json names. */
  tagged: boolean;
}

interface Entry {
  size: number;
  body: Buffer | undefined;
}

const entryName = (h: Headers): string => h.name.replace(/^\.\//, '');

function refuse(reason: string): FleetError {
  return new FleetError('invalid_params', `${reason}; send the output of \`docker save IMAGE\` for exactly one image`);
}

/** Reads every entry (keeping the small ones) and, with `hash`, the whole-file hash in one pass. */
async function readEntries(path: string, hash: boolean): Promise<{ entries: Map<string, Entry>; sha256: string | undefined }> {
  const entries = new Map<string, Entry>();
  const whole = hash ? createHash('sha256') : undefined;
  const extract = tar.extract();
  let kept = 0;
  extract.on('entry', (header: Headers, stream: PassThrough, next: (error?: unknown) => void) => {
    const name = entryName(header);
    if (entries.has(name) && header.type !== 'directory') {
      stream.resume();
      next(refuse(`the archive holds "${name}" twice`));
      return;
    }
    const size = header.size ?? 0;
    const keep = header.type === 'file' && size <= SMALL_ENTRY && kept + size <= SMALL_TOTAL;
    const chunks: Buffer[] = [];
    if (keep) kept += size;
    stream.on('data', (c: Buffer) => {
      if (keep) chunks.push(c);
    });
    stream.on('end', () => {
      entries.set(name, { size, body: keep ? Buffer.concat(chunks) : undefined });
      next();
    });
  });
  const hashing = new PassThrough();
  if (whole) hashing.on('data', (c: Buffer) => whole.update(c));
  try {
    await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), hashing, extract);
  } catch (error) {
    if (error instanceof FleetError) throw error;
    const message = (error as Error).message;
    if (/unexpected end|premature close/i.test(message)) {
      throw new FleetError('truncated', `the image archive ends inside an entry (${message}); it is incomplete: send it again`);
    }
    throw refuse(`the file is not a readable tar archive (${message})`);
  }
  return { entries, sha256: whole?.digest('hex') };
}

function parseJson(entry: Entry | undefined, what: string): unknown {
  if (!entry?.body) throw refuse(`the archive has no readable ${what}`);
  try {
    return JSON.parse(entry.body.toString('utf8'));
  } catch {
    throw refuse(`the archive's ${what} is not JSON`);
  }
}

interface SaveManifestEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

function oneImage(manifest: unknown): SaveManifestEntry {
  if (!Array.isArray(manifest)) throw refuse('manifest.json is not a list of images');
  if (manifest.length !== 1) throw refuse(`the archive holds ${manifest.length} images`);
  const m = manifest[0] as Partial<SaveManifestEntry>;
  if (typeof m?.Config !== 'string' || !Array.isArray(m.Layers) || !m.Layers.every((l) => typeof l === 'string')) {
    throw refuse('manifest.json does not name a config and its layers');
  }
  return { Config: m.Config, Layers: m.Layers, RepoTags: Array.isArray(m.RepoTags) ? m.RepoTags.filter((t) => typeof t === 'string') : [] };
}

/** Whether the archive names any tag (see untag below for where tags live). */
function names(entries: Map<string, Entry>, repoTags: string[]): boolean {
  if (repoTags.length > 0) return true;
  for (const file of ['repositories', 'index.json']) {
    const entry = entries.get(file);
    if (!entry) continue;
    if (!entry.body) return true; // too large to read here: assume it names something
    const text = entry.body.toString('utf8');
    if (file === 'repositories' ? /"[^"]+"\s*:/.test(text) : /io\.containerd\.image\.name|org\.opencontainers\.image\.ref\.name/.test(text)) return true;
  }
  return false;
}

/** `hash: false` skips the whole-file sha256 when the caller verified the same file just before. */
export function inspectArchive(path: string): Promise<ArchiveImage & { sha256: string }>;
export function inspectArchive(path: string, opts: { hash?: boolean }): Promise<ArchiveImage>;
export async function inspectArchive(path: string, opts: { hash?: boolean } = {}): Promise<ArchiveImage> {
  let archiveBytes: number;
  try {
    archiveBytes = (await stat(path)).size;
  } catch {
    throw new FleetError('not_found', `the image archive ${path} is missing; send the image again`);
  }
  const { entries, sha256 } = await readEntries(path, opts.hash ?? true);
  const image = oneImage(parseJson(entries.get('manifest.json'), 'manifest.json'));
  const configEntry = entries.get(image.Config.replace(/^\.\//, ''));
  const config = parseJson(configEntry, `image config (${image.Config})`) as {
    architecture?: unknown;
    os?: unknown;
    variant?: unknown;
    rootfs?: { diff_ids?: unknown };
  };
  const diffIds = Array.isArray(config.rootfs?.diff_ids) ? config.rootfs.diff_ids : [];
  if (diffIds.length !== image.Layers.length) {
    throw refuse(`the image config lists ${diffIds.length} layers but manifest.json ${image.Layers.length}`);
  }
  let layerBytes = 0;
  for (const layer of image.Layers) {
    const entry = entries.get(layer.replace(/^\.\//, ''));
    if (!entry) throw new FleetError('truncated', `the image archive lacks layer ${layer}; it is incomplete: send it again`);
    layerBytes += entry.size;
  }
  if (typeof config.architecture !== 'string' || config.architecture === '') throw refuse('the image config names no architecture');
  return {
    id: `sha256:${createHash('sha256').update(configEntry!.body!).digest('hex')}`,
    platform: {
      os: typeof config.os === 'string' ? config.os : 'linux',
      architecture: config.architecture,
      variant: typeof config.variant === 'string' && config.variant !== '' ? config.variant : undefined,
    },
    archiveBytes,
    sha256,
    layerBytes,
    layers: image.Layers.length,
    repoTags: image.RepoTags ?? [],
    tagged: names(entries, image.RepoTags ?? []),
  };
}

/** The JSON documents that carry tags, rewritten without them; null drops the entry. */
function untag(name: string, body: Buffer): Buffer | null {
  if (name === 'repositories') return null;
  const json = JSON.parse(body.toString('utf8')) as unknown;
  if (name === 'manifest.json' && Array.isArray(json)) {
    return Buffer.from(JSON.stringify(json.map((m: Record<string, unknown>) => ({ ...m, RepoTags: null }))));
  }
  if (name === 'index.json' && json !== null && typeof json === 'object') {
    const index = json as { manifests?: { annotations?: Record<string, string> }[] };
    for (const m of index.manifests ?? []) {
      if (m.annotations) {
        delete m.annotations['io.containerd.image.name'];
        delete m.annotations['org.opencontainers.image.ref.name'];
      }
    }
    return Buffer.from(JSON.stringify(index));
  }
  return body;
}

const TAG_FILES = new Set(['manifest.json', 'repositories', 'index.json']);

/** The archive as a stream, its tags removed (see the file comment); layers pass through untouched. */
export function untaggedArchive(path: string): Readable {
  const extract = tar.extract();
  const pack = tar.pack();
  extract.on('entry', (header: Headers, stream: PassThrough, next: (error?: unknown) => void) => {
    const name = entryName(header);
    if (!TAG_FILES.has(name)) {
      stream.pipe(pack.entry(header, next));
      return;
    }
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      try {
        const body = untag(name, Buffer.concat(chunks));
        if (body === null) next();
        else pack.entry({ ...header, size: body.length }, body, next);
      } catch (error) {
        next(error);
      }
    });
  });
  extract.on('finish', () => pack.finalize());
  extract.on('error', (error: Error) => pack.destroy(error));
  createReadStream(path)
    .on('error', (error) => pack.destroy(error))
    .pipe(extract);
  return pack;
}
