/**
 * Test images, built here: no registry is reachable. An image is assembled as a `docker save` archive (the
 * classic layout: manifest.json, <config sha256>.json, <layer>/layer.tar), which is what the agent installs,
 * so every image a test runs went through the agent's own install path.
 *
 * - `runtimeLayer()`: the node binary (process.execPath) and the libraries `ldd` lists, plus
 *   test/support/oip-server.cjs at /srv/oip-server.cjs; about 100 MB, built once and cached under the
 *   system temp directory by a hash of what went into it.
 * - `oipImage()`: that layer with a config (Cmd, Env) per variant; distinct configs are distinct image IDs
 *   sharing one layer, so the engine stores it once.
 * - `tinyImage()`: one small file and a config of any architecture: for refusals that never run anything
 *   (wrong digest, wrong architecture, truncated), and for a fresh image ID on every call.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync, statSync } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import tar from 'tar-stream';
import { ManifestSchema } from '@edgefleet/protocol';
import type { ContainerSpecInput, ImagePlatform, Manifest, ManifestInput } from '@edgefleet/protocol';

export const OIP_SERVER = fileURLToPath(new URL('./oip-server.cjs', import.meta.url));
const CACHE = join(tmpdir(), 'edgefleet-test-images');

export interface Layer {
  /** A layer tar on disk, its sha256 (the diff ID) and size. */
  path: string;
  diffId: string;
  size: number;
}

export interface ImageArchive {
  path: string;
  /** Image ID: sha256 of the config. */
  id: string;
  sha256: string;
  length: number;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/** Writes a tar of the given files ({path in image: bytes or a host file}) and returns it as a layer. */
async function writeLayer(path: string, files: Record<string, { bytes?: Buffer; from?: string; mode: number }>): Promise<Layer> {
  const pack = tar.pack();
  const out = createWriteStream(`${path}.tmp`);
  const done = pipeline(pack, out);
  const dirs = new Set<string>();
  for (const [file, spec] of Object.entries(files).sort(([a], [b]) => a.localeCompare(b))) {
    const parts = file.split('/').filter(Boolean);
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!dirs.has(dir)) {
        dirs.add(dir);
        await new Promise<void>((r, j) => pack.entry({ name: `${dir}/`, type: 'directory', mode: 0o755, mtime: new Date(0) }, (e) => (e ? j(e) : r())));
      }
    }
    const bytes = spec.bytes ?? readFileSync(spec.from!);
    await new Promise<void>((r, j) => pack.entry({ name: parts.join('/'), mode: spec.mode, mtime: new Date(0), size: bytes.length }, bytes, (e) => (e ? j(e) : r())));
  }
  pack.finalize();
  await done;
  await rename(`${path}.tmp`, path);
  return { path, diffId: `sha256:${await sha256File(path)}`, size: (await stat(path)).size };
}

