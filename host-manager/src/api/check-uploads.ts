/**
 * The files a version's activation check names, uploaded before the version is added:
 * `POST /api/samples` (a sample request exactly as a device's inference API takes it: JSON, or
 * octet-stream with the JSON header's length in Inference-Header-Content-Length, found from the
 * body when the header is absent) and `POST /api/expected-outputs` (JSON). Each answers 201 with
 * the sha256 to name in the check (`check.sample`, `check.expected`) when the version is added.
 */
import type { IncomingMessage } from 'node:http';
import { FleetError, describe, inferBodyFormat } from '@edgefleet/protocol';
import { SAMPLE_UPLOAD_MAX_BYTES } from '../models/check-files.js';
import { CheckRequestSchema } from '../models/checks.js';
import type { CheckRequest } from '../models/checks.js';
import type { Operations } from './contract.js';
import type { RequestContext } from './http.js';
import { readBytes } from './bodies.js';

export async function uploadSample(ops: Operations, req: IncomingMessage, c: RequestContext): Promise<unknown> {
  const type = req.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
  // a binary sample file may come without its header length: the body says where its JSON ends
  const declared = type === 'application/octet-stream' && req.headers['inference-header-content-length'] === undefined ? undefined : inferBodyFormat(req.headers).headerLength;
  const body = await readBytes(req, SAMPLE_UPLOAD_MAX_BYTES, 'a sample request');
  return ops.addSample({ body, ...(declared !== undefined ? { headerLength: declared } : {}), actor: c.actor });
}

/** The check of a model upload: the `x-model-check` header, base64 of the JSON check. */
export function uploadedCheck(req: IncomingMessage): CheckRequest | undefined {
  const v = req.headers['x-model-check'];
  if (typeof v !== 'string') return undefined;
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(v, 'base64').toString('utf8'));
  } catch {
    throw new FleetError('bad_request', 'x-model-check must be base64 of JSON: {"policy", "allowNaN", "sample", "expected", "expectFromLocal", "atol", "rtol"}');
  }
  const parsed = CheckRequestSchema.safeParse(json);
  if (!parsed.success) throw new FleetError('invalid_params', `x-model-check: ${describe(parsed.error)}`);
  return parsed.data;
}
