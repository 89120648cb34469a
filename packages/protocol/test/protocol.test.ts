import { describe, expect, it } from '@jest/globals';
import {
  DEVICE_INFO_LIMITS,
  StatusMessageSchema,
  checkAcceptance,
  isRollbackBelow,
  parseMessage,
  chunkHashes,
  generateFleetKeys,
  makeRequest,
  mayPublish,
  mayRetain,
  maySubscribe,
  maxSubscribeQos,
  parseRequest,
  parseTopic,
  sha256Hex,
  signManifest,
  topics,
  verifyManifest,
} from '../src/index.js';
import type { ManifestInput, Principal } from '../src/index.js';

const device: Principal = { role: 'device', id: 'pi-1', groups: ['lab'] };
const operator: Principal = { role: 'operator', id: 'ops' };

describe('topics', () => {
  it('builds and parses the same topics', () => {
    expect(parseTopic(topics.device('pi-1', 'telemetry'))).toEqual({ kind: 'device', device: 'pi-1', channel: 'telemetry' });
    expect(parseTopic(topics.group('lab', 'commands'))).toEqual({ kind: 'group', group: 'lab', channel: 'commands' });
    expect(parseTopic(topics.transferChunk({ kind: 'group', name: 'lab' }, 't1', 7))).toEqual({
      kind: 'transfer',
      target: { kind: 'group', name: 'lab' },
      transferId: 't1',
      index: 7,
    });
  });
  it('refuses names that would escape a topic level or a directory', () => {
    expect(() => topics.device('a/b', 'status')).toThrow(/invalid device id/);
    expect(() => topics.device('..', 'status')).toThrow(/invalid device id/);
    expect(() => topics.device('+', 'status')).toThrow(/invalid device id/);
    expect(parseTopic('fleet/v1/devices/pi-1/secrets')).toBeUndefined();
    expect(parseTopic('fleet/v2/devices/pi-1/status')).toBeUndefined();
  });
});

describe('access rules', () => {
  it('lets a device publish only in its own subtree', () => {
    expect(mayPublish(device, topics.device('pi-1', 'telemetry'))).toBe(true);
    expect(mayPublish(device, topics.device('pi-2', 'telemetry'))).toBe(false);
    expect(mayPublish(device, topics.device('pi-1', 'commands'))).toBe(false);
    expect(mayPublish(device, topics.group('lab', 'commands'))).toBe(false);
    expect(mayPublish(device, 'hello')).toBe(false);
  });
  it('lets devices only subscribe to the legacy topic; operators publish there', () => {
    const legacy = { legacyTopic: 'hello' };
    expect(mayPublish(device, 'hello', legacy)).toBe(false);
    expect(maySubscribe(device, 'hello', legacy)).toBe(true);
    expect(mayPublish(operator, 'hello', legacy)).toBe(true);
    expect(maySubscribe(operator, 'hello', legacy)).toBe(true);
    expect(mayPublish(operator, 'hello')).toBe(false); // no legacy topic configured: nobody
  });
  it('allows retained messages on presence only, never on the legacy topic', () => {
    const legacy = { legacyTopic: 'hello' };
    expect(mayRetain(topics.device('pi-1', 'status'), legacy)).toBe(true);
    for (const topic of ['hello', topics.device('pi-1', 'events'), topics.device('pi-1', 'telemetry'), topics.device('pi-1', 'replies'), topics.device('pi-1', 'commands'), topics.group('lab', 'commands'), topics.transferChunk({ kind: 'group', name: 'lab' }, 't1', 0), 'elsewhere']) {
      expect([topic, mayRetain(topic, legacy)]).toEqual([topic, false]);
    }
  });
  it("allows a device's transfer filters at QoS 0 only, so nothing is queued for it while it is away", () => {
    const groupChunks = topics.transferFilter({ kind: 'group', name: 'lab' });
    expect(maxSubscribeQos(device, groupChunks)).toBe(0);
    expect(maxSubscribeQos(device, topics.transferFilter({ kind: 'device', name: 'pi-1' }))).toBe(0);
    expect(maxSubscribeQos(device, topics.transferChunk({ kind: 'device', name: 'pi-1' }, 't1', 3))).toBe(0);
    expect(maySubscribe(device, groupChunks, {}, 0)).toBe(true);
    expect(maySubscribe(device, groupChunks, {}, 1)).toBe(false);
    expect(maySubscribe(device, topics.device('pi-1', 'commands'), {}, 1)).toBe(true);
    expect(maxSubscribeQos(device, topics.device('pi-2', 'commands'))).toBeUndefined();
    expect(maySubscribe(operator, groupChunks, {}, 1)).toBe(true);
  });
  it('lets a device subscribe to its commands, transfers and groups only', () => {
    expect(maySubscribe(device, topics.device('pi-1', 'commands'))).toBe(true);
    expect(maySubscribe(device, topics.transferFilter({ kind: 'device', name: 'pi-1' }))).toBe(true);
    expect(maySubscribe(device, topics.transferFilter({ kind: 'group', name: 'lab' }))).toBe(true);
    expect(maySubscribe(device, topics.transferFilter({ kind: 'group', name: 'other' }))).toBe(false);
    for (const filter of ['#', '$SYS/#', 'fleet/v1/#', 'fleet/v1/devices/+/commands', topics.device('pi-2', 'commands'), 'fleet/v1/devices/pi-1/#']) {
      expect([filter, maySubscribe(device, filter)]).toEqual([filter, false]);
    }
  });
  it('gives operators the fleet tree and $SYS but not wildcard publishes', () => {
    expect(maySubscribe(operator, 'fleet/v1/devices/+/status')).toBe(true);
    expect(maySubscribe(operator, '$SYS/#')).toBe(true);
    expect(maySubscribe(operator, '#')).toBe(false);
    expect(mayPublish(operator, topics.device('pi-1', 'commands'))).toBe(true);
    expect(mayPublish(operator, 'fleet/v1/devices/+/commands')).toBe(false);
    expect(mayPublish(operator, 'elsewhere')).toBe(false);
  });
});

