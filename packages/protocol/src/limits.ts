/**
 * Size and nesting limits checked before JSON.parse. JSON.parse and the schema
 * walk cost time in proportion to size and depth on the one thread that also
 * runs the broker and the controller (a 3.8 MB `[[[[…]]]]` costs about a second),
 * so a payload over its kind's byte limit, or nested deeper than MAX_JSON_DEPTH,
 * is refused from its length and one linear byte scan, without being parsed.
 */
import { FleetError } from './errors.js';

export interface JsonLimits {
  /** UTF-8 bytes of the whole payload. */
  maxBytes: number;
  /** Arrays and objects open at once. */
  maxDepth: number;
}

export type MessageKind = 'status' | 'telemetry' | 'event' | 'request' | 'reply';

/**
 * Deepest message of the protocol: an infer request or reply (envelope > params or data >
 * inputs/outputs > tensor > data array: 5 levels) or a transfer offer with its signed manifest
 * (about 6). 32 leaves room for a post-processed `answer` and stays far from any stack limit.
 */
export const MAX_JSON_DEPTH = 32;

const KiB = 1024;

/**
 * Per message kind, chosen from what the agent really sends:
 * - telemetry: one sample is ~300 bytes plus ~120 per model; 64 KiB holds 400 models.
 * - event: an envelope and one short sentence (a log line, an error); 64 KiB.
 * - status: the device info (models, execution providers, groups) is ~1 KiB; 128 KiB.
 * - request, reply: tensors travel inside (infer inputs and outputs, 5,000 log lines, a
 *   manifest with one hash per chunk): 4 MiB, the broker's default packet limit.
 */
export const MESSAGE_LIMITS: Readonly<Record<MessageKind, Readonly<JsonLimits>>> = {
  telemetry: { maxBytes: 64 * KiB, maxDepth: MAX_JSON_DEPTH },
  event: { maxBytes: 64 * KiB, maxDepth: MAX_JSON_DEPTH },
  status: { maxBytes: 128 * KiB, maxDepth: MAX_JSON_DEPTH },
  request: { maxBytes: 4096 * KiB, maxDepth: MAX_JSON_DEPTH },
  reply: { maxBytes: 4096 * KiB, maxDepth: MAX_JSON_DEPTH },
};

/** For payloads of no particular kind: the largest kind's limits. */
export const DEFAULT_JSON_LIMITS: Readonly<JsonLimits> = MESSAGE_LIMITS.reply;

/** Byte classes for the depth scan; 0 = nothing to do (a table lookup is about twice as fast as a chain of compares). */
const PLAIN = 0;
const QUOTE = 1;
const BACKSLASH = 2;
const OPEN = 3;
const CLOSE = 4;
const BYTE_CLASS = new Uint8Array(256);
BYTE_CLASS[0x22] = QUOTE;
BYTE_CLASS[0x5c] = BACKSLASH;
BYTE_CLASS[0x5b] = OPEN; // [
BYTE_CLASS[0x7b] = OPEN; // {
BYTE_CLASS[0x5d] = CLOSE; // ]
BYTE_CLASS[0x7d] = CLOSE; // }

/**
 * The offset at which the payload first nests deeper than `maxDepth`, or -1. Counts `[` and
 * `{` outside strings in one pass over the bytes (UTF-8 continuation bytes are never ASCII,
 * so a byte scan cannot be fooled by multi-byte characters); about 1.2 ns per byte here,
 * a quarter of what JSON.parse spends on a flat payload. It does not validate JSON:
 * unbalanced brackets are JSON.parse's to refuse, later.
 */
export function jsonTooDeepAt(bytes: Uint8Array, maxDepth: number): number {
  let depth = 0;
  let inString = false;
  const length = bytes.length;
  for (let i = 0; i < length; i++) {
    const c = BYTE_CLASS[bytes[i]!];
    if (c === PLAIN) continue;
    if (inString) {
      if (c === BACKSLASH) i++; // the escaped character cannot end the string
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) {
      inString = true;
    } else if (c === OPEN) {
      if (++depth > maxDepth) return i;
    } else if (c === CLOSE) {
      depth--;
    }
  }
  return -1;
}

/**
 * The cheap check alone: a FleetError `too_long` (over `maxBytes`) or `too_deep` (nested past
 * `maxDepth`), or undefined when the payload may be parsed. `what` names the payload in the sentence.
 */
export function checkJsonLimits(payload: Uint8Array | string, limits: JsonLimits, what = 'payload'): FleetError | undefined {
  const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  if (bytes.length > limits.maxBytes) {
    return new FleetError('too_long', `${what} of ${bytes.length} bytes is over the ${limits.maxBytes}-byte limit; refused without parsing`);
  }
  const at = jsonTooDeepAt(bytes, limits.maxDepth);
  if (at >= 0) {
    return new FleetError('too_deep', `${what} nests arrays or objects deeper than ${limits.maxDepth} levels (at byte ${at}); refused without parsing`);
  }
  return undefined;
}

/** JSON.parse behind checkJsonLimits: throws FleetError `too_long`, `too_deep` or `bad_request` (not JSON). */
export function parseJson(payload: Uint8Array | string, limits: JsonLimits = DEFAULT_JSON_LIMITS, what = 'payload'): unknown {
  const refused = checkJsonLimits(payload, limits, what);
  if (refused) throw refused;
  const text = typeof payload === 'string' ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    throw new FleetError('bad_request', `${what} is not JSON`);
  }
}
