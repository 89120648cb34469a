/**
 * Agent self-update over the real signed, chunked transfer, on this machine's architecture: the x64
 * bundle installed with its install.sh (into a temporary prefix, no systemd), started as the install
 * script says, updated to a healthy new version, then to one that starts but never connects, which the
 * launcher rolls back by itself after the manifest's health deadline; the device reports both. Bundles
 * of another architecture and older manifests are refused at the offer.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readlinkSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { EventSchema, topics } from '@edgefleet/protocol';
import type { FleetEvent, StatusMessage } from '@edgefleet/protocol';
import { buildAgentBundle } from '@edgefleet/agent-bundle';
import { connectOperator, watchStatus } from '../support/agent-process.js';
import type { StatusWatcher } from '../support/agent-process.js';
import { deliverAgentBundle, rebrandBundle } from '../support/agent-update.js';
import { eventually, runCli, startManager } from '../support/manager-process.js';
import type { ManagerProcess } from '../support/manager-process.js';
import { killBoardProcess } from '../support/boards.js';

const DEVICE = 'upd-1';
let m: ManagerProcess;
let work: string;
let operator: MqttClient;
let watcher: StatusWatcher;
let launcher: ChildProcess | undefined;
let launcherLog = '';
const events: FleetEvent[] = [];
const bundles: Record<string, string> = {};
const paths = { prefix: '', etc: '', data: '' };

function sh(command: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

function waitEvent<E extends FleetEvent['event']>(name: E, timeoutMs: number): Promise<Extract<FleetEvent, { event: E }>> {
  const from = events.length;
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`no ${name} event within ${timeoutMs} ms; launcher: ${launcherLog.slice(-3000)}`)), timeoutMs);
    const poll = setInterval(() => {
      const found = events.slice(from).find((e) => e.event === name);
      if (found) {
        clearTimeout(deadline);
        clearInterval(poll);
        resolve(found as Extract<FleetEvent, { event: E }>);
      }
    }, 50);
  });
}

type Online = Extract<StatusMessage, { online: true }>;

/** The latest online status of the device running `version` (and matching `also`), waited for. */
async function onlineAs(version: string, timeoutMs: number, also: (s: Online) => boolean = () => true): Promise<Online> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = watcher.history.get(DEVICE)?.at(-1);
    if (last?.online && last.device.agentVersion === version && also(last)) return last;
    if (Date.now() > deadline) throw new Error(`${DEVICE} not online as ${version}; last status ${JSON.stringify(last)}; launcher: ${launcherLog.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'self-update-'));
  Object.assign(paths, { prefix: join(work, 'opt'), etc: join(work, 'etc'), data: join(work, 'data') });
  m = await startManager();
  operator = await connectOperator(m.broker, { id: 'admin', token: m.token });
  watcher = await watchStatus(operator);
  operator.on('message', (topic, payload) => {
    if (!topic.endsWith('/events')) return;
    const parsed = EventSchema.safeParse(JSON.parse(payload.toString()));
    if (parsed.success) events.push(parsed.data);
  });
  await operator.subscribeAsync(topics.device(DEVICE, 'events'), { qos: 1 });
  const built = await buildAgentBundle({ arch: 'x64', outDir: work, compression: 1 });
  bundles['0.1.0'] = built.file;
  bundles.next = await rebrandBundle(built.file, { fromName: built.name, version: '0.1.1', arch: 'x64', outDir: work });
  bundles.broken = await rebrandBundle(built.file, { fromName: built.name, version: '0.1.2-broken', arch: 'x64', broken: true, outDir: work });
}, 600_000);

afterAll(async () => {
  if (launcher) {
    killBoardProcess(launcher, 'SIGKILL');
  }
  operator?.end(true);
  await m?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('agent self-update (x64 bundle, no systemd)', () => {
  it('installs from the bundle and starts the way install.sh says', async () => {
    const added = await runCli(m, ['devices', 'add', DEVICE, '--json']);
    expect(added.code).toBe(0);
    const provisioning = added.json<{ config: Record<string, unknown> }>();
    provisioning.config.httpPort = 0; // several agents share this machine's loopback
    await writeFile(join(work, `${DEVICE}.json`), JSON.stringify(provisioning));
    const unpacked = join(work, 'unpacked');
    await mkdir(unpacked);
    expect((await sh('tar', ['xzf', bundles['0.1.0']!, '-C', unpacked])).code).toBe(0);
    const install = join(unpacked, 'edgefleet-agent-0.1.0-x64', 'install.sh');
    const r = await sh(install, ['--config', join(work, `${DEVICE}.json`), '--prefix', paths.prefix, '--etc', paths.etc, '--data', paths.data, '--user', 'root', '--unit-dir', join(work, 'units'), '--no-systemd']);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    const line = r.stdout.split('\n').find((l) => l.includes('/agent/launcher'))!.trim();
    expect(line).toBe(`runuser -u root -- ${paths.prefix}/agent/launcher --config ${paths.etc}/agent.json`);
    const [command, ...args] = line.split(' ');
    launcher = spawn(command!, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    launcher.stderr!.setEncoding('utf8').on('data', (d: string) => (launcherLog += d));
    launcher.stdout!.setEncoding('utf8').on('data', (d: string) => (launcherLog += d));
    const online = await onlineAs('0.1.0', 30_000);
    expect(online.device.runtime).toEqual({ name: 'onnxruntime-node', version: '1.30.0', backend: 'cpu' });
    expect(online.device.agentUpdate).toBeUndefined();
  }, 60_000);

  it('updates itself to a healthy new version and reports it', async () => {
    const updated = waitEvent('agent.updated', 60_000);
    const updating = waitEvent('agent.updating', 60_000);
    const commit = await deliverAgentBundle({ mqtt: operator, privateKeyPem: await readFile(join(m.dataDir, 'keys', 'fleet-key.pem'), 'utf8'), device: DEVICE, file: bundles.next!, manifestVersion: 1, agent: { version: '0.1.1', arch: 'x64', healthDeadlineS: 60 } });
    expect(commit).toMatchObject({ model: 'edgefleet-agent', version: 1, activated: true });
    expect((await updating).data).toEqual({ from: '0.1.0', to: '0.1.1', version: 1 });
    expect((await updated).data).toEqual({ from: '0.1.0', to: '0.1.1' });
    const online = await onlineAs('0.1.1', 30_000, (s) => s.device.agentUpdate?.state === 'updated');
    expect(online.device.agentUpdate).toMatchObject({ state: 'updated', from: '0.1.0', to: '0.1.1' });
    expect(readlinkSync(join(paths.prefix, 'agent', 'current'))).toBe('versions/0.1.1');
    await eventually('the launcher ends the trial', async () => (existsSync(join(paths.prefix, 'agent', 'state', 'trial')) ? undefined : true), 10_000);
    expect(launcherLog).toContain('agent 0.1.1 reported healthy; trial over');
  }, 120_000);

  it('a new version that never becomes healthy is rolled back by the device itself, and the rollback is reported', async () => {
    const rolledBack = waitEvent('agent.rolled-back', 90_000);
    const key = await readFile(join(m.dataDir, 'keys', 'fleet-key.pem'), 'utf8');
    const commit = await deliverAgentBundle({ mqtt: operator, privateKeyPem: key, device: DEVICE, file: bundles.broken!, manifestVersion: 2, agent: { version: '0.1.2-broken', arch: 'x64', healthDeadlineS: 10 } });
    expect(commit).toMatchObject({ version: 2, activated: true });
    const event = await rolledBack;
    expect(event.data).toEqual({ failed: '0.1.2-broken', restored: '0.1.1', reason: 'agent 0.1.2-broken did not connect and report healthy within 10 s' });
    // the first status after the fallback says so already
    const online = await onlineAs('0.1.1', 30_000, (s) => s.device.agentUpdate?.to === '0.1.2-broken');
    expect(online.device.agentUpdate).toMatchObject({ state: 'rolled-back', from: '0.1.1', to: '0.1.2-broken', reason: event.data.reason });
    expect(readlinkSync(join(paths.prefix, 'agent', 'current'))).toBe('versions/0.1.1');
    await eventually('the failed version is removed', async () => (existsSync(join(paths.prefix, 'agent', 'versions', '0.1.2-broken')) ? undefined : true), 10_000);
    expect(launcherLog).toContain('rolled back from agent 0.1.2-broken to 0.1.1');
  }, 150_000);

  it('refuses at the offer a bundle for another architecture and an older manifest', async () => {
    const key = await readFile(join(m.dataDir, 'keys', 'fleet-key.pem'), 'utf8');
    const send = (manifestVersion: number, arch: 'arm64' | 'x64') =>
      deliverAgentBundle({ mqtt: operator, privateKeyPem: key, device: DEVICE, file: bundles.next!, manifestVersion, agent: { version: '0.1.3', arch } });
    await expect(send(3, 'arm64')).rejects.toMatchObject({ code: 'wrong_target', message: expect.stringMatching(/built for arm64, but this device is x64/) });
    await expect(send(1, 'x64')).rejects.toMatchObject({ code: 'lower_version' });
    expect((await onlineAs('0.1.1', 5_000)).device.agentVersion).toBe('0.1.1');
  }, 60_000);
});
