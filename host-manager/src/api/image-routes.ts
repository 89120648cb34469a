/**
 * The HTTP API's image routes: the registry (an archive streamed in as the request body, or a file on the
 * controller host), commands to the apps on devices, and loading an image over SSH. Rolling an image out
 * is `POST /api/rollouts` with `kind: "image"` (routes.ts).
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { FleetError } from '@edgefleet/protocol';
import type { Operations } from './contract.js';
import { route } from './http.js';
import type { RequestContext, Route } from './http.js';
import { parseBody, schemas, versionParam } from './schemas.js';
import { parseTarget } from '../rollouts/target.js';
import { withUploadedFile } from './upload.js';

/** Largest archive an upload may be (a board's image is far smaller; past this the body is refused, not stored). */
export const IMAGE_UPLOAD_LIMIT = 16 * 1024 ** 3;

export function imageRoutes(ops: Operations): Route[] {
  return [
    route('GET', '/api/images', (_r, _p, c) => ops.listImages(c.url.searchParams.get('name') ?? undefined)),
    route('POST', '/api/images', async (req, _p, c) => {
      if ((req.headers['content-type'] ?? '').includes('application/octet-stream')) return uploadImage(ops, req, c);
      const body = parseBody(schemas.addImagePath, await c.body());
      // the registry consumes the file it is given: a copy, never the operator's own file
      const tmp = await uploadPath(ops);
      await copyFile(body.path, tmp).catch((error: NodeJS.ErrnoException) => {
        throw new FleetError('not_found', `cannot read ${body.path} on the controller host (${error.code ?? error.message})`);
      });
      return ops.addImage({
        file: tmp,
        opts: { name: body.name, ...(body.reference ? { reference: body.reference } : {}), ...(body.container ? { container: body.container } : {}), ...(body.imageId ? { expectId: body.imageId } : {}) },
        actor: c.actor,
      });
    }, { created: true }),
    route('GET', '/api/images/:name', (_r, p) => ops.showImage(p['name']!)),
    route('GET', '/api/images/:name/:version', (_r, p) => ops.showImage(p['name']!, versionParam(p['version']))),
    route('DELETE', '/api/images/:name/:version', (_r, p, c) => ops.removeImage({ name: p['name']!, version: versionParam(p['version']), actor: c.actor })),
    route('POST', '/api/images/:name/run', async (_r, p, c) => {
      const body = parseBody(schemas.imageCommand, await c.body());
      return ops.runImage({ app: p['name']!, ...(body.version !== undefined ? { version: body.version } : {}), to: parseTarget(body.to), actor: c.actor });
    }),
    route('POST', '/api/images/:name/stop', async (_r, p, c) => ops.stopImage({ app: p['name']!, to: parseTarget(parseBody(schemas.imageCommand, await c.body()).to), actor: c.actor })),
    route('POST', '/api/images/:name/remove', async (_r, p, c) => ops.removeImageFromDevices({ app: p['name']!, to: parseTarget(parseBody(schemas.imageCommand, await c.body()).to), actor: c.actor })),
    route('POST', '/api/images/:name/ssh', async (_r, p, c) => {
      const { version, port, hostKeyFingerprint, ...body } = parseBody(schemas.sshImage, await c.body());
      return ops.deliverImageSsh({
        name: p['name']!,
        ...body,
        ...(version !== undefined ? { version } : {}),
        ...(port !== undefined ? { port } : {}),
        ...(hostKeyFingerprint !== undefined ? { hostKeyFingerprint } : {}),
        actor: c.actor,
      });
    }),
  ];
}

async function uploadPath(ops: Operations): Promise<string> {
  const dir = join(ops.dataDir, 'uploads');
  await mkdir(dir, { recursive: true });
  return join(dir, `${randomBytes(8).toString('hex')}.tar`);
}

/** An archive over the upload cap: refused with the cap (from Content-Length, or at the byte that passes it). */
function imageTooLarge(declared: number | undefined): FleetError {
  const what = declared === undefined ? 'the image archive is' : `the image archive of ${declared} bytes is`;
  return new FleetError('too_long', `${what} over the controller's limit of ${IMAGE_UPLOAD_LIMIT / 1024 ** 3} GiB per image upload; refused before it was stored (slim the image, or give the controller a path on its host)`);
}

/**
 * `POST /api/images?name=NAME[&reference=REF]` with the `docker save` archive as the body, streamed to a file
 * under the data directory (never held in memory). `x-image-id` (optional) is the ID the sender expects;
 * `x-image-container` (optional) is the container spec as base64 JSON.
 */
async function uploadImage(ops: Operations, req: IncomingMessage, c: RequestContext): Promise<unknown> {
  const name = c.url.searchParams.get('name');
  if (!name) throw new FleetError('invalid_params', 'give the image a name: POST /api/images?name=NAME');
  const reference = c.url.searchParams.get('reference') ?? undefined;
  const id = req.headers['x-image-id'];
  const spec = req.headers['x-image-container'];
  let container: unknown;
  if (typeof spec === 'string') {
    try {
      container = JSON.parse(Buffer.from(spec, 'base64').toString('utf8'));
    } catch {
      throw new FleetError('bad_request', 'x-image-container must be base64 of JSON');
    }
  }
  // streamed to disk under the cap (upload.ts), never held in memory; the registry takes the file over
  const upload = { maxBytes: IMAGE_UPLOAD_LIMIT, suffix: '.tar', tooLarge: imageTooLarge };
  return withUploadedFile(ops, req, upload, (file) =>
    ops.addImage({
      file,
      opts: { name, ...(reference ? { reference } : {}), ...(container !== undefined ? { container: container as never } : {}), ...(typeof id === 'string' ? { expectId: id } : {}) },
      actor: c.actor,
    }),
  );
}

