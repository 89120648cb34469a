/**
 * The inference part of the protocol, without I/O: both request forms and their sentences, the binary
 * tensor data layout (slicing, BYTES elements, split bodies), framed MQTT payloads (round trip, JSON
 * still accepted, truncation refused) and the manifest's activation check policy.
 */
import { describe, expect, it } from '@jest/globals';
import {
  DTYPE_OF,
  FleetError,
  ManifestSchema,
  OIP_DATATYPE,
  SAMPLE_INLINE_MAX_BYTES,
  activationCheck,
  chunkHashes,
  decodeBytesElements,
  decodePayload,
  encodeBytesElements,
  encodeFramed,
  encodeInferBody,
  encodePayload,
  errorReply,
  makeRequest,
  oipTensorMetadata,
  okReply,
  parseInferBody,
  parseReplyPayload,
  parseRequest,
  sha256Hex,
  sliceBinaryTensors,
  splitInferBody,
  splitStoredInferBody,
} from '../src/index.js';
import type { ManifestInput } from '../src/index.js';

function thrown(fn: () => unknown): FleetError {
  try {
    fn();
  } catch (error) {
    if (error instanceof FleetError) return error;
    throw error;
  }
  throw new Error('expected a FleetError');
}

describe('request bodies', () => {
  it('reads both forms; a list of inputs is the Open Inference Protocol', () => {
    const oip = parseInferBody({ id: '42', inputs: [{ name: 'input0', shape: [2, 2], datatype: 'UINT32', data: [1, 2, 3, 4] }], outputs: [{ name: 'output0' }] });
    expect(oip).toMatchObject({ id: '42', inputs: [{ name: 'input0', datatype: 'UINT32' }] });
    const map = parseInferBody({ inputs: { x: { dtype: 'float32', shape: [1], data: [1] } } });
    expect(map).toEqual({ inputs: { x: { dtype: 'float32', shape: [1], data: [1] } } });
    expect(parseInferBody({ raw: { text: 'hi' } })).toEqual({ raw: { text: 'hi' } });
  });

  it('says which field of which form is wrong', () => {
    expect(thrown(() => parseInferBody([1]))).toMatchObject({ code: 'bad_request', message: expect.stringMatching(/must be a JSON object/) });
    expect(thrown(() => parseInferBody({ inputs: {}, extra: 1 }))).toMatchObject({ code: 'invalid_params', message: expect.stringMatching(/unknown field\(s\) extra/) });
    expect(thrown(() => parseInferBody({ inputs: [{ name: 'x', shape: [1], datatype: 'FLOAT', data: [1] }] })).message).toMatch(/inputs\.0\.datatype/);
    expect(thrown(() => parseInferBody({ inputs: [{ name: 'x', shape: [-1], datatype: 'FP32', data: [1] }] })).message).toMatch(/inputs\.0\.shape\.0/);
    expect(thrown(() => parseInferBody({ raw: { nothing: true } })).message).toMatch(/"raw" must be/);
  });

  it('the MQTT infer command takes the same bodies, with the model', () => {
    for (const params of [
      { model: 'm', inputs: { x: { dtype: 'float32', shape: [1], data: [1] } } },
      { model: 'm', version: 2, id: 'r1', inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }], parameters: { binary_data_output: true } },
    ]) {
      const parsed = parseRequest(JSON.stringify(makeRequest('infer', params as never, 1000)));
      expect(parsed.ok && parsed.request.params).toMatchObject(params);
    }
    const bad = parseRequest(JSON.stringify(makeRequest('infer', { model: 'm', inputs: [{ name: 'x', shape: [1], datatype: 'FP8' }] } as never, 1000)));
    expect(!bad.ok && bad.error.message).toMatch(/infer: inputs\.0\.datatype/);
  });

  it('maps every dtype to its datatype and back, and describes dynamic dimensions as -1', () => {
    for (const [dtype, datatype] of Object.entries(OIP_DATATYPE)) expect(DTYPE_OF[datatype]).toBe(dtype);
    expect(Object.keys(OIP_DATATYPE)).toHaveLength(13);
    expect(oipTensorMetadata({ name: 'x', dtype: 'float32', shape: ['batch', 3, null] })).toEqual({ name: 'x', datatype: 'FP32', shape: [-1, 3, -1] });
    expect(oipTensorMetadata({ name: 's', dtype: 'string', shape: [] })).toEqual({ name: 's', datatype: 'BYTES', shape: [] });
  });
});