describe('requests', () => {
  it('round-trips a valid request', () => {
    const request = makeRequest('models.activate', { model: 'food', version: 2 }, 5000);
    const parsed = parseRequest(JSON.stringify(request));
    expect(parsed).toEqual({ ok: true, request });
  });
  it('says what is wrong and keeps the id to reply to', () => {
    expect(parseRequest('not json')).toMatchObject({ ok: false, error: { code: 'bad_request' } });
    const unknown = parseRequest(JSON.stringify({ ...makeRequest('ping', {}, 1000), command: 'format-disk' }));
    expect(unknown).toMatchObject({ ok: false, error: { code: 'unknown_command' } });
    const bad = makeRequest('models.activate', { model: 'food', version: -1 }, 1000);
    const parsed = parseRequest(JSON.stringify(bad));
    expect(parsed).toMatchObject({ ok: false, corr: bad.id, error: { code: 'invalid_params' } });
    if (!parsed.ok) expect(parsed.error.message).toMatch(/version/);
  });
});

describe('manifests', () => {
  const keys = generateFleetKeys();
  const bytes = Buffer.alloc(1000, 7);
  const manifest: ManifestInput = {
    kind: 'model',
    name: 'food',
    version: 3,
    sha256: sha256Hex(bytes),
    length: bytes.length,
    issuedAt: new Date().toISOString(),
    expiresAt: new Date(Date.now() + 60_000).toISOString(),
    target: { groups: ['lab'] },
    chunking: { size: 256, sha256: chunkHashes(bytes, 256) },
  };
  const identity = { id: 'pi-1', groups: ['lab'], arch: 'arm64' };

  it('verifies what the fleet key signed', () => {
    const signed = signManifest(manifest, keys.privateKeyPem);
    const check = verifyManifest(JSON.parse(JSON.stringify(signed)), keys.publicKeyPem);
    expect(check.ok).toBe(true);
    if (check.ok) expect(checkAcceptance(check.manifest, { device: identity, highestAccepted: 2, now: new Date() })).toBeUndefined();
  });
  it('rejects tampering and a foreign key', () => {
    const signed = signManifest(manifest, keys.privateKeyPem);
    const tampered = { ...signed, manifest: { ...(signed.manifest as object), version: 4 } };
    expect(verifyManifest(tampered, keys.publicKeyPem)).toMatchObject({ ok: false, code: 'bad_signature' });
    const other = generateFleetKeys();
    expect(verifyManifest(signManifest(manifest, other.privateKeyPem), keys.publicKeyPem)).toMatchObject({ ok: false, code: 'bad_signature' });
    expect(verifyManifest({ ...signed, signature: 'AAAA' }, keys.publicKeyPem)).toMatchObject({ ok: false, code: 'bad_signature' });
  });
  it('refuses the wrong target, an expired manifest and a lower version', () => {
    const check = verifyManifest(signManifest(manifest, keys.privateKeyPem), keys.publicKeyPem);
    if (!check.ok) throw new Error('expected a valid manifest');
    const now = new Date();
    expect(checkAcceptance(check.manifest, { device: { ...identity, groups: [] }, highestAccepted: 0, now })?.code).toBe('wrong_target');
    expect(checkAcceptance(check.manifest, { device: identity, highestAccepted: 0, now: new Date(Date.now() + 120_000) })?.code).toBe('expired');
    expect(checkAcceptance(check.manifest, { device: identity, highestAccepted: 5, now })?.code).toBe('lower_version');
    const rollback = verifyManifest(signManifest({ ...manifest, rollback: true, rollbackSeq: 7 }, keys.privateKeyPem), keys.publicKeyPem);
    if (!rollback.ok) throw new Error('expected a valid manifest');
    expect(checkAcceptance(rollback.manifest, { device: identity, highestAccepted: 5, now })).toBeUndefined();
    expect(checkAcceptance(rollback.manifest, { device: identity, highestAccepted: 5, lastRollbackSeq: 6, now })).toBeUndefined();
  });
  it('takes a rollback manifest once: its sequence number must be above the last one the device used for the model', () => {
    const now = new Date();
    const signed = (extra: object) => {
      const check = verifyManifest(signManifest({ ...manifest, rollback: true, ...extra }, keys.privateKeyPem), keys.publicKeyPem);
      if (!check.ok) throw new Error('expected a valid manifest');
      return check.manifest;
    };
    const used = checkAcceptance(signed({ rollbackSeq: 7 }), { device: identity, highestAccepted: 5, lastRollbackSeq: 7, now });
    expect(used?.code).toBe('replayed');
    expect(used?.message).toMatch(/sequence number 7, and this device already used 7 for food: a rollback manifest works once/);
    expect(checkAcceptance(signed({ rollbackSeq: 3 }), { device: identity, highestAccepted: 5, lastRollbackSeq: 7, now })?.code).toBe('replayed');
    // without a sequence number a rollback could be replayed forever: refused
    expect(checkAcceptance(signed({}), { device: identity, highestAccepted: 5, now })?.message).toMatch(/carries no sequence number/);
    // not below the highest accepted: not a rollback, nothing is used up
    expect(checkAcceptance(signed({ rollbackSeq: 1 }), { device: identity, highestAccepted: 3, lastRollbackSeq: 7, now })).toBeUndefined();
    expect(isRollbackBelow(signed({ rollbackSeq: 1 }), 3)).toBe(false);
    expect(isRollbackBelow(signed({ rollbackSeq: 1 }), 4)).toBe(true);
  });
  it('refuses a manifest whose chunk list does not fit its length', () => {
    expect(() => signManifest({ ...manifest, chunking: { size: 256, sha256: [] } }, keys.privateKeyPem)).toThrow(/one hash per chunk/);
  });
});

