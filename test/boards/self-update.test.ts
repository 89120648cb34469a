/**
 * Agent self-update on this machine's architecture, through the controller's real path: the x64 bundle
 * built and registered by `hostManager agent bundle`, installed with its install.sh (into a temporary
 * prefix, no systemd) and started as the install script says; `hostManager agent deploy` rolls a healthy
 * new version out (signed, chunked, gated: the device counts as switched when it reports the version),
 * then one that starts but never connects, which the launcher rolls back by itself after the manifest's
 * health deadline: the rollout fails with the device's reason. Devices of another architecture are
 * skipped with the reason, bad bundles are refused by the registry, and the device itself refuses
 * manifests for another architecture and older versions at the offer (the test-only sender).
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
import type { FleetEvent, SignedManifest, StatusMessage } from '@edgefleet/protocol';
import { connectOperator, watchStatus } from '../support/agent-process.js';
import type { StatusWatcher } from '../support/agent-process.js';
import { deliverAgentBundle, offerAgain, rebrandBundle } from '../support/agent-update.js';
import { api, eventually, runCli, startManager } from '../support/manager-process.js';
import type { ManagerProcess } from '../support/manager-process.js';
import { killBoardProcess } from '../support/boards.js';

const DEVICE = 'upd-1';
/** Tables fit $COLUMNS when piped: wide enough that no cell is cut. */
const WIDE = { COLUMNS: '250' };
let m: ManagerProcess;
let work: string;
let operator: MqttClient;
let watcher: StatusWatcher;
let launcher: ChildProcess | undefined;
let launcherLog = '';
const events: FleetEvent[] = [];
const bundles: Record<string, string> = {};
const paths = { prefix: '', etc: '', data: '' };
/** The rollout that switched the device to 0.1.1 (rolled back at the end). */
let healthyRollout = '';

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
  // the real command: builds the bundle from this checkout and registers it (release 1)
  const cli = await runCli(m, ['agent', 'bundle', '--arch', 'x64', '--out', work, '--json']);
  if (cli.code !== 0) throw new Error(`agent bundle failed: ${cli.stderr}`);
  const built = { ...cli.json<{ file: string; agentVersion: string; arch: string; version: number; created: boolean }>(), name: 'edgefleet-agent-0.1.0-x64' };
  expect(built).toMatchObject({ agentVersion: '0.1.0', arch: 'x64', version: 1, created: true });
  bundles['0.1.0'] = built.file;
  bundles.next = await rebrandBundle(built.file, { fromName: built.name, version: '0.1.1', arch: 'x64', outDir: work });
  bundles.broken = await rebrandBundle(built.file, { fromName: built.name, version: '0.1.2-broken', arch: 'x64', broken: true, outDir: work });
  bundles.arm64Only = await rebrandBundle(built.file, { fromName: built.name, version: '0.1.3', arch: 'arm64', claimArch: 'arm64', outDir: work });
}, 900_000);

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
    // the operator sees the runtime and the agent version
    const list = await runCli(m, ['devices', 'list'], { env: WIDE });
    const row = list.stdout.split('\n').find((l) => l.startsWith(DEVICE))!;
    expect(row).toMatch(/onnxruntime-node 1\.30\.0 \(cpu\)\s+0\.1\.0\s/);
    expect((await runCli(m, ['devices', 'show', DEVICE])).stdout.split('\n')[0]).toBe(`${DEVICE}: online, arch x64, runtime onnxruntime-node 1.30.0 (cpu), agent 0.1.0`);
  }, 60_000);

  it('`agent deploy` rolls a healthy new version out: switched once the device reports it', async () => {
    const added = await runCli(m, ['agent', 'add', bundles.next!, '--health-deadline', '60', '--json']);
    expect(added.json()).toMatchObject({ agentVersion: '0.1.1', arch: 'x64', version: 2, healthDeadlineS: 60, created: true });
    const updated = waitEvent('agent.updated', 120_000);
    const updating = waitEvent('agent.updating', 120_000);
    const r = await runCli(m, ['agent', 'deploy', '0.1.1', '--to', DEVICE, '--soak', '0', '--wait', '--json']);
    const rollout = r.json<{ id: string; status: string; kind: string; version: number; agent: unknown; devices: Record<string, { state: string; previous: number | null }> }>();
    expect({ code: r.code, status: rollout.status, stderr: r.stderr }).toEqual({ code: 0, status: 'succeeded', stderr: '' });
    healthyRollout = rollout.id;
    expect(rollout).toMatchObject({ kind: 'agent', version: 2, agent: { version: '0.1.1' } });
    expect(rollout.devices[DEVICE]).toMatchObject({ state: 'switched', previous: 1 });
    expect((await updating).data).toEqual({ from: '0.1.0', to: '0.1.1', version: 2 });
    expect((await updated).data).toEqual({ from: '0.1.0', to: '0.1.1' });
    const online = await onlineAs('0.1.1', 30_000, (s) => s.device.agentUpdate?.state === 'updated');
    expect(online.device.agentUpdate).toMatchObject({ state: 'updated', from: '0.1.0', to: '0.1.1' });
    expect(readlinkSync(join(paths.prefix, 'agent', 'current'))).toBe('versions/0.1.1');
    await eventually('the launcher ends the trial', async () => (existsSync(join(paths.prefix, 'agent', 'state', 'trial')) ? undefined : true), 10_000);
    expect(launcherLog).toContain('agent 0.1.1 reported healthy; trial over');
    expect((await runCli(m, ['devices', 'show', DEVICE])).stdout.split('\n').slice(0, 2)).toEqual([
      `${DEVICE}: online, arch x64, runtime onnxruntime-node 1.30.0 (cpu), agent 0.1.1`,
      'last agent update: 0.1.0 → 0.1.1, updated',
    ]);
  }, 240_000);

  it('a version that never becomes healthy is rolled back by the device itself; the rollout fails with its reason', async () => {
    expect((await runCli(m, ['agent', 'add', bundles.broken!, '--health-deadline', '10'])).code).toBe(0);
    const rolledBack = waitEvent('agent.rolled-back', 150_000);
    const r = await runCli(m, ['agent', 'deploy', '0.1.2-broken', '--to', DEVICE, '--soak', '0', '--wait', '--json']);
    const rollout = r.json<{ status: string; reason: string; devices: Record<string, { state: string; error?: { code: string; message: string } }> }>();
    expect({ code: r.code, status: rollout.status }).toEqual({ code: 1, status: 'failed' });
    const event = await rolledBack;
    expect(event.data).toEqual({ failed: '0.1.2-broken', restored: '0.1.1', reason: 'agent 0.1.2-broken did not connect and report healthy within 10 s' });
    expect(rollout.devices[DEVICE]).toMatchObject({
      state: 'failed',
      error: { code: 'load_failed', message: `agent 0.1.2-broken did not become healthy on ${DEVICE}, which fell back to 0.1.1 by itself: ${event.data.reason}` },
    });
    expect(rollout.reason).toContain('1 of 1 devices failed to install');
    // the first status after the fallback says so already
    const online = await onlineAs('0.1.1', 30_000, (s) => s.device.agentUpdate?.to === '0.1.2-broken');
    expect(online.device.agentUpdate).toMatchObject({ state: 'rolled-back', from: '0.1.1', to: '0.1.2-broken', reason: event.data.reason });
    expect(readlinkSync(join(paths.prefix, 'agent', 'current'))).toBe('versions/0.1.1');
    await eventually('the failed version is removed', async () => (existsSync(join(paths.prefix, 'agent', 'versions', '0.1.2-broken')) ? undefined : true), 10_000);
    expect(launcherLog).toContain('rolled back from agent 0.1.2-broken to 0.1.1');
    expect((await runCli(m, ['devices', 'list'], { env: WIDE })).stdout).toMatch(/0\.1\.1 \(0\.1\.2-broken rolled back\)/);
  }, 240_000);

  it('skips a device of another architecture with the reason, and refuses bad bundles and unbuilt architectures', async () => {
    expect((await runCli(m, ['agent', 'add', bundles.arm64Only!, '--json'])).json()).toMatchObject({ agentVersion: '0.1.3', arch: 'arm64', version: 4 });
    const r = await runCli(m, ['agent', 'deploy', '0.1.3', '--to', DEVICE, '--soak', '0', '--wait', '--json']);
    const rollout = r.json<{ status: string; reason: string; devices: Record<string, { state: string; error?: { code: string; message: string } }> }>();
    expect(rollout.devices[DEVICE]).toEqual(expect.objectContaining({
      state: 'skipped',
      error: { code: 'incompatible', message: `no bundle of agent 0.1.3 for x64 (${DEVICE}) in the registry; build one with \`hostManager agent bundle --arch x64 --version 0.1.3\`` },
    }));
    expect(rollout.reason).toContain('0 of 1 devices run agent 0.1.3; 1 skipped (no bundle of agent 0.1.3 for x64');
    // with --arch, devices of other architectures are left out
    const only = (await runCli(m, ['agent', 'deploy', '0.1.1', '--to', DEVICE, '--arch', 'arm64']));
    expect({ code: only.code, stderr: only.stderr }).toEqual({ code: 5, stderr: expect.stringContaining('agent 0.1.1 has no bundle for arm64 (built: x64)') });
    const armOnly = await runCli(m, ['agent', 'deploy', '0.1.3', '--to', DEVICE, '--arch', 'arm64', '--soak', '0', '--wait', '--json']);
    expect(armOnly.json<{ devices: Record<string, { error?: { message: string } }> }>().devices[DEVICE]?.error?.message).toBe(`${DEVICE} is x64; this rollout of agent 0.1.3 is for arm64 only`);
    // bad input: not a bundle, an unknown version, an architecture that does not exist
    await writeFile(join(work, 'not-a-bundle.tar.gz'), 'hello');
    const bad = await runCli(m, ['agent', 'add', join(work, 'not-a-bundle.tar.gz')]);
    expect({ code: bad.code, stderr: bad.stderr }).toEqual({ code: 2, stderr: expect.stringMatching(/not a readable tar\.gz .*give the file `hostManager agent bundle` wrote/) });
    expect((await runCli(m, ['agent', 'deploy', '9.9.9', '--to', DEVICE])).stderr).toMatch(/no bundle of agent 9\.9\.9 in the registry \(registered: 0\.1\.0, 0\.1\.1, 0\.1\.2-broken, 0\.1\.3\)/);
    expect((await runCli(m, ['agent', 'bundle', '--arch', 'mips', '--no-register'])).stderr).toMatch(/--arch takes x64, arm64, armv7/);
    const listed = (await api<{ agentVersion: string; arch: string }[]>(m, 'GET', '/api/agent/bundles')).body.map((b) => `${b.agentVersion}/${b.arch}`);
    expect(listed).toEqual(['0.1.0/x64', '0.1.1/x64', '0.1.2-broken/x64', '0.1.3/arm64']);
    expect((await onlineAs('0.1.1', 5_000)).device.agentVersion).toBe('0.1.1');
  }, 120_000);

  it('refuses at the offer a bundle for another architecture and an older manifest', async () => {
    const key = await readFile(join(m.dataDir, 'keys', 'fleet-key.pem'), 'utf8');
    const send = (manifestVersion: number, arch: 'arm64' | 'x64') =>
      deliverAgentBundle({ mqtt: operator, privateKeyPem: key, device: DEVICE, file: bundles.next!, manifestVersion, agent: { version: '0.1.3', arch } });
    await expect(send(5, 'arm64')).rejects.toMatchObject({ code: 'wrong_target', message: expect.stringMatching(/built for arm64, but this device is x64/) });
    await expect(send(1, 'x64')).rejects.toMatchObject({ code: 'lower_version' });
    expect((await onlineAs('0.1.1', 5_000)).device.agentVersion).toBe('0.1.1');
  }, 60_000);

  it('`rollback` of the agent rollout sends the previous release back, signed as a single-use rollback; its replay is refused', async () => {
    // whoever reads the device's command topic captures the rollback manifest the controller sends
    const commands = topics.device(DEVICE, 'commands');
    const offered: SignedManifest[] = [];
    const capture = (topic: string, payload: Buffer): void => {
      if (topic !== commands) return;
      const request = JSON.parse(payload.toString()) as { command?: string; params?: { manifest?: SignedManifest } };
      if (request.command === 'transfer.offer' && request.params?.manifest) offered.push(request.params.manifest);
    };
    operator.on('message', capture);
    await operator.subscribeAsync(commands, { qos: 1 });
    const updated = waitEvent('agent.updated', 150_000);
    const r = await runCli(m, ['rollback', healthyRollout, '--json']);
    const rollout = r.json<{ status: string; devices: Record<string, { state: string; error?: unknown }> }>();
    expect({ code: r.code, status: rollout.status, device: rollout.devices[DEVICE] }).toEqual({ code: 0, status: 'rolled-back', device: expect.objectContaining({ state: 'rolled-back' }) });
    expect((await updated).data).toEqual({ from: '0.1.1', to: '0.1.0' });
    const online = await onlineAs('0.1.0', 30_000, (s) => s.device.agentUpdate?.state === 'updated');
    expect(online.device.agentUpdate).toMatchObject({ from: '0.1.1', to: '0.1.0' });
    expect(readlinkSync(join(paths.prefix, 'agent', 'current'))).toBe('versions/0.1.0');
    operator.off('message', capture);
    await operator.unsubscribeAsync(commands);
    const captured = offered.find((signed) => (signed.manifest as { rollback?: boolean }).rollback === true);
    expect(captured?.manifest).toMatchObject({ kind: 'agent', version: 1, rollback: true, rollbackSeq: expect.any(Number) });
    await expect(offerAgain(operator, DEVICE, captured!)).rejects.toMatchObject({ code: 'replayed', message: expect.stringMatching(/works once/) });
    // what the device said about its updates is its report, marked as its word, never an operator audit entry
    const reports = (await api<{ reports: { event: string; reportedBy: string; text: string }[] }>(m, 'GET', `/api/reports?device=${DEVICE}`)).body.reports;
    expect(reports.filter((e) => e.event.startsWith('agent.')).map((e) => e.event)).toEqual(expect.arrayContaining(['agent.updating', 'agent.updated', 'agent.rolled-back']));
    for (const e of reports) expect(e).toMatchObject({ reportedBy: `device:${DEVICE}`, text: expect.stringMatching(new RegExp(`^reported by device ${DEVICE}: `)) });
    const audit = (await api<{ action: string }[]>(m, 'GET', '/api/audit?limit=1000')).body;
    expect(audit.filter((e) => e.action.startsWith('agent.')).map((e) => e.action).sort()).toEqual(expect.arrayContaining(['agent.add', 'agent.rollback']));
    expect(audit.some((e) => ['agent.updating', 'agent.updated', 'agent.rolled-back'].includes(e.action))).toBe(false);
  }, 240_000);
});
