/**
 * Gives an image the platform it was built for. Docker 20.10's classic builder (the one the
 * engine API drives without BuildKit) records the engine's own platform for a FROM-scratch
 * image, so a cross-built arm64 image would say amd64 and boards would refuse it. This
 * streams the image out (`docker save`), rewrites os/architecture/variant in its
 * configuration, and loads it back under the same reference: layers are untouched, the
 * image ID (the configuration's sha256) changes.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import tar from 'tar-stream';
import type { Headers } from 'tar-stream';
import { FleetError } from '@edgefleet/protocol';
import type { ImagePlatform } from './arch.js';
import { followEngineStream } from './engine.js';

const CONFIG_ENTRY = /^[0-9a-f]{64}\.json$/;

interface SaveManifestEntry {
  Config: string;
  RepoTags: string[] | null;
  Layers: string[];
}

function readAll(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

/** The configuration with the platform replaced (the rest byte-for-byte as parsed). */
export function withPlatform(config: Buffer, platform: ImagePlatform): Buffer {
  const parsed = JSON.parse(config.toString('utf8')) as Record<string, unknown>;
  parsed.os = platform.os;
  parsed.architecture = platform.architecture;
  if (platform.variant) parsed.variant = platform.variant;
  else delete parsed.variant;
  return Buffer.from(JSON.stringify(parsed));
}

/**
 * Copies a `docker save` archive to `out`, layers streamed through, with the image's
 * configuration rewritten and manifest.json pointing at it under `reference`. Resolves to
 * the new image ID.
 */
export function rewriteSaveArchive(saved: NodeJS.ReadableStream, out: tar.Pack, reference: string, platform: ImagePlatform): Promise<string> {
  const extract = tar.extract();
  const held = new Map<string, Buffer>(); // small entries: configuration, manifest.json
  return new Promise((resolve, reject) => {
    const fail = (err: Error): void => {
      out.destroy(err);
      reject(err);
    };
    extract.on('entry', (header: Headers, stream: Readable, next: () => void) => {
      if (CONFIG_ENTRY.test(header.name) || header.name === 'manifest.json' || header.name === 'repositories') {
        readAll(stream).then((b) => (held.set(header.name, b), next()), fail);
        return;
      }
      stream.pipe(out.entry(header, (err) => (err ? fail(err) : next())));
    });
    extract.on('finish', () => {
      try {
        const manifest = JSON.parse(held.get('manifest.json')?.toString('utf8') ?? 'null') as SaveManifestEntry[] | null;
        const entry = manifest?.[0];
        const config = entry ? held.get(entry.Config) : undefined;
        if (!manifest || manifest.length !== 1 || !entry || !config) throw new Error('the saved image has no single manifest and configuration');
        const patched = withPlatform(config, platform);
        const id = createHash('sha256').update(patched).digest('hex');
        out.entry({ name: `${id}.json` }, patched);
        out.entry({ name: 'manifest.json' }, Buffer.from(JSON.stringify([{ ...entry, Config: `${id}.json`, RepoTags: [reference] }])));
        out.finalize();
        resolve(`sha256:${id}`);
      } catch (err) {
        fail(err as Error);
      }
    });
    extract.on('error', fail);
    saved.on('error', fail);
    saved.pipe(extract);
  });
}

export async function setImagePlatform(docker: Docker, reference: string, platform: ImagePlatform, onProgress: (line: string) => void = () => undefined): Promise<string> {
  const before = await docker.getImage(reference).inspect();
  const pack = tar.pack();
  const loading = docker.loadImage(pack, { quiet: true }).then((s) => followEngineStream(docker, s, onProgress));
  const saved = await docker.getImage(reference).get();
  const [id] = await Promise.all([rewriteSaveArchive(saved, pack, reference, platform), loading]);
  const after = await docker.getImage(reference).inspect();
  if (after.Id !== id || after.Architecture !== platform.architecture) {
    throw new FleetError('internal', `setting the platform of ${reference} failed: the engine holds ${after.Id} (${after.Architecture}), expected ${id}`);
  }
  if (before.Id !== id) {
    try {
      // noprune keeps the build cache (the parent layers) for the next build.
      await docker.getImage(before.Id).remove({ noprune: true });
    } catch (err) {
      // Only a dangling copy stays behind (e.g. another tag still names it): report, do not fail.
      onProgress(`kept ${before.Id}: ${(err as Error).message}`);
    }
  }
  return id;
}
