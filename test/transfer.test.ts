/**
 * Model delivery to real agent processes (device-agent/dist/bin/deviceAgent.js) through a
 * real broker: kill -9 in the middle of a transfer and during activation, every refusal with
 * its reason while the old model keeps answering, fan-out to a group, and a device that was
 * offline during the transfer getting the model when it returns.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { EventSchema, FleetError, chunkHashes, parseTopic, sha256Hex, signManifest, tensorMapResult, topics } from '@edgefleet/protocol';
import type { FleetEvent, ManifestInput, SignedManifest, TransferTarget } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from './support/broker.js';
import { cleanupAgents, connectOperator, startAgent, watchStatus } from './support/agent-process.js';
import type { AgentProcess, AgentProcessOptions, StatusWatcher } from './support/agent-process.js';
import { alwaysFailingModel, encodeModel, largeModel, linearModel, node, valueInfo } from './support/onnx-models.js';
import type { LinearModel } from './support/onnx-models.js';
import { createRegistry, createRequester, loadOrCreateFleetKeys, openState, transferIdFor } from '@edgefleet/host-manager';
import type { DeliverOptions, FleetKeys, ModelVersionRecord, Registry, Requester } from '@edgefleet/host-manager';
import { refusal } from './support/refusal.js';
import { mountSmallDisk, receiverWithFreeSpace, tmpfsWorks } from './support/small-disk.js';
import { recordedDelivery } from './support/delivery.js';

const IDS = ['k1', 'k2', 't1', 'f1', 'f2', 'f3', 'df', 'l1'];
const GROUP_OF: Record<string, string[]> = { f1: ['floor'], f2: ['floor'], f3: ['floor'] };

let work: string;
let broker: RunningBroker;
let operator: MqttClient;
let watcher: StatusWatcher;
let requester: Requester;
let registry: Registry;
let keys: FleetKeys;
let publicKeyFile: string;
const agents: AgentProcess[] = [];
const events: { device: string; event: FleetEvent }[] = [];

const v1 = linearModel({ seed: 1 });
const v2 = linearModel({ seed: 2 });
const big = largeModel({ inFeatures: 512, outFeatures: 1024, seed: 5 }); // ~2 MiB
let rec1: ModelVersionRecord;
let rec2: ModelVersionRecord;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'transfer-e2e-'));
  broker = await startTestBroker({
    devices: IDS.map((id) => ({ id, token: `tok-${id}`, groups: GROUP_OF[id] ?? [] })),
    operators: [{ id: 'ops', token: 'ops-token' }],
  });
  operator = await connectOperator(broker.url, { id: 'ops', token: 'ops-token' });
  watcher = await watchStatus(operator);
  requester = await createRequester(operator);
  operator.on('message', (topic, payload) => {
    const parsed = parseTopic(topic);
    if (parsed?.kind !== 'device' || parsed.channel !== 'events') return;
    const e = EventSchema.safeParse(JSON.parse(payload.toString()));
    if (e.success) events.push({ device: parsed.device, event: e.data });
  });
  await operator.subscribeAsync(topics.allDevices('events'), { qos: 0 });
  const hostDir = join(work, 'host');
  keys = await loadOrCreateFleetKeys(hostDir);
  publicKeyFile = join(hostDir, 'keys', 'fleet-key.pub.pem');
  registry = createRegistry(await openState(join(hostDir, 'state.json')), hostDir);
  rec1 = await addModel('m', v1.bytes);
  rec2 = await addModel('m', v2.bytes);
}, 60_000);

afterAll(async () => {
  await cleanupAgents(...agents);
  watcher?.close();
  requester?.close();
  await operator?.endAsync(true);
  await broker?.close();
  await rm(work, { recursive: true, force: true });
});

async function addModel(name: string, bytes: Uint8Array): Promise<ModelVersionRecord> {
  const file = join(work, `${name}-${sha256Hex(bytes).slice(0, 8)}.onnx`);
  await writeFile(file, bytes);
  return registry.add(file, { name });
}

async function agent(id: string, extra: Partial<AgentProcessOptions> = {}): Promise<AgentProcess> {
  const a = await startAgent(
    { broker: broker.url, id, token: `tok-${id}`, groups: GROUP_OF[id] ?? [], args: ['--fleet-public-key', publicKeyFile], ...extra },
    watcher,
    30_000,
  );
  agents.push(a);
  return a;
}

function deliver(record: ModelVersionRecord, target: DeliverOptions['target'], extra: Partial<DeliverOptions> = {}) {
  return recordedDelivery({
    mqtt: operator,
    request: requester.request,
    record,
    blobPath: registry.blobPath(record),
    keys,
    target,
    requestTimeoutMs: 5000,
    commitTimeoutMs: 30_000,
    deadlineMs: 60_000,
    ...extra,
  });
}

/** The model's answer on the device, checked against plain-JS math for the version expected. */
async function answers(device: string, model: LinearModel, name = 'm'): Promise<boolean> {
  const x = [0.5, -1, 2, 0.25];
  const r = tensorMapResult(await requester.request(device, 'infer', { model: name, inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } }, 10_000));
  const y = r.outputs['y']!.data as number[];
  const expected = model.expected(x);
  return y.length === expected.length && y.every((v, i) => Math.abs(v - expected[i]!) < 1e-4);
}

