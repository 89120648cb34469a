/**
 * Issue 10, weak spot "rollback manifests can be replayed": whoever captures a controller-signed
 * rollback manifest (it travels on the device's command topic) must not be able to move the
 * device back with it later, without the controller. Real controller, real agent, real broker;
 * the test captures the manifest the controller sends for `hostManager rollback`, lets the
 * operator move the device forward again, then replays the manifest as a new request and as a
 * transfer offer, before and after an agent restart. What must hold: each replay is refused with
 * `replayed` and the device stays on its version; a fresh rollback from the controller still works.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { parseRequest, topics } from '@edgefleet/protocol';
import type { SignedManifest } from '@edgefleet/protocol';
import { createRequester } from '@edgefleet/host-manager';
import type { Requester } from '@edgefleet/host-manager';
import { cleanupAgents, connectOperator, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { api, eventually, runCli, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';
import { allClose, linearModel } from './support/onnx-models.js';
import { refusal } from './support/refusal.js';

let m: ManagerProcess;
let work: string;
let agent: AgentProcess | undefined;
let sniffer: MqttClient;
let requester: Requester;
const captured: { model: string; manifest: SignedManifest }[] = [];
const v1 = linearModel({ seed: 21 });
const v2 = linearModel({ seed: 22 });
const x = [1, 2, -0.5, 0.25];

async function activeOn(): Promise<number | undefined> {
  const d = await api<{ info: { models: { name: string; version: number }[] } | null }>(m, 'GET', '/api/devices/pi-1');
  return d.body.info?.models.find((v) => v.name === 'lin')?.version;
}

/** The version that answers, checked against the model's maths. */
async function answering(): Promise<number> {
  const r = await api<{ version: number; outputs: { y: { data: number[] } } }>(m, 'POST', '/api/devices/pi-1/infer', { model: 'lin', inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } });
  expect(r.status).toBe(200);
  expect(allClose(r.body.outputs.y.data, (r.body.version === 1 ? v1 : v2).expected(x))).toBe(true);
  return r.body.version;
}

async function startPi(dataDir: string, config: string, token: string): Promise<AgentProcess> {
  const a = await spawnAgent({ broker: m.broker, id: 'pi-1', token, dataDir, args: ['--config', config] });
  await eventually('pi-1 online', async () => ((await api<{ online: boolean }>(m, 'GET', '/api/devices/pi-1')).body.online ? true : undefined), 30_000);
  return a;
}

let token = '';
let config = '';
let agentDir = '';

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'attack-rollback-'));
  m = await startManager();
  const added = (await runCli(m, ['devices', 'add', 'pi-1', '--json'])).json<{ token: string; config: Record<string, unknown> }>();
  token = added.token;
  agentDir = join(work, 'agent');
  config = join(work, 'pi-1.json');
  await writeFile(config, JSON.stringify({ ...added.config, broker: m.broker, dataDir: agentDir }));
  agent = await startPi(agentDir, config, token);
  for (const [file, bytes] of [['lin-1.onnx', v1.bytes], ['lin-2.onnx', v2.bytes]] as const) {
    await writeFile(join(work, file), bytes);
    expect((await runCli(m, ['models', 'add', join(work, file), '--name', 'lin'])).code).toBe(0);
  }
  // Someone who can read the device's command topic (here: an operator client standing in for a sniffer on the link).
  sniffer = await connectOperator(m.broker, { id: 'admin', token: m.token });
  requester = await createRequester(sniffer);
  sniffer.on('message', (topic, payload) => {
    if (topic !== topics.device('pi-1', 'commands')) return;
    const parsed = parseRequest(payload);
    if (!parsed.ok || parsed.request.command !== 'models.rollback') return;
    const params = parsed.request.params as { model: string; manifest?: SignedManifest };
    const seq = (params.manifest?.manifest as { rollbackSeq?: number } | undefined)?.rollbackSeq;
    // every distinct manifest once (the replays below travel the same topic)
    if (params.manifest && !captured.some((c) => (c.manifest.manifest as { rollbackSeq?: number }).rollbackSeq === seq)) captured.push({ model: params.model, manifest: params.manifest });
  });
  await sniffer.subscribeAsync(topics.device('pi-1', 'commands'), { qos: 1 });
}, 120_000);

