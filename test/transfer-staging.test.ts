/**
 * Issue 10, abandoned transfers: offers that are never committed must not hold a device's disk
 * and file descriptors forever. Real agent processes and a real broker; the test plays a sender
 * that offers and sends some chunks, then walks away. What must hold: the staging (directory and
 * descriptors) is reclaimed after the configured expiry in a running agent and at start after a
 * restart, a staging that has not expired survives and resumes, and the free-space check counts
 * what the other stagings will still write, so two offers at once cannot both take the same space.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readlink, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { chunkHashes, generateFleetKeys, sha256Hex, signManifest, topics } from '@edgefleet/protocol';
import type { SignedManifest } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { createRequester } from '@edgefleet/host-manager';
import type { Requester } from '@edgefleet/host-manager';
import { startTestBroker } from './support/broker.js';
import { cleanupAgents, connectOperator, startAgent, watchStatus } from './support/agent-process.js';
import type { AgentProcess, AgentProcessOptions, StatusWatcher } from './support/agent-process.js';
import { eventually } from './support/manager-process.js';
import { refusal } from './support/refusal.js';
import { mountSmallDisk, receiverWithFreeSpace, tmpfsWorks } from './support/small-disk.js';

const IDS = ['s1', 's2', 's3'];
const CHUNK = 64 * 1024;
const keys = generateFleetKeys();

let work: string;
let broker: RunningBroker;
let operator: MqttClient;
let watcher: StatusWatcher;
let requester: Requester;
let publicKeyFile: string;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'staging-e2e-'));
  broker = await startTestBroker({ devices: IDS.map((id) => ({ id, token: `tok-${id}` })), operators: [{ id: 'ops', token: 'ops-token' }] });
  operator = await connectOperator(broker.url, { id: 'ops', token: 'ops-token' });
  watcher = await watchStatus(operator);
  requester = await createRequester(operator);
  publicKeyFile = join(work, 'fleet.pub.pem');
  await writeFile(publicKeyFile, keys.publicKeyPem);
}, 30_000);

afterAll(async () => {
  await cleanupAgents(...agents);
  watcher?.close();
  requester?.close();
  await operator?.endAsync(true);
  await broker?.close();
  await rm(work, { recursive: true, force: true });
});

async function agent(id: string, extra: Partial<AgentProcessOptions> = {}): Promise<AgentProcess> {
  const a = await startAgent({ broker: broker.url, id, token: `tok-${id}`, ...extra, args: ['--fleet-public-key', publicKeyFile, ...(extra.args ?? [])] }, watcher, 30_000);
  agents.push(a);
  return a;
}

/** A signed manifest for `bytes` (never committed here, so they need not be ONNX). */
function manifestFor(device: string, name: string, bytes: Buffer): SignedManifest {
  const now = Date.now();
  return signManifest(
    {
      kind: 'model',
      name,
      version: 1,
      sha256: sha256Hex(bytes),
      length: bytes.length,
      issuedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + 3_600_000).toISOString(),
      target: { devices: [device] },
      chunking: { size: CHUNK, sha256: chunkHashes(bytes, CHUNK) },
    },
    keys.privateKeyPem,
  );
}

function offer(device: string, transferId: string, manifest: SignedManifest) {
  return requester.request(device, 'transfer.offer', { transferId, manifest, via: { kind: 'device', name: device } }, 10_000);
}

/** Publishes chunks [0, count) and waits until the device says they are on disk. */
async function sendChunks(device: string, transferId: string, bytes: Buffer, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    await operator.publishAsync(topics.transferChunk({ kind: 'device', name: device }, transferId, i), bytes.subarray(i * CHUNK, (i + 1) * CHUNK), { qos: 1 });
  }
  const total = Math.ceil(bytes.length / CHUNK);
  await eventually(`${count} chunks of ${transferId} on ${device}'s disk`, async () => {
    const s = await requester.request(device, 'transfer.status', { transferId }, 10_000);
    return s.missing.length === total - count ? true : undefined;
  });
}

/** The files under `dir` the process holds open (from /proc/<pid>/fd). */
async function openFilesUnder(pid: number, dir: string): Promise<string[]> {
  const fdDir = `/proc/${pid}/fd`;
  const targets = await Promise.all((await readdir(fdDir)).map((fd) => readlink(join(fdDir, fd)).catch(() => '')));
  return targets.filter((t) => t.startsWith(dir));
}

/** Sets the times of a staging directory and its files into the past, as if it had been left there `ageMs` ago. */
async function ageStaging(dir: string, ageMs: number): Promise<void> {
  const then = new Date(Date.now() - ageMs);
  for (const name of await readdir(dir)) await utimes(join(dir, name), then, then);
  await utimes(dir, then, then);
}