async function activeVersion(device: string, name = 'm'): Promise<number | null | undefined> {
  const list = await requester.request(device, 'models.list', {}, 10_000);
  return list.models.find((s) => s.name === name)?.active;
}


describe('kill -9 of the agent', () => {
  it('in the middle of a transfer: after a restart only the missing chunks are sent again', async () => {
    const a = await agent('k1');
    expect((await deliver(rec1, { devices: ['k1'] }).run).k1).toMatchObject({ ok: true, version: 1 });
    const recBig = await addModel('m', big.bytes);
    const chunkSize = 8 * 1024;
    const total = Math.ceil(recBig.length / chunkSize);
    // window 1: the host publishes a chunk only after the previous one was acknowledged. Once a
    // quarter is out, the sender is held while the agent confirms what it has (status waits until
    // every chunk received is written), then the agent is killed with SIGKILL.
    let acked = 0;
    const first = deliver(recBig, { devices: ['k1'] }, {
      chunkSize,
      window: 1,
      requestTimeoutMs: 1500,
      onChunk: async () => {
        if (++acked !== Math.floor(total / 4)) return;
        await requester.request('k1', 'transfer.status', { transferId: transferIdFor(recBig, chunkSize) });
        a.child.kill('SIGKILL');
        await a.exited;
      },
    });
    const result1 = await first.run;
    await a.exited;
    expect(result1.k1).toMatchObject({ ok: false });
    expect(first.sent.length).toBeGreaterThanOrEqual(Math.floor(total / 4));

    // the old model is intact and serving after the restart; the transfer resumes
    const again = await agent('k1', { dataDir: a.dataDir });
    expect(await activeVersion('k1')).toBe(1);
    expect(await answers('k1', v1)).toBe(true);
    const second = deliver(recBig, { devices: ['k1'] }, { chunkSize });
    const result2 = await second.run;
    expect(result2.k1).toMatchObject({ ok: true, version: recBig.version, activated: true, previous: 1 });
    const missingAtOffer = second.offered['k1']!;
    expect(missingAtOffer).toBeGreaterThan(0);
    expect(missingAtOffer).toBeLessThan(total); // what arrived before the kill was kept
    expect(second.sent).toHaveLength(missingAtOffer); // and only what was missing went over the wire again
    expect(new Set(second.sent.map((s) => s.index)).size).toBe(missingAtOffer);
    const x = Array.from({ length: 512 }, (_, i) => (i % 7) / 7);
    const r = tensorMapResult(await requester.request('k1', 'infer', { model: 'm', inputs: { x: { dtype: 'float32', shape: [1, 512], data: x } } }));
    const expected = big.expected(x);
    expect((r.outputs['y']!.data as number[]).every((v, i) => Math.abs(v - expected[i]!) < 1e-3)).toBe(true);
    expect(again.stderrText()).not.toMatch(/Error/);
  }, 90_000);

  it('during activation: after a restart the old or the new model is intact and serving, never a half-written one', async () => {
    const a = await agent('k2');
    expect((await deliver(rec1, { devices: ['k2'] }).run).k2).toMatchObject({ ok: true, version: 1 });
    const installed = a.waitForLog((l) => l.msg === 'model installed' && l['version'] === 2, 30_000).then(() => a.kill('SIGKILL'));
    await deliver(rec2, { devices: ['k2'] }, { commitTimeoutMs: 3000 }).run;
    expect((await installed).signal).toBe('SIGKILL');
    // usually killed before it could answer the commit (result.k2 not ok); on a slow machine the
    // switch may win the race. Either way, what follows must hold.
    await agent('k2', { dataDir: a.dataDir });
    const active = await activeVersion('k2');
    expect([1, 2]).toContain(active);
    expect(await answers('k2', active === 1 ? v1 : v2)).toBe(true);
    // every stored version is whole: its file matches the sha256 the registry has
    for (const rec of [rec1, rec2]) {
      const file = join(a.dataDir, 'models', 'm', String(rec.version), 'model.onnx');
      const bytes = await readFile(file).catch(() => undefined);
      if (bytes) expect(sha256Hex(bytes)).toBe(rec.sha256);
    }
    // delivering again finishes the job: v2 active and answering
    expect((await deliver(rec2, { devices: ['k2'] }).run).k2).toMatchObject({ ok: true, version: 2 });
    expect(await answers('k2', v2)).toBe(true);
  }, 90_000);
});