afterAll(async () => {
  requester?.close();
  await sniffer?.endAsync(true);
  await cleanupAgents(agent);
  await m?.cleanup();
  await rm(work, { recursive: true, force: true });
});

describe('a captured rollback manifest', () => {
  it('works once: the controller\'s rollback moves the device back, and the manifest carries a sequence number kept in the state', async () => {
    expect((await runCli(m, ['deploy', 'lin@1', '--to', 'pi-1', '--soak', '0', '--wait', '--json'])).code).toBe(0);
    expect((await runCli(m, ['deploy', 'lin@2', '--to', 'pi-1', '--soak', '0', '--wait', '--json'])).code).toBe(0);
    expect(await answering()).toBe(2);
    const back = await runCli(m, ['rollback', '--json']);
    expect(back.code).toBe(0);
    expect(await answering()).toBe(1);
    await eventually('the rollback request captured', async () => (captured.length === 1 ? true : undefined));
    const seq = (captured[0]!.manifest.manifest as { rollbackSeq?: number; rollback?: boolean }).rollbackSeq;
    expect((captured[0]!.manifest.manifest as { rollback: boolean }).rollback).toBe(true);
    expect(seq).toBeGreaterThan(0);
    const state = JSON.parse(await readFile(join(m.dataDir, 'state.json'), 'utf8')) as { lastRollbackSeq?: number };
    expect(state.lastRollbackSeq).toBe(seq);
    const onDevice = JSON.parse(await readFile(join(agentDir, 'models', 'state.json'), 'utf8')) as { models: { lin: { rollbackSeq: number } } };
    expect(onDevice.models.lin.rollbackSeq).toBe(seq); // recorded by the agent (atomic write, fsync)
  }, 180_000);

  it('replayed later, as a new request and as a transfer offer, is refused with `replayed`; the device stays on its version', async () => {
    // the operator moves the device forward again
    expect((await runCli(m, ['deploy', 'lin@2', '--to', 'pi-1', '--soak', '0', '--wait', '--json'])).code).toBe(0);
    await eventually('lin@2 active', async () => ((await activeOn()) === 2 ? true : undefined));
    const { model, manifest } = captured[0]!;
    const replay = await refusal(requester.request('pi-1', 'models.rollback', { model, manifest }, 10_000));
    expect(replay.code).toBe('replayed');
    expect(replay.message).toMatch(/a rollback manifest works once; ask the controller for a fresh rollback/);
    const offered = await refusal(requester.request('pi-1', 'transfer.offer', { transferId: 'treplay', manifest, via: { kind: 'device', name: 'pi-1' } }, 10_000));
    expect(offered.code).toBe('replayed');
    // without the manifest, going below the highest accepted version is refused too
    expect((await refusal(requester.request('pi-1', 'models.rollback', { model }, 10_000))).code).toBe('lower_version');
    expect((await refusal(requester.request('pi-1', 'models.activate', { model, version: 1 }, 10_000))).code).toBe('lower_version');
    expect(await answering()).toBe(2);
    expect(await activeOn()).toBe(2);
  }, 180_000);

  it('stays refused after the agent restarts (the sequence number is on its disk), and a fresh rollback from the controller still works', async () => {
    await agent!.kill('SIGTERM');
    agent = await startPi(agentDir, config, token);
    const { model, manifest } = captured[0]!;
    expect((await refusal(requester.request('pi-1', 'models.rollback', { model, manifest }, 10_000))).code).toBe('replayed');
    expect(await answering()).toBe(2);
    // The controller signs a new one with a higher number, which the device takes once.
    expect((await runCli(m, ['rollback', '--json'])).code).toBe(0);
    expect(await answering()).toBe(1);
    await eventually('the second rollback captured', async () => (captured.length === 2 ? true : undefined));
    const [first, second] = captured.map((c) => (c.manifest.manifest as { rollbackSeq: number }).rollbackSeq);
    expect(second).toBeGreaterThan(first!);
  }, 180_000);
});