describe('abandoned transfers on a real agent', () => {
  it('an offer never committed is reclaimed after the configured expiry: directory and file descriptors', async () => {
    const a = await agent('s1', { args: ['--transfer-expiry-s', '3'] });
    const bytes = randomBytes(6 * CHUNK);
    const staging = join(a.dataDir, 'transfers', 'tabandoned');
    expect((await offer('s1', 'tabandoned', manifestFor('s1', 'm', bytes))).missing).toHaveLength(6);
    await sendChunks('s1', 'tabandoned', bytes, 2);
    expect(existsSync(join(staging, 'data.part'))).toBe(true);
    expect((await openFilesUnder(a.child.pid!, staging)).sort()).toEqual([join(staging, 'chunks.log'), join(staging, 'data.part')]);

    // The sender walks away. Within a few sweeps after 3 s of silence, nothing of it is left.
    await eventually('the staging reclaimed', async () => (!existsSync(staging) ? true : undefined), 30_000, 250);
    expect(await openFilesUnder(a.child.pid!, join(a.dataDir, 'transfers'))).toEqual([]);
    expect(a.logs.some((l) => l.msg === 'expired staging reclaimed' && l.transferId === 'tabandoned')).toBe(true);
    const gone = await refusal(requester.request('s1', 'transfer.status', { transferId: 'tabandoned' }, 10_000));
    expect(gone.code).toBe('not_found');
    // the agent carries on: a new offer of the same bytes starts from nothing
    expect((await offer('s1', 'tagain', manifestFor('s1', 'm', bytes))).missing).toHaveLength(6);
  }, 90_000);

  it('across a restart: a staging older than the expiry (default 24 h) is reclaimed at start, a recent one resumes', async () => {
    const a = await agent('s2');
    const old = randomBytes(4 * CHUNK);
    const recent = randomBytes(4 * CHUNK);
    await offer('s2', 'told', manifestFor('s2', 'a', old));
    await sendChunks('s2', 'told', old, 1);
    await offer('s2', 'trecent', manifestFor('s2', 'b', recent));
    await sendChunks('s2', 'trecent', recent, 3);
    await a.kill('SIGKILL'); // abandoned mid-transfer: nobody closed anything
    const transfers = join(a.dataDir, 'transfers');
    await ageStaging(join(transfers, 'told'), 25 * 60 * 60_000); // left there 25 hours ago
    await ageStaging(join(transfers, 'trecent'), 60 * 60_000); // an hour ago

    const b = await agent('s2', { dataDir: a.dataDir });
    await b.waitForLog((l) => l.msg === 'expired staging reclaimed from disk' && l.transferId === 'told');
    expect(await readdir(transfers)).toEqual(['trecent']);
    // the recent one resumes from its verified chunks: only the missing one is asked for
    expect((await offer('s2', 'trecent', manifestFor('s2', 'b', recent))).missing).toEqual([3]);
  }, 90_000);
});

describe('free space counts every staging', () => {
  // A real small filesystem when this machine lets the test mount one; otherwise the agent's own
  // receiver in this process with an injected statfs of the same size.
  const title = tmpfsWorks
    ? 'on a real 10 MiB tmpfs: two 6 MiB offers at once, one is refused with disk_full; a 2 MiB one still fits'
    : 'tmpfs not mountable here: the same offers against the receiver with an injected 10 MiB statfs';
  let unmount: (() => void) | undefined;
  afterAll(async () => {
    if (unmount) {
      await cleanupAgents(...agents.filter((a) => a.id === 's3'));
      unmount();
    }
  });

  it(title, async () => {
    const six = (): Buffer => randomBytes(6 * 1024 * 1024);
    const [first, second, small] = [six(), six(), randomBytes(2 * 1024 * 1024)];
    let offerOn: (id: string, m: SignedManifest) => Promise<{ missing: number[] }>;
    if (tmpfsWorks) {
      const mountPoint = join(work, 'small-disk');
      unmount = await mountSmallDisk(mountPoint, '10m');
      await agent('s3', { dataDir: mountPoint });
      offerOn = (id, m) => offer('s3', id, m);
    } else {
      const receiver = await receiverWithFreeSpace({ dataDir: join(work, 's3-injected'), publicKeyPem: keys.publicKeyPem, id: 's3', freeBytes: 10 * 1024 * 1024 });
      offerOn = (id, m) => receiver.offer({ transferId: id, manifest: m, via: { kind: 'device', name: 's3' } });
    }
    // Each fits alone; both do not. Sent at the same moment, exactly one is taken.
    const results = await Promise.allSettled([offerOn('tfirst', manifestFor('s3', 'a', first)), offerOn('tsecond', manifestFor('s3', 'b', second))]);
    const taken = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(taken).toHaveLength(1);
    expect(refused).toHaveLength(1);
    expect(refused[0]!.reason).toMatchObject({ code: 'disk_full' });
    expect((refused[0]!.reason as Error).message).toMatch(/still to come for 1 other staged transfer/);
    // What is left beside the one reservation still takes a small model.
    expect((await offerOn('tsmall', manifestFor('s3', 'c', small))).missing.length).toBe(Math.ceil(small.length / CHUNK));
  }, 90_000);
});