describe('a status reply lost on the way', () => {
  /** The device gets each transfer.status and answers it; the first `lose` answers are dropped here and reported as the requester's own timeout, as when a reply is lost between broker and controller. */
  const losing = (lose: number) => {
    const seen = { statusRequests: 0 };
    const request: DeliverOptions['request'] = async (device, command, params, timeoutMs, binary) => {
      const answer = await requester.request(device, command, params, timeoutMs, binary);
      if (command === 'transfer.status' && seen.statusRequests++ < lose) throw new FleetError('deadline_exceeded', `${device} did not answer transfer.status within ${timeoutMs} ms`);
      return answer;
    };
    return { request, seen };
  };

  it('is asked for again, and the delivery succeeds: one silence does not fail a device', async () => {
    await agent('l1');
    const { request, seen } = losing(1);
    const r = await deliver(rec1, { devices: ['l1'] }, { request }).run;
    expect(seen.statusRequests).toBeGreaterThanOrEqual(2); // asked again after the lost answer
    expect(r.l1).toMatchObject({ ok: true, version: 1, activated: true });
    expect(await answers('l1', v1)).toBe(true);
  }, 60_000);

  it('fails with deadline_exceeded at the second silence in a row, and sends nothing again to a device that does not answer', async () => {
    const { request, seen } = losing(Infinity);
    const d = deliver(rec2, { devices: ['l1'] }, { request });
    const r = await d.run;
    expect(r.l1).toMatchObject({ ok: false, error: { code: 'deadline_exceeded' } });
    expect(seen.statusRequests).toBe(2);
    expect(d.sent.length).toBeGreaterThan(0);
    expect(new Set(d.sent.map((c) => c.index)).size).toBe(d.sent.length); // each chunk once: no resend into the silence
    expect(await answers('l1', v1)).toBe(true); // the old version keeps serving
  }, 60_000);
});

