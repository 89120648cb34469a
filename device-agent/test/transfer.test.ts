/**
 * The transfer receiver against a real broker and the real host-side sender
 * (deliverModel), with in-process devices (each its own MQTT connection and
 * credentials). Process-level tests (kill -9, agent processes) are in test/transfer.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { FleetError, chunkHashes, generateFleetKeys, sha256Hex, signManifest, topics } from '@edgefleet/protocol';
import type { ManifestInput, SignedManifest, TransferTarget } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { largeModel } from '../../test/support/onnx-models.js';
import { createRegistry, createRequester, deliverModel, openState, transferIdFor } from '@edgefleet/host-manager';
import type { DeliverOptions, ModelVersionRecord, Requester } from '@edgefleet/host-manager';
import { FileModels, startInProcessDevice } from './transfer-harness.js';
import type { InProcessDevice } from './transfer-harness.js';
import { refusal } from '../../test/support/refusal.js';

const DEVICES = ['d1', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7', 'd8', 'd9', 'g1', 'g2', 'g3', 'r1', 'x1'];
const CHUNK = 16 * 1024;
const keys = generateFleetKeys();
const attacker = generateFleetKeys();

let dir: string;
let broker: RunningBroker;
let operator: MqttClient;
let requester: Requester;
let v1: ModelVersionRecord;
let v2: ModelVersionRecord;
let blob1: string;
let blob2: string;
let bytes1: Buffer;
let bytes2: Buffer;
const started: InProcessDevice[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'transfer-'));
  broker = await startTestBroker({
    devices: DEVICES.map((id) => ({ id, token: `tok-${id}`, groups: id.startsWith('g') ? ['lab'] : [] })),
    operators: [{ id: 'ops', token: 'ops-token' }],
  });
  operator = await mqtt.connectAsync(broker.url, { clientId: 'ops-transfer', username: 'ops', password: 'ops-token', reconnectPeriod: 0 });
  requester = await createRequester(operator);
  const hostDir = join(dir, 'host');
  const registry = createRegistry(await openState(join(hostDir, 'state.json')), hostDir);
  bytes1 = largeModel({ inFeatures: 256, outFeatures: 256, seed: 1 }).bytes; // ~256 KiB: 17 chunks of 16 KiB
  bytes2 = largeModel({ inFeatures: 256, outFeatures: 256, seed: 2 }).bytes;
  await writeFile(join(dir, 'v1.onnx'), bytes1);
  await writeFile(join(dir, 'v2.onnx'), bytes2);
  v1 = await registry.add(join(dir, 'v1.onnx'), { name: 'big' });
  v2 = await registry.add(join(dir, 'v2.onnx'), { name: 'big' });
  blob1 = registry.blobPath(v1);
  blob2 = registry.blobPath(v2);
});

afterAll(async () => {
  for (const d of started) await d.close().catch(() => undefined);
  requester?.close();
  await operator?.endAsync(true);
  await broker?.close();
  await rm(dir, { recursive: true, force: true });
});

async function device(id: string, opts: { models?: FileModels; groups?: string[]; diskFree?: number; dataDir?: string; verifyFromDisk?: boolean } = {}) {
  const dataDir = opts.dataDir ?? join(dir, 'dev', id);
  const d = await startInProcessDevice({
    brokerUrl: broker.url,
    id,
    token: `tok-${id}`,
    groups: opts.groups ?? (id.startsWith('g') ? ['lab'] : []),
    dataDir,
    publicKeyPem: keys.publicKeyPem,
    models: opts.models ?? new FileModels(join(dataDir, 'models')),
    ...(opts.diskFree !== undefined ? { diskSpace: async () => ({ freeBytes: opts.diskFree! }) } : {}),
    ...(opts.verifyFromDisk ? { verifyFromDisk: true } : {}),
  });
  started.push(d);
  return d;
}

function deliver(record: ModelVersionRecord, blobPath: string, target: DeliverOptions['target'], extra: Partial<DeliverOptions> = {}) {
  const sent: { via: TransferTarget; index: number }[] = [];
  const run = deliverModel({
    mqtt: operator,
    request: requester.request,
    record,
    blobPath,
    keys,
    target,
    chunkSize: CHUNK,
    window: 4,
    requestTimeoutMs: 5000,
    deadlineMs: 20_000,
    onChunk: (via, index) => {
      sent.push({ via, index });
    },
    ...extra,
  });
  return { run, sent };
}

function manifestFor(bytes: Buffer, overrides: Partial<ManifestInput> = {}): ManifestInput {
  const now = Date.now();
  return {
    kind: 'model',
    name: 'big',
    version: 1,
    sha256: sha256Hex(bytes),
    length: bytes.length,
    issuedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 60_000).toISOString(),
    target: { devices: ['x1'] },
    chunking: { size: CHUNK, sha256: chunkHashes(bytes, CHUNK) },
    ...overrides,
  };
}


const offer = (to: string, transferId: string, manifest: SignedManifest, via: TransferTarget = { kind: 'device', name: to }) =>
  requester.request(to, 'transfer.offer', { transferId, manifest, via }, 5000);

function publishChunk(to: string, transferId: string, index: number, payload: Buffer) {
  return operator.publishAsync(topics.transferChunk({ kind: 'device', name: to }, transferId, index), payload, { qos: 1 });
}

describe('delivery to one device', () => {
  it('sends every chunk once, verifies, installs and activates; progress reaches the total', async () => {
    const d = await device('d1');
    const progress: number[] = [];
    const { run, sent } = deliver(v1, blob1, { devices: ['d1'] }, { onProgress: (_dev, received) => progress.push(received), subscribeEvents: true });
    const result = await run;
    const total = Math.ceil(bytes1.length / CHUNK);
    expect(result).toEqual({ d1: { ok: true, version: 1, activated: true, previous: null } });
    expect(sent).toHaveLength(total);
    expect(new Set(sent.map((s) => s.index)).size).toBe(total);
    expect(sent.every((s) => s.via.kind === 'device' && s.via.name === 'd1')).toBe(true);
    const models = d.models as FileModels;
    expect(sha256Hex(await models.bytesOf('big', 1))).toBe(v1.sha256);
    expect(models.activeVersion.get('big')).toBe(1);
    expect(progress.at(-1)).toBe(total);
    expect(d.events.some((e) => e.event === 'model.activated')).toBe(true);
    // the staging directory is gone
    expect(await readdir(join(dir, 'dev', 'd1', 'transfers'))).toEqual([]);
    // delivering the same version again sends nothing and just (re)activates
    const again = deliver(v1, blob1, { devices: ['d1'] });
    expect((await again.run).d1).toMatchObject({ ok: true, version: 1 });
    expect(again.sent).toHaveLength(0);
  });

  it('an upgrade to v2 reports the previous version', async () => {
    const d = await device('d2');
    await deliver(v1, blob1, { devices: ['d2'] }).run;
    const result = await deliver(v2, blob2, { devices: ['d2'] }).run;
    expect(result.d2).toEqual({ ok: true, version: 2, activated: true, previous: 1 });
    expect((d.models as FileModels).activeVersion.get('big')).toBe(2);
  });

  it('a receiver restarted in the middle resumes: the next offer asks only for what is missing', async () => {
    const dataDir = join(dir, 'dev', 'r1');
    const models = new FileModels(join(dataDir, 'models'));
    const first = await device('r1', { models, dataDir });
    const transferId = transferIdFor(v1, CHUNK);
    const signed = signManifest(manifestFor(bytes1, { target: { devices: ['r1'] } }), keys.privateKeyPem);
    const total = Math.ceil(bytes1.length / CHUNK);
    expect((await offer('r1', transferId, signed)).missing).toHaveLength(total);
    for (const index of [0, 1, 2, 5, 8]) await publishChunk('r1', transferId, index, bytes1.subarray(index * CHUNK, (index + 1) * CHUNK));
    expect((await requester.request('r1', 'transfer.status', { transferId })).missing).toHaveLength(total - 5);
    await first.close(); // the process goes away; the staging stays on disk
    // a chunk the log lists but whose bytes changed on disk is not trusted after the restart
    const part = join(dataDir, 'transfers', transferId, 'data.part');
    const fd = await import('node:fs/promises').then((fs) => fs.open(part, 'r+'));
    await fd.write(Buffer.from('garbage'), 0, 7, 8 * CHUNK + 100);
    await fd.close();
    await device('r1', { models, dataDir });
    const { run, sent } = deliver(v1, blob1, { devices: ['r1'] });
    const result = await run;
    expect(result.r1).toMatchObject({ ok: true, version: 1 });
    expect(sent.map((s) => s.index).sort((a, b) => a - b)).toEqual(
      Array.from({ length: total }, (_, i) => i).filter((i) => ![0, 1, 2, 5].includes(i)),
    );
    expect(sha256Hex(await models.bytesOf('big', 1))).toBe(v1.sha256);
  });
});

describe('fan-out to a group', () => {
  it('publishes each chunk once to the group topic; every member installs the same bytes', async () => {
    const members = await Promise.all(['g1', 'g2', 'g3'].map((id) => device(id)));
    const { run, sent } = deliver(v1, blob1, { group: 'lab', devices: ['g1', 'g2', 'g3'] });
    const result = await run;
    const total = Math.ceil(bytes1.length / CHUNK);
    for (const id of ['g1', 'g2', 'g3']) expect(result[id]).toEqual({ ok: true, version: 1, activated: true, previous: null });
    expect(sent).toHaveLength(total);
    expect(sent.every((s) => s.via.kind === 'group' && s.via.name === 'lab')).toBe(true);
    for (const m of members) {
      expect(m.chunksSeen).toBe(total);
      expect(sha256Hex(await (m.models as FileModels).bytesOf('big', 1))).toBe(v1.sha256);
    }
  });
});

describe('refusals (each with its reason; nothing installed, the active model untouched)', () => {
  let x: InProcessDevice;
  let models: FileModels;
  beforeAll(async () => {
    models = new FileModels(join(dir, 'dev', 'x1', 'models'));
    x = await device('x1', { models });
    await deliver(v1, blob1, { devices: ['x1'] }).run; // v1 active
  });
  const untouched = () => {
    expect(models.activeVersion.get('big')).toBe(1);
    expect(models.list()).toEqual([{ name: 'big', active: 1, versions: [1] }]);
  };

  it('bad signature: signed with another key', async () => {
    const e = await refusal(offer('x1', 'tbad', signManifest(manifestFor(bytes2, { version: 2 }), attacker.privateKeyPem)));
    expect(e.code).toBe('bad_signature');
    untouched();
  });

  it('bad signature: a field changed after signing', async () => {
    const signed = signManifest(manifestFor(bytes2, { version: 2 }), keys.privateKeyPem);
    const tampered = { ...signed, manifest: { ...(signed.manifest as object), length: bytes2.length + 1 } };
    expect((await refusal(offer('x1', 'tbad2', tampered))).code).toBe('bad_signature');
    untouched();
  });

  it('expired manifest', async () => {
    const past = Date.now() - 120_000;
    const signed = signManifest(
      manifestFor(bytes2, { version: 2, issuedAt: new Date(past).toISOString(), expiresAt: new Date(past + 1000).toISOString() }),
      keys.privateKeyPem,
    );
    const e = await refusal(offer('x1', 'texp', signed));
    expect(e.code).toBe('expired');
    expect(e.message).toMatch(/sign a fresh one/);
    untouched();
  });

  it('wrong target: another device, and chunks announced through a group it is not in', async () => {
    const other = signManifest(manifestFor(bytes2, { version: 2, target: { devices: ['d9'] } }), keys.privateKeyPem);
    expect((await refusal(offer('x1', 'twt', other))).code).toBe('wrong_target');
    const mine = signManifest(manifestFor(bytes2, { version: 2 }), keys.privateKeyPem);
    expect((await refusal(offer('x1', 'twt2', mine, { kind: 'group', name: 'lab' }))).code).toBe('wrong_target');
    untouched();
  });

  it('lower version than already accepted, unless signed as an explicit rollback', async () => {
    await models.recordAccepted('big', 3);
    const low = signManifest(manifestFor(bytes2, { version: 2 }), keys.privateKeyPem);
    const e = await refusal(offer('x1', 'tlow', low));
    expect(e.code).toBe('lower_version');
    expect(e.message).toMatch(/explicit rollback/);
    const unnumbered = signManifest(manifestFor(bytes2, { version: 2, rollback: true }), keys.privateKeyPem);
    expect((await refusal(offer('x1', 'tlow1', unnumbered))).message).toMatch(/no sequence number/);
    const rollback = signManifest(manifestFor(bytes2, { version: 2, rollback: true, rollbackSeq: 1 }), keys.privateKeyPem);
    expect((await offer('x1', 'tlow2', rollback)).missing.length).toBeGreaterThan(0);
    models.accepted.set('big', 1);
    untouched();
  });

  it('disk full (free space injected through the diskSpace/statfs option)', async () => {
    const small = await device('d3', { diskFree: bytes2.length - 1 });
    const result = await deliver(v2, blob2, { devices: ['d3'] }).run;
    expect(result.d3).toMatchObject({ ok: false, error: { code: 'disk_full' } });
    expect((result.d3 as { error: { message: string } }).error.message).toMatch(/free space on the device/);
    expect((small.models as FileModels).list()).toEqual([]);
  });

  it('corrupt chunk: dropped, reported, stays missing; commit then refuses with missing_chunk', async () => {
    const transferId = 'tcorrupt';
    const signed = signManifest(manifestFor(bytes2, { version: 2 }), keys.privateKeyPem);
    await offer('x1', transferId, signed);
    const good = bytes2.subarray(0, CHUNK);
    const bad = Buffer.from(good);
    bad[100] = (bad[100]! + 1) % 256;
    await publishChunk('x1', transferId, 0, bad);
    await publishChunk('x1', transferId, 1, bytes2.subarray(CHUNK, 2 * CHUNK));
    const status = await requester.request('x1', 'transfer.status', { transferId });
    expect(status.missing).toContain(0);
    expect(status.missing).not.toContain(1);
    expect(x.receiver.stats().rejected['corrupt_chunk']).toBe(1);
    expect(x.events.some((e) => e.event === 'log' && e.data.message.startsWith('corrupt_chunk'))).toBe(true);
    const e = await refusal(requester.request('x1', 'transfer.commit', { transferId }, 5000));
    expect(e.code).toBe('missing_chunk');
    untouched();
  });

  it('chunk past the declared length (index beyond the last, or a last chunk too long) is refused; the staged file never grows', async () => {
    const transferId = 'tlong';
    const signed = signManifest(manifestFor(bytes2, { version: 2 }), keys.privateKeyPem);
    const { total } = await offer('x1', transferId, signed);
    await publishChunk('x1', transferId, total, Buffer.alloc(CHUNK, 1));
    await publishChunk('x1', transferId, total + 1000, Buffer.alloc(10, 1));
    const lastLen = bytes2.length - (total - 1) * CHUNK;
    await publishChunk('x1', transferId, total - 1, Buffer.concat([bytes2.subarray((total - 1) * CHUNK), Buffer.alloc(100)]));
    const status = await requester.request('x1', 'transfer.status', { transferId });
    expect(status.missing).toContain(total - 1);
    expect(x.receiver.stats().rejected['too_long']).toBe(3);
    expect((await stat(join(dir, 'dev', 'x1', 'transfers', transferId, 'data.part'))).size).toBe(bytes2.length);
    expect(lastLen).toBeLessThan(CHUNK);
    untouched();
  });

  it('truncated: a short chunk is dropped; a staged file cut short on disk fails the commit with truncated', async () => {
    const transferId = 'ttrunc';
    const signed = signManifest(manifestFor(bytes2, { version: 2 }), keys.privateKeyPem);
    const { total } = await offer('x1', transferId, signed);
    await publishChunk('x1', transferId, 0, bytes2.subarray(0, CHUNK - 1));
    expect((await requester.request('x1', 'transfer.status', { transferId })).missing).toContain(0);
    expect(x.receiver.stats().rejected['truncated']).toBe(1);
    for (let i = 0; i < total; i++) await publishChunk('x1', transferId, i, bytes2.subarray(i * CHUNK, (i + 1) * CHUNK));
    expect((await requester.request('x1', 'transfer.status', { transferId })).missing).toEqual([]);
    await truncate(join(dir, 'dev', 'x1', 'transfers', transferId, 'data.part'), bytes2.length - 10);
    const e = await refusal(requester.request('x1', 'transfer.commit', { transferId }, 5000));
    expect(e.code).toBe('truncated');
    untouched();
  });

  async function stageAll(to: string, transferId: string, bytes: Buffer, version = 2) {
    const signed = signManifest(manifestFor(bytes, { version, target: { devices: [to] } }), keys.privateKeyPem);
    const { total } = await offer(to, transferId, signed);
    for (let i = 0; i < total; i++) await publishChunk(to, transferId, i, bytes.subarray(i * CHUNK, (i + 1) * CHUNK));
    expect((await requester.request(to, 'transfer.status', { transferId })).missing).toEqual([]);
    return join(dir, 'dev', to, 'transfers', transferId, 'data.part');
  }
  async function flipByte(file: string, at: number) {
    const content = await readFile(file);
    content[at] = (content[at]! + 1) % 256;
    await writeFile(file, content);
  }

  it('bytes changed on disk after the chunks were verified (receiver reading the file back): corrupt_chunk, and those chunks are asked for again', async () => {
    const models6 = new FileModels(join(dir, 'dev', 'd6', 'models'));
    await device('d6', { models: models6, verifyFromDisk: true });
    const part = await stageAll('d6', 'tdisk', bytes2);
    await flipByte(part, 3 * CHUNK + 7);
    const e = await refusal(requester.request('d6', 'transfer.commit', { transferId: 'tdisk' }, 5000));
    expect(e.code).toBe('corrupt_chunk');
    expect((await requester.request('d6', 'transfer.status', { transferId: 'tdisk' })).missing).toEqual([3]);
    expect(models6.list()).toEqual([]);
  });

  it('bytes changed on disk, caught by a store that re-verifies what it installs (as the agent\'s does): the changed chunk is asked for again and the retry installs the right bytes', async () => {
    const models7 = new FileModels(join(dir, 'dev', 'd7', 'models'), true);
    await device('d7', { models: models7 });
    const part = await stageAll('d7', transferIdFor(v2, CHUNK), bytes2);
    await flipByte(part, 5 * CHUNK + 1);
    const e = await refusal(requester.request('d7', 'transfer.commit', { transferId: transferIdFor(v2, CHUNK) }, 5000));
    expect(e.code).toBe('corrupt_chunk');
    expect((await requester.request('d7', 'transfer.status', { transferId: transferIdFor(v2, CHUNK) })).missing).toEqual([5]);
    const { run, sent } = deliver(v2, blob2, { devices: ['d7'] });
    expect((await run).d7).toMatchObject({ ok: true, version: 2 });
    expect(sent.map((x) => x.index)).toEqual([5]);
    expect(sha256Hex(await models7.bytesOf('big', 2))).toBe(v2.sha256);
  });

  it('a manifest whose whole-file sha256 disagrees with its chunk hashes is refused at commit (whole-file check from the chunks as they came)', async () => {
    const signed = signManifest(manifestFor(bytes2, { version: 2, sha256: sha256Hex(bytes1) }), keys.privateKeyPem);
    const { total } = await offer('x1', 'tinconsistent', signed);
    for (let i = 0; i < total; i++) await publishChunk('x1', 'tinconsistent', i, bytes2.subarray(i * CHUNK, (i + 1) * CHUNK));
    const e = await refusal(requester.request('x1', 'transfer.commit', { transferId: 'tinconsistent' }, 5000));
    expect(e.code).toBe('corrupt_chunk');
    expect(e.message).toMatch(/inconsistent/);
    untouched();
  });

  it('activation failure (load_failed) is reported; the version is removed and the old one stays active', async () => {
    models.failNextActivation = new FleetError('load_failed', 'onnxruntime could not load the model');
    const result = await deliver(v2, blob2, { devices: ['x1'] }).run;
    expect(result.x1).toMatchObject({ ok: false, error: { code: 'load_failed' } });
    expect(x.events.some((e) => e.event === 'model.failed' && e.data.error.code === 'load_failed')).toBe(true);
    untouched();
  });

  it('a device that cannot run the model (reported runtime too old) gets nothing: incompatible', async () => {
    const { run, sent } = deliver(v2, blob2, { devices: ['x1'] }, {
      deviceInfo: () => ({
        agentVersion: '1', hostname: 'x', arch: 'x64', platform: 'linux', cpus: 2, memoryBytes: 8e9,
        onnxruntime: { version: '1.5.0', executionProviders: ['cpu'] }, docker: false, groups: [], models: [],
      }),
    });
    const result = await run;
    expect(result.x1).toMatchObject({ ok: false, error: { code: 'incompatible' } });
    expect(sent).toHaveLength(0);
    untouched();
  });

  it('a device that does not answer is reported, the others still get the model', async () => {
    await device('d4');
    const result = await deliver(v1, blob1, { devices: ['d4', 'd5'] }, { requestTimeoutMs: 500 }).run;
    expect(result.d4).toMatchObject({ ok: true, version: 1 });
    expect(result.d5).toMatchObject({ ok: false, error: { code: 'deadline_exceeded' } });
  });
});