/** The node runtime layer (cached): node, its libraries, the OIP test server. */
export async function runtimeLayer(): Promise<Layer> {
  const libs = execFileSync('ldd', [process.execPath], { encoding: 'utf8' })
    .split('\n')
    .map((l) => /(\/\S+)\s+\(0x/.exec(l)?.[1])
    .filter((p): p is string => p !== undefined);
  const files: Record<string, { from: string; mode: number }> = { 'usr/bin/node': { from: process.execPath, mode: 0o755 }, 'srv/oip-server.cjs': { from: OIP_SERVER, mode: 0o644 } };
  for (const lib of libs) files[lib.slice(1)] = { from: lib, mode: 0o755 };
  const key = createHash('sha256')
    .update(JSON.stringify(Object.entries(files).map(([p, f]) => [p, f.from, statSync(f.from).size, statSync(f.from).mtimeMs])))
    .update(readFileSync(OIP_SERVER))
    .digest('hex')
    .slice(0, 16);
  const path = join(CACHE, `runtime-${key}.tar`);
  await mkdir(CACHE, { recursive: true });
  try {
    const size = (await stat(path)).size;
    return { path, diffId: `sha256:${await sha256File(path)}`, size };
  } catch {
    return writeLayer(path, files);
  }
}

export interface ImageConfig {
  platform?: Pick<ImagePlatform, 'architecture' | 'variant'>;
  cmd?: string[];
  env?: Record<string, string>;
  /** A Docker HEALTHCHECK baked into the image (exec form). */
  healthcheck?: string[];
  labels?: Record<string, string>;
}

/** Assembles a `docker save` archive (classic layout) of these layers and config at `path`. */
export async function writeImageArchive(path: string, layers: Layer[], config: ImageConfig, repoTags: string[] = []): Promise<ImageArchive> {
  const configJson = Buffer.from(
    JSON.stringify({
      architecture: config.platform?.architecture ?? 'amd64',
      ...(config.platform?.variant ? { variant: config.platform.variant } : {}),
      os: 'linux',
      created: '2024-01-01T00:00:00Z',
      config: {
        Env: Object.entries({ PATH: '/usr/bin:/bin', ...config.env }).map(([k, v]) => `${k}=${v}`),
        ...(config.cmd ? { Cmd: config.cmd } : {}),
        ...(config.labels ? { Labels: config.labels } : {}),
        ...(config.healthcheck ? { Healthcheck: { Test: ['CMD', ...config.healthcheck], Interval: 200e6, Timeout: 1e9, Retries: 2 } } : {}),
      },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map(() => ({ created: '2024-01-01T00:00:00Z', created_by: 'edgefleet test' })),
    }),
  );
  const id = createHash('sha256').update(configJson).digest('hex');
  await mkdir(dirname(path), { recursive: true });
  const pack = tar.pack();
  const done = pipeline(pack, createWriteStream(path));
  const entry = (name: string, bytes: Buffer) => new Promise<void>((r, j) => pack.entry({ name, mode: 0o644, mtime: new Date(0), size: bytes.length }, bytes, (e) => (e ? j(e) : r())));
  for (const layer of layers) {
    const dir = layer.diffId.slice('sha256:'.length);
    await new Promise<void>((r, j) => {
      const sink = pack.entry({ name: `${dir}/layer.tar`, mode: 0o644, mtime: new Date(0), size: layer.size }, (e) => (e ? j(e) : r()));
      createReadStream(layer.path).pipe(sink);
    });
  }
  await entry(`${id}.json`, configJson);
  await entry('manifest.json', Buffer.from(JSON.stringify([{ Config: `${id}.json`, RepoTags: repoTags, Layers: layers.map((l) => `${l.diffId.slice(7)}/layer.tar`) }])));
  pack.finalize();
  await done;
  return { path, id: `sha256:${id}`, sha256: await sha256File(path), length: (await stat(path)).size };
}

/** An image of one small file (unique unless `content` is given), for any platform; it has nothing to run. */
export async function tinyImage(dir: string, opts: { platform?: ImageConfig['platform']; content?: string; repoTags?: string[] } = {}): Promise<ImageArchive> {
  const content = opts.content ?? randomUUID();
  const layer = await writeLayer(join(dir, `tiny-${createHash('sha256').update(content).digest('hex').slice(0, 12)}.tar`), { 'hello.txt': { bytes: Buffer.from(content), mode: 0o644 } });
  const archive = await writeImageArchive(join(dir, `tiny-${randomUUID()}.tar`), [layer], { ...(opts.platform ? { platform: opts.platform } : {}), cmd: ['/hello'] }, opts.repoTags ?? ['edgefleet-test/tiny:latest']);
  await rm(layer.path, { force: true });
  return archive;
}

/** The OIP test server image; `variant` names the config (APP_VERSION), so each variant is its own image ID. */
export async function oipImage(dir: string, variant: string, config: Omit<ImageConfig, 'cmd'> = {}): Promise<ImageArchive> {
  const layer = await runtimeLayer();
  return writeImageArchive(join(dir, `oip-${variant}-${randomUUID()}.tar`), [layer], {
    ...config,
    cmd: ['/usr/bin/node', '/srv/oip-server.cjs'],
    env: { APP_VERSION: variant, ...config.env },
  });
}

/** The manifest a device holds for an image archive once the transfer verified it (unsigned: signing is the transfer's part). */
export function imageManifest(app: string, version: number, archive: ImageArchive, extra: Partial<ManifestInput> & { container?: ContainerSpecInput } = {}): Manifest {
  const now = Date.now();
  const chunkSize = 4 * 1024 * 1024;
  const chunks = Math.max(1, Math.ceil(archive.length / chunkSize));
  return ManifestSchema.parse({
    kind: 'image',
    name: app,
    version,
    sha256: archive.sha256,
    length: archive.length,
    issuedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 3600_000).toISOString(),
    target: { devices: ['dev-1'] },
    // the chunk hashes are the transfer's concern; the install checks length and sha256 of the whole archive
    chunking: { size: chunkSize, sha256: Array<string>(chunks).fill('0'.repeat(64)) },
    image: { reference: `${app}:${version}`, digest: archive.id },
    ...extra,
  });
}
