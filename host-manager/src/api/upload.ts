/**
 * Uploads: `POST /api/models?name=NAME` with the model file as the body (application/octet-stream),
 * and the image archives of image-routes.ts, each streamed to a temporary file under `<data dir>/uploads`, never held in memory, and refused
 * at the cap (413 `too_long`, with the cap and the flag that raises it): from the declared
 * Content-Length before a byte is read, or at the byte that passes the cap. The temporary file
 * is removed whatever happens; the rest of a refused body is read and thrown away, so the
 * client still gets the answer on its connection.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { FleetError } from '@edgefleet/protocol';
import { modelTooLarge } from '../models/registry.js';
import type { Operations } from './contract.js';
import type { RequestContext } from './http.js';
import { uploadedCheck } from './check-uploads.js';

/**
 * Writes the body to `file`; resolves false (and stops writing) as soon as it passes `maxBytes`.
 * Settles only once the file is closed, so the caller's removal of it cannot race its creation.
 */
function receive(req: IncomingMessage, file: string, maxBytes: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(file, { mode: 0o600 });
    let size = 0;
    let outcome: (() => void) | undefined;
    const finish = (then: () => void): void => {
      if (outcome) return;
      outcome = then;
      req.off('data', onData);
      req.resume(); // what is left of the body is read and dropped (no listener keeps it), so the answer still reaches the client
      if (out.closed) then();
      else out.destroy();
    };
    out.once('close', () => outcome?.());
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > maxBytes) return finish(() => resolve(false));
      if (!out.write(chunk)) {
        req.pause();
        out.once('drain', () => req.resume());
      }
    };
    req.on('data', onData);
    req.once('end', () => {
      if (!outcome) out.end(() => finish(() => resolve(true)));
    });
    req.once('aborted', () => finish(() => reject(new FleetError('bad_request', 'the upload was cut off before its end'))));
    req.once('error', (error) => finish(() => reject(error)));
    out.once('error', (error) => finish(() => reject(error)));
  });
}

function base64Json(req: IncomingMessage, h: string): unknown {
  const v = req.headers[h];
  if (typeof v !== 'string') return undefined;
  try {
    return JSON.parse(Buffer.from(v, 'base64').toString('utf8'));
  } catch {
    throw new FleetError('bad_request', `${h} must be base64 of JSON`);
  }
}

/**
 * Streams an upload's body to a new temporary file under `<data dir>/uploads` and hands the file to `use`;
 * the file is removed afterwards whatever happens. `tooLarge` is the refusal at the cap: from the declared
 * Content-Length before a byte is read, or at the byte that passes it.
 */
export async function withUploadedFile<T>(
  ops: Operations,
  req: IncomingMessage,
  upload: { maxBytes: number; suffix: string; tooLarge: (declared: number | undefined) => FleetError },
  use: (file: string) => Promise<T>,
): Promise<T> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > upload.maxBytes) {
    req.resume();
    throw upload.tooLarge(declared);
  }
  const dir = join(ops.dataDir, 'uploads');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `${randomBytes(8).toString('hex')}${upload.suffix}`);
  try {
    let whole: boolean;
    try {
      whole = await receive(req, tmp, upload.maxBytes);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOSPC') throw new FleetError('disk_full', `no space left in ${dir} for the upload; free space on the controller host and send it again`);
      throw error;
    }
    if (!whole) throw upload.tooLarge(undefined);
    return await use(tmp);
  } finally {
    await rm(tmp, { force: true });
  }
}

export async function uploadModel(ops: Operations, req: IncomingMessage, c: RequestContext, maxBytes: number): Promise<unknown> {
  const name = c.url.searchParams.get('name');
  if (!name) throw new FleetError('invalid_params', 'give the model a name: POST /api/models?name=NAME');
  const lineage = base64Json(req, 'x-model-lineage');
  const processing = base64Json(req, 'x-model-processing');
  const source = uploadedName(req.headers['x-model-filename']);
  const check = uploadedCheck(req);
  const upload = { maxBytes, suffix: '.onnx', tooLarge: (declared: number | undefined) => modelTooLarge(declared, maxBytes) };
  return withUploadedFile(ops, req, upload, (file) =>
    ops.addModel({
      file,
      opts: { name, source, ...(lineage ? { lineage: lineage as never } : {}), ...(processing ? { processing: processing as never } : {}), ...(check ? { check } : {}) },
      actor: c.actor,
    }),
  );
}

/** The name the client gave its file (x-model-filename, percent-encoded), for error messages only; never a path on this host. */
function uploadedName(header: string | string[] | undefined): string {
  if (typeof header !== 'string' || header === '') return 'the uploaded file';
  let name: string;
  try {
    name = decodeURIComponent(header);
  } catch {
    return 'the uploaded file'; // a malformed escape: the name is only for messages, so fall back
  }
  return JSON.stringify(name.replace(/[\u0000-\u001f]/g, '').slice(0, 256));
}