describe('refusals on a real agent: each with its reason, the old model keeps answering', () => {
  const CHUNK = 1024;
  let dataDir: string;
  let seq = 0;

  beforeAll(async () => {
    const a = await agent('t1');
    dataDir = a.dataDir;
    expect((await deliver(rec2, { devices: ['t1'] }).run).t1).toMatchObject({ ok: true, version: 2 });
  }, 60_000);

  const stillServing = async () => {
    expect(await activeVersion('t1')).toBe(2);
    expect(await answers('t1', v2)).toBe(true);
  };
  const manifestFor = (bytes: Uint8Array, overrides: Partial<ManifestInput> = {}): ManifestInput => ({
    kind: 'model',
    name: 'm',
    version: 3,
    sha256: sha256Hex(bytes),
    length: bytes.length,
    issuedAt: new Date().toISOString(),
    expiresAt: new Date(Date.now() + 60_000).toISOString(),
    target: { devices: ['t1'] },
    chunking: { size: CHUNK, sha256: chunkHashes(bytes, CHUNK) },
    ...overrides,
  });
  const offer = (manifest: SignedManifest, transferId = `tx${++seq}`, via: TransferTarget = { kind: 'device', name: 't1' }) =>
    requester.request('t1', 'transfer.offer', { transferId, manifest, via }, 5000).then((r) => ({ ...r, transferId }));
  const chunk = (transferId: string, index: number, payload: Uint8Array) =>
    operator.publishAsync(topics.transferChunk({ kind: 'device', name: 't1' }, transferId, index), Buffer.from(payload), { qos: 1 });
  const sendAll = async (transferId: string, bytes: Uint8Array) => {
    for (let i = 0; i * CHUNK < bytes.length; i++) await chunk(transferId, i, bytes.subarray(i * CHUNK, (i + 1) * CHUNK));
  };
  const commit = (transferId: string) => requester.request('t1', 'transfer.commit', { transferId }, 20_000);
  const v3 = linearModel({ seed: 3 }).bytes;

  it('bad signature', async () => {
    const other = (await import('@edgefleet/protocol')).generateFleetKeys();
    expect((await refusal(offer(signManifest(manifestFor(v3), other.privateKeyPem)))).code).toBe('bad_signature');
    await stillServing();
  });

  it('expired', async () => {
    const past = Date.now() - 3_600_000;
    const m = manifestFor(v3, { issuedAt: new Date(past).toISOString(), expiresAt: new Date(past + 1000).toISOString() });
    expect((await refusal(offer(signManifest(m, keys.privateKeyPem)))).code).toBe('expired');
    await stillServing();
  });

  it('wrong target', async () => {
    const m = manifestFor(v3, { target: { devices: ['k1'], groups: ['floor'] } });
    expect((await refusal(offer(signManifest(m, keys.privateKeyPem)))).code).toBe('wrong_target');
    await stillServing();
  });

  it('lower version', async () => {
    const e = await refusal(deliver(rec1, { devices: ['t1'] }).run.then((r) => {
      if (!r.t1!.ok) throw new FleetError(r.t1!.error.code, r.t1!.error.message);
    }));
    expect(e.code).toBe('lower_version');
    await stillServing();
  });

  it('corrupt chunk (dropped, reported, stays missing) and then a missing chunk at commit', async () => {
    const { transferId } = await offer(signManifest(manifestFor(v3), keys.privateKeyPem));
    const bad = Buffer.from(v3.subarray(0, CHUNK));
    bad[10] = bad[10]! ^ 0xff;
    await chunk(transferId, 0, bad);
    const status = await requester.request('t1', 'transfer.status', { transferId });
    expect(status.missing).toContain(0);
    expect(events.some((e) => e.device === 't1' && e.event.event === 'log' && e.event.data.message.startsWith('corrupt_chunk'))).toBe(true);
    expect((await refusal(commit(transferId))).code).toBe('missing_chunk');
    await stillServing();
  });

  it('truncated file (the staged file cut short on disk)', async () => {
    const { transferId } = await offer(signManifest(manifestFor(v3), keys.privateKeyPem));
    await sendAll(transferId, v3);
    expect((await requester.request('t1', 'transfer.status', { transferId })).missing).toEqual([]);
    await truncate(join(dataDir, 'transfers', transferId, 'data.part'), v3.length - 5);
    expect((await refusal(commit(transferId))).code).toBe('truncated');
    await stillServing();
  });

  it('a chunk past the declared length', async () => {
    const { transferId, total } = await offer(signManifest(manifestFor(v3), keys.privateKeyPem));
    await chunk(transferId, total, Buffer.alloc(CHUNK, 7));
    await requester.request('t1', 'transfer.status', { transferId });
    expect(events.some((e) => e.device === 't1' && e.event.event === 'log' && e.event.data.message.startsWith('too_long'))).toBe(true);
    await stillServing();
  });

  it('not an ONNX model (random bytes under a valid signature)', async () => {
    const junk = randomBytes(5000);
    const { transferId } = await offer(signManifest(manifestFor(junk), keys.privateKeyPem));
    await sendAll(transferId, junk);
    expect((await refusal(commit(transferId))).code).toBe('not_onnx');
    await stillServing();
  });

  it('fails to load (an operator onnxruntime does not have)', async () => {
    const bytes = encodeModel({
      name: 'bad',
      inputs: [valueInfo('x', 'float32', ['batch', 4])],
      outputs: [valueInfo('y', 'float32', ['batch', 4])],
      nodes: [node('NoSuchOperator', ['x'], ['y'])],
    });
    const { transferId } = await offer(signManifest(manifestFor(bytes, { version: 4 }), keys.privateKeyPem));
    await sendAll(transferId, bytes);
    const e = await refusal(commit(transferId));
    expect(e.code).toBe('load_failed');
    expect(events.some((x) => x.device === 't1' && x.event.event === 'model.failed' && x.event.data.error.code === 'load_failed')).toBe(true);
    await stillServing();
  });

  it('smoke test fails', async () => {
    const bytes = alwaysFailingModel().bytes;
    const { transferId } = await offer(signManifest(manifestFor(bytes, { version: 5 }), keys.privateKeyPem));
    await sendAll(transferId, bytes);
    expect((await refusal(commit(transferId))).code).toBe('smoke_test_failed');
    await stillServing();
  });
});

