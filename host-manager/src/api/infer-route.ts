/**
 * `POST /api/devices/:id/infer`: one inference on a device through MQTT, with the bodies a device's own
 * inference API takes: JSON (`{model, version?, timeoutMs?, inputs...}` in either form), or
 * octet-stream with Inference-Header-Content-Length, whose JSON header is that same object and whose
 * binary part holds the tensors (the framed MQTT request carries them as they are). An answer with binary
 * outputs (asked for with binary_data_output or binary_data) goes back in the same layout.
 */
import type { IncomingMessage } from 'node:http';
import { MESSAGE_LIMITS, inferBodyFormat, splitInferBody } from '@edgefleet/protocol';
import type { Operations } from './contract.js';
import type { RequestContext } from './http.js';
import { parseBody, schemas } from './schemas.js';
import { BinaryAnswer, readBytes } from './bodies.js';

/** The binary part still has to fit one MQTT message (the requester says so past it); this only bounds the read. */
const BINARY_INFER_LIMIT = 2 * MESSAGE_LIMITS.request.maxBytes;

export async function inferRoute(ops: Operations, req: IncomingMessage, device: string, c: RequestContext): Promise<unknown> {
  const { headerLength } = inferBodyFormat(req.headers);
  let json: unknown;
  let binary: Uint8Array | undefined;
  if (headerLength === undefined) json = await c.body();
  else ({ json, binary } = splitInferBody(await readBytes(req, BINARY_INFER_LIMIT, 'the inference request'), headerLength));
  const { timeoutMs, ...params } = parseBody(schemas.infer, json);
  const answer = await ops.infer({ device, params, actor: c.actor, ...(timeoutMs ? { timeoutMs } : {}), ...(binary ? { binary } : {}) });
  return answer.binary && answer.binary.byteLength > 0 ? new BinaryAnswer(answer.result, [answer.binary]) : answer.result;
}
