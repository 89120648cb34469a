/**
 * A framed MQTT payload: a JSON message followed by raw bytes, so requests and replies can carry binary
 * tensors without base64 or JSON number arrays. MQTT 3.1.1 has no headers, so the header length leads:
 *
 *   bytes 0-3   0x00 'E' 'F' 0x01   (magic and frame version; a JSON text never starts with 0x00)
 *   bytes 4-7   uint32 little-endian: H, the length of the JSON message
 *   bytes 8..   the JSON message (UTF-8), padded with spaces so the binary part starts 8-byte aligned
 *   then        the binary part: for an inference, each tensor's bytes in the order it lists them,
 *               sized by their `binary_data_size` (the Open Inference Protocol's binary extension layout)
 *
 * A payload that does not start with the magic is a plain JSON message, so JSON requests keep working.
 */
import { FleetError } from './errors.js';
import { DEFAULT_JSON_LIMITS, parseJson } from './limits.js';
import type { JsonLimits } from './limits.js';

export const FRAME_MAGIC = Uint8Array.of(0x00, 0x45, 0x46, 0x01);
const PREFIX = 8;

/** True when the payload is framed (starts with the magic). */
export function isFramed(payload: Uint8Array): boolean {
  return payload.byteLength >= 4 && FRAME_MAGIC.every((b, i) => payload[i] === b);
}

/** One payload: the message as JSON, then the binary parts back to back. */
export function encodeFramed(message: unknown, binary: readonly Uint8Array[]): Buffer {
  const json = Buffer.from(JSON.stringify(message), 'utf8');
  const padded = json.byteLength + ((8 - ((PREFIX + json.byteLength) % 8)) % 8);
  const total = PREFIX + padded + binary.reduce((sum, b) => sum + b.byteLength, 0);
  const out = Buffer.allocUnsafeSlow(total);
  out.set(FRAME_MAGIC, 0);
  out.writeUInt32LE(padded, 4);
  json.copy(out, PREFIX);
  out.fill(0x20, PREFIX + json.byteLength, PREFIX + padded);
  let offset = PREFIX + padded;
  for (const b of binary) {
    out.set(b, offset);
    offset += b.byteLength;
  }
  return out;
}

/** A message for MQTT: plain JSON text without binary parts, a framed payload with them. */
export function encodePayload(message: unknown, binary?: readonly Uint8Array[]): string | Buffer {
  return binary && binary.length > 0 ? encodeFramed(message, binary) : JSON.stringify(message);
}

/**
 * Reads a payload: `{json, binary}` (binary undefined for a plain JSON payload). The JSON (the whole
 * payload, or a frame's JSON part) is checked against `limits` before it is parsed; the binary part is a
 * view into the payload, not a copy, bounded only by the broker's packet limit. Throws bad_request when the
 * payload is neither JSON nor a whole frame (too_long / too_deep over the limits).
 */
export function decodePayload(payload: Uint8Array | string, limits: JsonLimits = DEFAULT_JSON_LIMITS, what = 'payload'): { json: unknown; binary: Uint8Array | undefined } {
  if (typeof payload === 'string' || !isFramed(payload)) return { json: parseJson(payload, limits, what), binary: undefined };
  if (payload.byteLength < PREFIX) throw new FleetError('bad_request', 'framed payload is cut off inside its 8-byte prefix');
  const length = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(4, true);
  if (PREFIX + length > payload.byteLength) {
    throw new FleetError('bad_request', `framed payload says its JSON part is ${length} bytes, but only ${payload.byteLength - PREFIX} follow the prefix`);
  }
  const json = parseJson(payload.subarray(PREFIX, PREFIX + length), limits, `the JSON part of the framed ${what}`);
  return { json, binary: payload.subarray(PREFIX + length) };
}