describe('what a device may say about itself', () => {
  const info = { agentVersion: '1', hostname: 'pi-1', arch: 'arm64', platform: 'linux', cpus: 4, memoryBytes: 1, onnxruntime: null, docker: false, groups: [], models: [] };
  const status = (device: object) => JSON.stringify({ v: 1, id: 's', ts: 1, type: 'status', online: true, device });
  it('is bounded and printable: long strings, long lists and control characters are refused', () => {
    expect(parseMessage(StatusMessageSchema, status(info))).toMatchObject({ online: true });
    for (const bad of [
      { ...info, hostname: 'h'.repeat(DEVICE_INFO_LIMITS.text + 1) },
      { ...info, hostname: 'pi-1\r\u001b[2Kcontroller' },
      { ...info, platform: 'linux\u202e' },
      { ...info, models: Array.from({ length: DEVICE_INFO_LIMITS.list + 1 }, (_, i) => ({ name: `m${i}`, version: 1 })) },
    ]) {
      expect(() => parseMessage(StatusMessageSchema, status(bad))).toThrow(expect.objectContaining({ code: 'bad_request' }));
    }
    expect(() => parseMessage(StatusMessageSchema, JSON.stringify({ v: 1, id: 's', ts: 1, type: 'status', online: false, reason: 'gone\u001b[1m' }))).toThrow(/control characters/);
  });
});