describe('binary tensor data', () => {
  // The extension's documented request: 16 bytes for input0 (UINT32 [2, 2]), then 3 for input1 (BOOL [3]).
  const header = {
    model_name: 'mymodel',
    inputs: [
      { name: 'input0', shape: [2, 2], datatype: 'UINT32', parameters: { binary_data_size: 16 } },
      { name: 'input1', shape: [3], datatype: 'BOOL', parameters: { binary_data_size: 3 } },
    ],
    outputs: [{ name: 'output0', parameters: { binary_data: true } }],
  };
  const input0 = new Uint8Array(Uint32Array.from([1, 2, 3, 4]).buffer);
  const input1 = Uint8Array.of(1, 0, 1);

  it('splits a body at Inference-Header-Content-Length and slices each tensor in order, as views', () => {
    const { body, headerLength } = encodeInferBody(header, [input0, input1]);
    expect(body.byteLength).toBe(headerLength + 19);
    const { json, binary } = splitInferBody(body, headerLength);
    expect(json).toEqual(header);
    const request = parseInferBody(json);
    const slices = sliceBinaryTensors((request as { inputs: { name: string }[] }).inputs, binary, 'input');
    expect(slices.map((s) => Array.from(s!))).toEqual([Array.from(input0), Array.from(input1)]);
    expect(slices[0]!.buffer).toBe(body.buffer); // a view into the body, not a copy
  });

  it('refuses sizes that do not add up, and headers that are not JSON', () => {
    const inputs = header.inputs;
    expect(thrown(() => sliceBinaryTensors(inputs, new Uint8Array(18), 'input')).message).toMatch(/input "input1" declares 3 bytes .* only 2/);
    expect(thrown(() => sliceBinaryTensors(inputs, new Uint8Array(20), 'input')).message).toMatch(/20 bytes of binary data .* declare 19/);
    expect(thrown(() => sliceBinaryTensors([{ name: 'x', parameters: { binary_data_size: -1 } }], new Uint8Array(0), 'input')).message).toMatch(/binary_data_size must be a byte count/);
    expect(thrown(() => splitInferBody(Buffer.from('{"a":1}xyz'), 5))).toMatchObject({ code: 'bad_request', message: expect.stringMatching(/first 5 bytes/) });
    expect(thrown(() => splitInferBody(Buffer.from('{}'), 9)).message).toMatch(/only 2 bytes/);
  });

  it('finds where a stored body\'s JSON header ends: binary when its inputs declare binary_data_size, JSON otherwise', () => {
    // a header whose strings hold braces and escaped quotes, so the scan must know strings
    const tricky = { ...header, id: 'a } "quoted" ]{', inputs: header.inputs };
    const { body, headerLength } = encodeInferBody(tricky, [input0, input1]);
    const found = splitStoredInferBody(body);
    expect(found.headerLength).toBe(headerLength);
    expect(found.json).toEqual(tricky);
    expect(Array.from(found.binary!)).toEqual([...input0, ...input1]);
    // a JSON body (trailing white space allowed) has no header length
    const json = Buffer.from(`${JSON.stringify({ inputs: { x: { dtype: 'float32', shape: [1], data: [1] } } })}\n\n`);
    expect(splitStoredInferBody(json)).toEqual({ json: { inputs: { x: { dtype: 'float32', shape: [1], data: [1] } } }, binary: undefined, headerLength: undefined });
    // an explicit length wins
    expect(splitStoredInferBody(body, headerLength).headerLength).toBe(headerLength);
    expect(thrown(() => splitStoredInferBody(Buffer.from('{"inputs":[]}xyz'))).message).toMatch(/3 bytes after its JSON, but no input declares parameters.binary_data_size/);
    expect(thrown(() => splitStoredInferBody(Buffer.from('\x00\x01binary'))).message).toMatch(/neither JSON nor a JSON header/);
    expect(thrown(() => splitStoredInferBody(Buffer.from('{"inputs": [')))).toMatchObject({ code: 'bad_request' });
  });

  it('BYTES elements are a 4-byte little-endian length, then the bytes', () => {
    const elements = [Buffer.from('héllo'), Buffer.alloc(0), Buffer.from('x')];
    const bytes = encodeBytesElements(elements);
    expect(Array.from(bytes.subarray(0, 4))).toEqual([6, 0, 0, 0]);
    expect(decodeBytesElements(bytes, 3, 's').map((e) => Buffer.from(e).toString())).toEqual(['héllo', '', 'x']);
    expect(thrown(() => decodeBytesElements(bytes, 2, 's')).message).toMatch(/holds 2 BYTES elements, but the binary data has 3/);
    expect(thrown(() => decodeBytesElements(bytes.subarray(0, 8), 1, 's')).message).toMatch(/says 6 bytes, but only 4 are left/);
  });
});

