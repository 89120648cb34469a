/**
 * Bodies in the binary tensor data extension's layout on the controller's API, as a device's own inference
 * API takes and gives them: `application/octet-stream` with `Inference-Header-Content-Length` (the JSON
 * header, then the tensors' bytes). Read whole (they are bounded: an inference travels in one MQTT message,
 * a sample is at most SAMPLE_UPLOAD_MAX_BYTES), answered with the header and the parts written back to back.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FleetError } from '@edgefleet/protocol';
import { SAFE_HEADERS } from './http.js';

/** An answer with binary parts: its JSON header, then the parts (the route's handler returns it instead of a JSON value). */
export class BinaryAnswer {
  constructor(
    readonly header: unknown,
    readonly binary: readonly Uint8Array[],
  ) {}
}

/** The whole body, refused at `limit` bytes (from Content-Length before reading, or at the chunk that passes it). */
export async function readBytes(req: IncomingMessage, limit: number, what: string): Promise<Buffer> {
  const tooLong = (): FleetError => new FleetError('too_long', `${what} is over ${limit} bytes`);
  if (Number(req.headers['content-length']) > limit) throw tooLong();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLong();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Writes a binary answer: Inference-Header-Content-Length and the header, then each part. */
export function sendBinary(res: ServerResponse, status: number, answer: BinaryAnswer): void {
  const header = Buffer.from(JSON.stringify(answer.header), 'utf8');
  res.writeHead(status, {
    'content-type': 'application/octet-stream',
    'inference-header-content-length': header.byteLength,
    'content-length': header.byteLength + answer.binary.reduce((sum, b) => sum + b.byteLength, 0),
    ...SAFE_HEADERS,
  });
  res.write(header);
  for (const part of answer.binary) res.write(part);
  res.end();
}
