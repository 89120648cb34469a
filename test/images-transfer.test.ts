/**
 * Image archives delivered to a real agent process through a real broker and the real Docker engine, with
 * the host's own delivery (signed manifest, chunks, commit) driven from the test so a transfer can be cut
 * where the test wants: kill -9 in the middle of an image and a resume from the chunks on disk; and every
 * refusal with its reason while the running container keeps running: a digest that is not the archive's,
 * a truncated archive, an image for another architecture (in the manifest, and only in the archive), a
 * lower image manifest signed as a rollback (never accepted: apps keep no rollback sequence), a full disk. The agent's data directory is a small tmpfs of its own (mounted here: needs root).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, statfs, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { EventSchema, parseTopic, tensorMapResult, topics } from '@edgefleet/protocol';
import type { ContainerSpecInput, FleetEvent } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { createImageRegistry, createRequester, loadOrCreateFleetKeys, openState, transferIdFor } from '@edgefleet/host-manager';
import type { DeliverOptions, FleetKeys, ImageRegistry, ImageVersionRecord, Requester } from '@edgefleet/host-manager';
import { startTestBroker } from './support/broker.js';
import { cleanupAgents, connectOperator, startAgent, watchStatus } from './support/agent-process.js';
import type { AgentProcess, StatusWatcher } from './support/agent-process.js';
import { oipImage, tinyImage } from './support/container-images.js';
import type { ImageArchive } from './support/container-images.js';
import { cleanupDevice, inspect, requireEngine } from './support/docker.js';
import { recordedDelivery } from './support/delivery.js';

const DEVICE = 'ix-1';
const SPEC: ContainerSpecInput = { health: { kind: 'http', port: 8000, path: '/health' }, healthyWithinMs: 20_000, inference: { protocol: 'oip-http', port: 8000, model: 'x' } };

let work: string;
let dataDir: string;
let broker: RunningBroker;
let operator: MqttClient;
let watcher: StatusWatcher;
let requester: Requester;
let keys: FleetKeys;
let publicKeyFile: string;
let images: ImageRegistry;
let agent: AgentProcess;
const events: FleetEvent[] = [];
const records: Record<string, ImageVersionRecord> = {};
const archives: Record<string, ImageArchive> = {};

async function add(name: string, archive: ImageArchive, container: ContainerSpecInput | null = SPEC): Promise<ImageVersionRecord> {
  const copy = join(work, `upload-${Date.now()}-${Math.random()}.tar`); // the registry consumes what it is given
  await copyFile(archive.path, copy);
  return images.addArchive(copy, { name, container });
}

function deliver(record: ImageVersionRecord, extra: Partial<DeliverOptions> = {}, blobPath = images.blobPath(record)) {
  return recordedDelivery({
    mqtt: operator,
    request: requester.request,
    record,
    blobPath,
    keys,
    target: { devices: [DEVICE] },
    requestTimeoutMs: 10_000,
    commitTimeoutMs: 60_000,
    deadlineMs: 120_000,
    ...extra,
  });
}

async function start(): Promise<AgentProcess> {
  agent = await startAgent({ broker: broker.url, id: DEVICE, token: 'tok-ix', dataDir, args: ['--fleet-public-key', publicKeyFile] }, watcher, 30_000);
  return agent;
}

async function answer(): Promise<number[]> {
  const r = tensorMapResult(await requester.request(DEVICE, 'infer', { model: 'web', inputs: { x: { dtype: 'float32', shape: [1, 4], data: [1, 2, 3, 4] } } }, 10_000));
  return r.outputs['y']!.data as number[];
}

/** The app container the device runs, from the engine. */
async function runningApp(): Promise<{ id: string; version: number; startedAt: number | null }> {
  const list = await requester.request(DEVICE, 'containers.list', {}, 10_000);
  const c = list.containers.find((x) => x.app === 'web' && x.role === 'app' && x.running);
  if (!c) throw new Error(`no web container runs on ${DEVICE}: ${JSON.stringify(list)}`);
  return { id: c.id, version: c.version, startedAt: c.startedAt };
}