describe('disk full', () => {
  // A real small filesystem when this machine lets the test mount one; otherwise the in-process
  // receiver test with the injected statfs (device-agent/test/transfer.test.ts) is the proof.
  const title = tmpfsWorks
    ? 'on a real 6 MiB tmpfs data directory: refused with disk_full before anything is written, the old model keeps answering'
    : 'tmpfs not mountable here: the offer is refused through an injected statfs (see device-agent/test/transfer.test.ts)';
  let unmount: (() => void) | undefined;
  afterAll(async () => {
    if (unmount) {
      await cleanupAgents(...agents.filter((a) => a.id === 'df'));
      unmount();
    }
  });

  it(title, async () => {
    if (!tmpfsWorks) {
      // the same rule as the agent's, through the receiver it runs
      const receiver = await receiverWithFreeSpace({ dataDir: join(work, 'df-injected'), publicKeyPem: keys.publicKeyPem, id: 'df', freeBytes: 1000 });
      const bytes = big.bytes;
      const signed = signManifest({ kind: 'model', name: 'm', version: 9, sha256: sha256Hex(bytes), length: bytes.length, issuedAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 60_000).toISOString(), target: { devices: ['df'] }, chunking: { size: 65536, sha256: chunkHashes(bytes, 65536) } }, keys.privateKeyPem);
      expect((await refusal(receiver.offer({ transferId: 'tdf', manifest: signed, via: { kind: 'device', name: 'df' } }))).code).toBe('disk_full');
      return;
    }
    const mountPoint = join(work, 'small-disk');
    unmount = await mountSmallDisk(mountPoint, '6m');
    await agent('df', { dataDir: mountPoint });
    expect((await deliver(rec1, { devices: ['df'] }).run).df).toMatchObject({ ok: true, version: 1 });
    const huge = largeModel({ inFeatures: 1024, outFeatures: 2048, seed: 11 }); // 8 MiB: more than the disk
    const recHuge = await addModel('m', huge.bytes);
    const { run, sent } = deliver(recHuge, { devices: ['df'] });
    const result = await run;
    expect(result.df).toMatchObject({ ok: false, error: { code: 'disk_full' } });
    expect(sent).toHaveLength(0);
    expect(await answers('df', v1)).toBe(true);
  }, 60_000);
});

describe('fan-out to a group of agent processes', () => {
  it('each chunk is published once to the group; a member offline during the transfer gets the model when it returns', async () => {
    const [, , f3] = await Promise.all([agent('f1'), agent('f2'), agent('f3')]);
    // f3 goes offline (kill -9) while the group transfer is under way
    const recBig = await addModel('m', big.bytes); // the same bytes as before: the same version
    const chunkSize = 8 * 1024;
    const total = Math.ceil(recBig.length / chunkSize);
    let acked = 0;
    const first = deliver(recBig, { group: 'floor', devices: ['f1', 'f2', 'f3'] }, {
      chunkSize,
      window: 1,
      requestTimeoutMs: 1500,
      onChunk: async () => {
        if (++acked !== Math.floor(total / 4)) return;
        await requester.request('f3', 'transfer.status', { transferId: transferIdFor(recBig, chunkSize) });
        f3.child.kill('SIGKILL');
        await f3.exited;
      },
    });
    const result = await first.run;
    await f3.exited;
    expect(result.f1).toMatchObject({ ok: true, version: recBig.version });
    expect(result.f2).toMatchObject({ ok: true, version: recBig.version });
    expect(result.f3).toMatchObject({ ok: false });
    const groupSends = first.sent.filter((s) => s.via.kind === 'group');
    expect(groupSends).toHaveLength(total); // once each, fanned out by the broker
    expect(new Set(groupSends.map((s) => s.index)).size).toBe(total);
    expect(first.sent.filter((s) => s.via.kind === 'device' && s.via.name !== 'f3')).toHaveLength(0); // f1, f2 needed no resend

    // f3 returns: a new delivery sends only what it still misses
    await agent('f3', { dataDir: f3.dataDir });
    const second = deliver(recBig, { group: 'floor', devices: ['f3'] }, { chunkSize });
    expect((await second.run).f3).toMatchObject({ ok: true, version: recBig.version });
    expect(second.offered['f3']).toBeLessThan(total);
    expect(second.sent).toHaveLength(second.offered['f3']!);
    for (const id of ['f1', 'f2', 'f3']) expect(await activeVersion(id)).toBe(recBig.version);
    expect(transferIdFor(recBig, chunkSize)).toMatch(/^t[0-9a-f]{23}$/);
  }, 120_000);
});