describe('framed MQTT payloads', () => {
  it('carries a request and its binary part; the binary part starts 8-byte aligned; JSON still works', () => {
    const request = makeRequest('infer', { model: 'm', inputs: [{ name: 'x', shape: [3], datatype: 'FP32', parameters: { binary_data_size: 12 } }] }, 1000);
    const tensor = new Uint8Array(Float32Array.from([1.5, -2, 3]).buffer);
    const payload = encodeFramed(request, [tensor]);
    expect(payload[0]).toBe(0);
    const parsed = parseRequest(payload);
    if (!parsed.ok) throw parsed.error;
    expect(parsed.request.id).toBe(request.id);
    expect(Array.from(parsed.request.binary!)).toEqual(Array.from(tensor));
    expect((parsed.request.binary!.byteOffset - payload.byteOffset) % 8).toBe(0);
    const json = parseRequest(JSON.stringify(request));
    expect(json.ok && json.request.binary).toBeUndefined();
    expect(encodePayload({ a: 1 })).toBe('{"a":1}');
  });

  it('replies round-trip with their binary outputs', () => {
    const reply = okReply({ id: 'r1' }, { model_name: 'm', model_version: '1', outputs: [{ name: 'y', datatype: 'FP32', shape: [1], parameters: { binary_data_size: 4 } }] });
    const { reply: back, binary } = parseReplyPayload(encodeFramed(reply, [Uint8Array.of(0, 0, 128, 63)]));
    expect(back).toEqual(reply);
    expect(new Float32Array(Uint8Array.from(binary!).buffer)[0]).toBe(1);
    expect(parseReplyPayload(JSON.stringify(errorReply('r1', { code: 'not_found', message: 'x' }))).binary).toBeUndefined();
  });

  it('refuses a frame cut off in its prefix or its JSON part', () => {
    const payload = encodeFramed({ a: 1 }, [Uint8Array.of(1, 2)]);
    expect(thrown(() => decodePayload(payload.subarray(0, 6))).message).toMatch(/cut off inside its 8-byte prefix/);
    expect(thrown(() => decodePayload(payload.subarray(0, 10))).message).toMatch(/says its JSON part is \d+ bytes/);
    const broken = Buffer.from(payload);
    broken[8] = 0x7b + 1;
    expect(thrown(() => decodePayload(broken)).message).toMatch(/JSON part of the framed payload is not JSON/);
    const parsed = parseRequest(payload.subarray(0, 6));
    expect(!parsed.ok && parsed.corr).toBeUndefined();
  });
});

describe('activation check policy in the manifest', () => {
  const bytes = Buffer.from('model bytes');
  const base = (extra: Partial<ManifestInput>) =>
    ManifestSchema.safeParse({
      kind: 'model',
      name: 'm',
      version: 1,
      sha256: sha256Hex(bytes),
      length: bytes.length,
      issuedAt: new Date().toISOString(),
      expiresAt: new Date(Date.now() + 60_000).toISOString(),
      target: { devices: ['d'] },
      chunking: { size: 1024, sha256: chunkHashes(bytes, 1024) },
      ...extra,
    });

  it('defaults to sample when there is one, zeros otherwise; the policy may say otherwise', () => {
    const plain = base({});
    expect(plain.success && activationCheck(plain.data)).toMatchObject({ policy: 'zeros', allowNaN: false, sample: undefined });
    const old = base({ sample: { x: { dtype: 'float32', shape: [1], data: [1] } } });
    expect(old.success && activationCheck(old.data)).toMatchObject({ policy: 'sample', sample: { body: { inputs: { x: { dtype: 'float32' } } } } });
    const body = { inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }] };
    const oip = base({ check: { sample: { body } } as never });
    expect(oip.success && activationCheck(oip.data)).toMatchObject({ policy: 'sample', sample: { body } });
    const load = base({ check: { policy: 'load', allowNaN: true } });
    expect(load.success && activationCheck(load.data)).toMatchObject({ policy: 'load', allowNaN: true });
    const byHash = base({ check: { sample: { sha256: sha256Hex(Buffer.from('s')), length: 1 } } });
    expect(byHash.success).toBe(true);
  });

  it('refuses policies that cannot run, and inline samples over the cap', () => {
    const issues = (r: ReturnType<typeof base>) => (r.success ? [] : r.error.issues.map((i) => i.message));
    expect(issues(base({ check: { policy: 'sample' } }))).toContainEqual(expect.stringMatching(/needs a sample request/));
    expect(issues(base({ check: { policy: 'load', expected: { outputs: { y: { dtype: 'float32', shape: [1], data: [1] } } } } }))).toContainEqual(
      expect.stringMatching(/expected outputs need a run/),
    );
    const big = { inputs: [{ name: 'x', shape: [SAMPLE_INLINE_MAX_BYTES], datatype: 'UINT8', data: new Array(SAMPLE_INLINE_MAX_BYTES).fill(1) }] };
    expect(issues(base({ check: { sample: { body: big } } as never }))).toContainEqual(expect.stringMatching(/send a larger one by sha256/));
    expect(issues(base({ sample: { x: { dtype: 'float32', shape: [1], data: [1] } }, check: { sample: { body: { raw: { text: 'a' } } } } }))).toContainEqual(
      expect.stringMatching(/give the sample once/),
    );
  });
});