beforeAll(async () => {
  requireEngine();
  work = await mkdtemp(join(tmpdir(), 'images-transfer-'));
  dataDir = join(work, 'device');
  await mkdir(dataDir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256m', 'tmpfs', dataDir]);
  broker = await startTestBroker({ devices: [{ id: DEVICE, token: 'tok-ix' }], operators: [{ id: 'ops', token: 'ops-token' }] });
  operator = await connectOperator(broker.url, { id: 'ops', token: 'ops-token' });
  watcher = await watchStatus(operator);
  requester = await createRequester(operator);
  operator.on('message', (topic, payload) => {
    const parsed = parseTopic(topic);
    if (parsed?.kind !== 'device' || parsed.channel !== 'events') return;
    const e = EventSchema.safeParse(JSON.parse(payload.toString()));
    if (e.success) events.push(e.data);
  });
  await operator.subscribeAsync(topics.allDevices('events'), { qos: 0 });
  const hostDir = join(work, 'host');
  keys = await loadOrCreateFleetKeys(hostDir);
  publicKeyFile = join(hostDir, 'keys', 'fleet-key.pub.pem');
  images = createImageRegistry(await openState(join(hostDir, 'state.json')), hostDir);
  archives.v1 = await oipImage(work, 'ix-1', { env: { FACTOR: '2' } });
  archives.v2 = await oipImage(work, 'ix-2', { env: { FACTOR: '3' } });
  records.v1 = await add('web', archives.v1);
  records.v2 = await add('web', archives.v2);
  await start();
  expect((await deliver(records.v1).run)[DEVICE]).toMatchObject({ ok: true, version: 1, activated: true });
  expect(await answer()).toEqual([2, 4, 6, 8]);
}, 180_000);

afterAll(async () => {
  await cleanupAgents(agent);
  watcher?.close();
  requester?.close();
  await operator?.endAsync(true);
  await broker?.close();
  cleanupDevice(DEVICE);
  if (dataDir) execFileSync('umount', [dataDir]);
  await rm(work, { recursive: true, force: true });
});

describe('kill -9 of the agent in the middle of an image', () => {
  it('resumes from the chunks on disk after the restart; the running container serves throughout', async () => {
    const before = await runningApp();
    const chunkSize = 1024 * 1024;
    const total = Math.ceil(records.v2!.length / chunkSize);
    let acked = 0;
    // window 1: a chunk goes out only once the previous one was acknowledged; at a quarter the agent confirms
    // what it has (status waits until every chunk received is written) and is killed with SIGKILL
    const first = deliver(records.v2!, {
      chunkSize,
      window: 1,
      requestTimeoutMs: 1500,
      onChunk: async () => {
        if (++acked !== Math.floor(total / 4)) return;
        await requester.request(DEVICE, 'transfer.status', { transferId: transferIdFor(records.v2!, chunkSize) });
        agent.child.kill('SIGKILL');
        await agent.exited;
      },
    });
    expect((await first.run)[DEVICE]).toMatchObject({ ok: false });
    // the app's container was never the agent's child: it kept running while the agent was gone
    expect(inspect(before.id)?.State.Running).toBe(true);

    const again = await start();
    expect(await runningApp()).toEqual(before); // the same container, not restarted by the new agent
    expect(await answer()).toEqual([2, 4, 6, 8]);
    const second = deliver(records.v2!, { chunkSize });
    expect((await second.run)[DEVICE]).toMatchObject({ ok: true, version: 2, activated: true, previous: 1 });
    const missingAtOffer = second.offered[DEVICE]!;
    expect(missingAtOffer).toBeGreaterThan(0);
    expect(missingAtOffer).toBeLessThanOrEqual(total - Math.floor(total / 4)); // what arrived before the kill was kept
    expect(second.sent).toHaveLength(missingAtOffer); // and only what was missing went over the wire again
    const resumed = await again.waitForLog((l) => l.msg === 'transfer resumed from the staging on disk');
    expect(resumed['received']).toBeGreaterThanOrEqual(Math.floor(total / 4));
    expect(await answer()).toEqual([3, 6, 9, 12]);
    expect((await runningApp()).version).toBe(2);
  }, 180_000);
});

describe('refusals, each with its reason, while the running container keeps running', () => {
  let serving: { id: string; version: number; startedAt: number | null };
  let tiny: ImageArchive;
  let tinyRecord: ImageVersionRecord;

  beforeAll(async () => {
    serving = await runningApp();
    tiny = await tinyImage(work, { repoTags: [] });
    tinyRecord = await add('web', tiny);
  });

  const stillServing = async (): Promise<void> => {
    expect(await runningApp()).toEqual(serving);
    expect(await answer()).toEqual([3, 6, 9, 12]);
  };
  const failedEvent = (version: number) => events.find((e) => e.event === 'container.failed' && e.data.version === version);

  it('a digest the archive does not hold: nothing loaded, container.failed with the version that keeps running', async () => {
    const other = await tinyImage(work, { repoTags: [] });
    const pinned = { ...tinyRecord, version: 10, image: { ...tinyRecord.image, digest: other.id } };
    const r = (await deliver(pinned, {}, images.blobPath(tinyRecord)).run)[DEVICE];
    expect(r).toMatchObject({ ok: false, error: { code: 'digest_mismatch' } });
    expect((r as { error: { message: string } }).error.message).toMatch(new RegExp(`holds image ${tiny.id}, but the signed manifest pins ${other.id}; nothing was loaded`));
    expect(failedEvent(10)).toMatchObject({ data: { app: 'web', error: { code: 'digest_mismatch' }, restored: 2 } });
    await stillServing();
  }, 60_000);

  it('a truncated archive (its chunks and length consistent, the tar cut inside an entry)', async () => {
    const cut = join(work, 'cut.tar');
    await copyFile(tiny.path, cut);
    await truncate(cut, 512 + 200); // inside the layer, the first entry's data
    const data = await readFile(cut);
    const truncated = { ...tinyRecord, version: 11, length: data.length, sha256: createHash('sha256').update(data).digest('hex') };
    const r = (await deliver(truncated, {}, cut).run)[DEVICE];
    expect(r).toMatchObject({ ok: false, error: { code: 'truncated' } });
    expect((r as { error: { message: string } }).error.message).toMatch(/ends inside an entry/);
    await stillServing();
  }, 60_000);

  it('an image for another architecture: refused at the offer when the manifest says so (nothing sent), at the commit when only the archive does', async () => {
    const arm = await tinyImage(work, { platform: { architecture: 'arm64' }, repoTags: [] });
    const armRecord = await add('web', arm);
    expect(armRecord.image.platform).toMatchObject({ architecture: 'arm64' });
    const offered = deliver(armRecord);
    const r1 = (await offered.run)[DEVICE];
    expect(r1).toMatchObject({ ok: false, error: { code: 'incompatible' } });
    expect((r1 as { error: { message: string } }).error.message).toMatch(/built for linux\/arm64, this device is linux\/amd64/);
    expect(offered.sent).toHaveLength(0);
    const { platform: _platform, ...unlabelled } = armRecord.image;
    const r2 = (await deliver({ ...armRecord, version: armRecord.version + 10, image: unlabelled }, {}, images.blobPath(armRecord)).run)[DEVICE];
    expect(r2).toMatchObject({ ok: false, error: { code: 'incompatible' } });
    expect((r2 as { error: { message: string } }).error.message).toMatch(/linux\/arm64.*nothing was loaded/);
    await stillServing();
  }, 60_000);

  it('a lower image manifest signed as a rollback (with a sequence number) is refused at the offer: apps go back with containers.deploy, so no image manifest can be replayed', async () => {
    const d = deliver(records.v1!, { rollbackSeq: Date.now() });
    const r = (await d.run)[DEVICE];
    expect(r).toMatchObject({ ok: false, error: { code: 'lower_version' } });
    expect((r as { error: { message: string } }).error.message).toMatch(/web@1 is lower than version \d+ already accepted; an app goes back to a version the device keeps with `hostManager image rollback`/);
    expect(d.sent).toHaveLength(0);
    await stillServing();
  }, 60_000);

  it("a full disk: the offer is refused before anything is sent, with what is needed and what is free", async () => {
    const fs = await statfs(dataDir);
    const free = fs.bavail * fs.bsize;
    const ballast = join(dataDir, 'ballast');
    await writeFile(ballast, Buffer.alloc(Math.max(0, free - 16 * 1024 * 1024)));
    try {
      const big = { ...records.v1!, version: 30 };
      const d = deliver(big, {}, images.blobPath(records.v1!));
      const r = (await d.run)[DEVICE];
      expect(r).toMatchObject({ ok: false, error: { code: 'disk_full' } });
      expect((r as { error: { message: string } }).error.message).toMatch(/web@30 needs \d+(\.\d)? MiB but only \d+(\.\d)? MiB are free/);
      expect(d.sent).toHaveLength(0);
      await stillServing();
    } finally {
      await rm(ballast, { force: true });
    }
  }, 60_000);
});
