import { afterEach, describe, expect, it, jest } from '@jest/globals';
import {
  EventSchema,
  FleetError,
  MAX_JSON_DEPTH,
  MESSAGE_LIMITS,
  ReplySchema,
  StatusMessageSchema,
  TelemetryMessageSchema,
  checkJsonLimits,
  jsonTooDeepAt,
  limitsFor,
  makeRequest,
  makeTelemetry,
  parseMessage,
  parseRequest,
} from '../src/index.js';

/** The 3.8 MB payload of issue 10: 1.9 million `[` then as many `]`. */
const deepArrays = Buffer.from('['.repeat(1_900_000) + ']'.repeat(1_900_000));

const sample = { ts: 1, cpuPercent: 3, load: [0.1, 0.2, 0.3], memoryUsedBytes: 1, memoryTotalBytes: 2, diskFreeBytes: null, temperatureC: null, uptimeS: 5, models: {} };

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return (error as FleetError).code;
  }
  return undefined;
}

describe('JSON size and depth, before JSON.parse', () => {
  afterEach(() => {
    jest.restoreAllMocks();
  });

  it('refuses the 3.8 MB [[[[…]]]] payload at every boundary without ever calling JSON.parse', () => {
    const parse = jest.spyOn(JSON, 'parse');
    // over the byte limit of what devices send unasked: refused from its length alone
    for (const schema of [TelemetryMessageSchema, EventSchema, StatusMessageSchema]) {
      expect(codeOf(() => parseMessage(schema, deepArrays))).toBe('too_long');
    }
    // within the 4 MiB of replies and requests: the depth scan refuses it
    expect(deepArrays.length).toBeLessThan(MESSAGE_LIMITS.reply.maxBytes);
    expect(codeOf(() => parseMessage(ReplySchema, deepArrays))).toBe('too_deep');
    expect(parseRequest(deepArrays)).toMatchObject({ ok: false, corr: undefined, error: { code: 'too_deep' } });
    expect(parse).not.toHaveBeenCalled();
    // the spy does see the parses that happen: a valid message goes through JSON.parse once
    parseMessage(TelemetryMessageSchema, JSON.stringify(makeTelemetry(1, 0, sample)));
    expect(parse).toHaveBeenCalledTimes(1);
  });

  it('refuses one level past the limit and parses at the limit (brackets inside strings do not count)', () => {
    const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
    expect(jsonTooDeepAt(Buffer.from(nested(MAX_JSON_DEPTH)), MAX_JSON_DEPTH)).toBe(-1);
    expect(jsonTooDeepAt(Buffer.from(nested(MAX_JSON_DEPTH + 1)), MAX_JSON_DEPTH)).toBe(MAX_JSON_DEPTH);
    const tricky = JSON.stringify({ s: '[[[[{{{{ \\" [[[[ é ' + '['.repeat(100), t: ['"', '\\'] });
    expect(jsonTooDeepAt(Buffer.from(tricky), 3)).toBe(-1);
    expect(checkJsonLimits(tricky, { maxBytes: 10_000, maxDepth: 2 })).toBeUndefined();
    expect(checkJsonLimits(tricky, { maxBytes: 10_000, maxDepth: 1 })?.code).toBe('too_deep');
  });

  it('applies the limits of the message kind: small for telemetry and events, large for replies', () => {
    expect(limitsFor(TelemetryMessageSchema)).toBe(MESSAGE_LIMITS.telemetry);
    expect(limitsFor(EventSchema)).toBe(MESSAGE_LIMITS.event);
    expect(limitsFor(StatusMessageSchema)).toBe(MESSAGE_LIMITS.status);
    expect(limitsFor(ReplySchema)).toBe(MESSAGE_LIMITS.reply);
    expect(MESSAGE_LIMITS.telemetry.maxBytes).toBeLessThan(MESSAGE_LIMITS.status.maxBytes);
    expect(MESSAGE_LIMITS.status.maxBytes).toBeLessThan(MESSAGE_LIMITS.reply.maxBytes);

    const telemetry = makeTelemetry(1, 0, sample);
    expect(parseMessage(TelemetryMessageSchema, JSON.stringify(telemetry))).toEqual(telemetry);
    // a schema-valid telemetry message padded past 64 KiB: refused for its size, with the limit in the sentence
    const padded = JSON.stringify({ ...telemetry, sample: { ...sample, models: Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`m${i}@1`, { requests: 1, errors: 0, p50Ms: 1, p95Ms: 1, p99Ms: 1 }])) } });
    expect(TelemetryMessageSchema.safeParse(JSON.parse(padded)).success).toBe(true);
    const parse = jest.spyOn(JSON, 'parse');
    expect(() => parseMessage(TelemetryMessageSchema, padded)).toThrow(/over the 65536-byte limit/);
    expect(codeOf(() => parseMessage(TelemetryMessageSchema, padded))).toBe('too_long');
    expect(parse).not.toHaveBeenCalled();
    parse.mockRestore();
    // the same bytes are fine as a reply (explicit limits win over the schema's)
    expect(() => parseMessage(TelemetryMessageSchema, padded, MESSAGE_LIMITS.reply)).not.toThrow();
  });

  it('counts UTF-8 bytes, not characters, and still reports malformed JSON as bad_request', () => {
    const limits = { maxBytes: 10, maxDepth: 4 };
    expect(checkJsonLimits('"éééé"', limits)).toBeUndefined(); // 10 bytes
    expect(checkJsonLimits('"ééééé"', limits)?.code).toBe('too_long'); // 12 bytes, 7 characters
    expect(codeOf(() => parseMessage(TelemetryMessageSchema, 'not json'))).toBe('bad_request');
    expect(parseRequest('not json')).toMatchObject({ ok: false, error: { code: 'bad_request', message: 'request is not JSON' } });
    const ok = makeRequest('ping', {}, 1000);
    expect(parseRequest(Buffer.from(JSON.stringify(ok)))).toEqual({ ok: true, request: ok });
  });
});
