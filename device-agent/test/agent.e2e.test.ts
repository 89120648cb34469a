/**
 * The agent as a real process against a real broker: presence and last will,
 * every command (good and bad), groups, two agents side by side, SIGTERM, bad
 * configuration.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import type { MqttClient } from 'mqtt';
import { ReplySchema, StatusMessageSchema, makeRequest, topics } from '@edgefleet/protocol';
import type { Reply } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { createRequester } from '@edgefleet/host-manager';
import type { Requester } from '@edgefleet/host-manager';
import { startTestBroker } from '../../test/support/broker.js';
import { AGENT_BIN, cleanupAgents, connectOperator, spawnAgent, startAgent, watchStatus } from '../../test/support/agent-process.js';
import type { AgentProcess, StatusWatcher } from '../../test/support/agent-process.js';

const OPERATOR = { id: 'op', token: 'operator-token-1' };
const D1 = { id: 'pi-001', token: 'device-token-1', groups: ['kitchen'] };
const D2 = { id: 'pi-002', token: 'device-token-2', groups: ['kitchen'] };
const D3 = { id: 'jetson-003', token: 'device-token-3', groups: [] };
const D4 = { id: 'jetson-004', token: 'device-token-4', groups: [] };

let broker: RunningBroker;
let operator: MqttClient;
let watcher: StatusWatcher;
let requester: Requester;
let a1: AgentProcess | undefined;
let a2: AgentProcess | undefined;
const replies: { device: string; reply: Reply }[] = [];

beforeAll(async () => {
  broker = await startTestBroker({ devices: [D1, D2, D3, D4], operators: [OPERATOR] });
  operator = await connectOperator(broker.url, OPERATOR);
  watcher = await watchStatus(operator);
  requester = await createRequester(operator);
  operator.on('message', (topic, payload) => {
    const m = /^fleet\/v1\/devices\/([^/]+)\/replies$/.exec(topic);
    if (m) replies.push({ device: m[1]!, reply: ReplySchema.parse(JSON.parse(payload.toString())) });
  });
  [a1, a2] = await Promise.all([
    startAgent({ broker: broker.url, ...D1 }, watcher),
    startAgent({ broker: broker.url, ...D2 }, watcher),
  ]);
});

afterAll(async () => {
  await cleanupAgents(a1, a2);
  requester?.close();
  await operator?.endAsync();
  await broker?.close();
});

/** Publishes a raw payload on a device's command topic and waits for the reply with that corr. */
async function rawRequest(device: string, payload: string, corr: string, timeoutMs = 5000): Promise<Reply> {
  const from = replies.length;
  await operator.publishAsync(topics.device(device, 'commands'), payload, { qos: 1 });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = replies.slice(from).find((r) => r.reply.corr === corr && r.device === device);
    if (hit) return hit.reply;
    if (Date.now() > deadline) throw new Error(`no reply for ${corr}`);
    await new Promise((r) => operator.once('message', r));
  }
}

describe('device agent process', () => {
  it('announces itself with a retained status that a late subscriber still gets', async () => {
    const late = await connectOperator(broker.url, OPERATOR);
    try {
      const lateWatcher = await watchStatus(late);
      const status = await lateWatcher.waitFor(D1.id, true, 5000);
      expect(status.online).toBe(true);
      if (!status.online) return;
      expect(status.device).toMatchObject({
        agentVersion: expect.stringMatching(/^\d+\.\d+\.\d+/),
        arch: process.arch,
        platform: process.platform,
        groups: ['kitchen'],
      });
      expect(status.device.cpus).toBeGreaterThan(0);
      expect(status.device.memoryBytes).toBeGreaterThan(0);
      expect(typeof status.device.docker).toBe('boolean');
    } finally {
      await late.endAsync();
    }
  });

  it('reports whether a Docker engine answers: the real engine (CI starts dockerd), then a socket that is not there', async () => {
    // The engine must be up for this test: `.ci/run` starts dockerd and waits for `docker info`.
    const engine = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { encoding: 'utf8' });
    expect(engine.status).toBe(0);
    // the agent pings the engine while it starts and republishes its status when the answer differs
    const announced = async (device: string, docker: boolean): Promise<boolean> => {
      for (const deadline = Date.now() + 5000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
        if (watcher.history.get(device)?.some((m) => m.online && m.device.docker === docker)) return true;
      }
      return false;
    };
    expect(await announced(D1.id, true)).toBe(true);
    expect((await requester.request(D1.id, 'info', {})).docker).toBe(true);

    const seen = watcher.history.get(D4.id)?.length ?? 0;
    const noEngine = await startAgent({ broker: broker.url, ...D4, env: { DOCKER_HOST: 'unix:///nonexistent/docker.sock' } }, watcher);
    try {
      expect((await requester.request(D4.id, 'info', {})).docker).toBe(false);
      const first = await watcher.waitFor(D4.id, true, 5000, seen);
      expect(first.online && first.device.docker).toBe(false);
      expect(watcher.history.get(D4.id)?.some((m) => m.online && m.device.docker)).toBe(false);
    } finally {
      await cleanupAgents(noEngine);
    }
  });

  it('answers ping, info and logs', async () => {
    const pong = await requester.request(D1.id, 'ping', {});
    expect(pong.pong).toBe(true);
    const info = await requester.request(D2.id, 'info', {});
    expect(info.groups).toEqual(['kitchen']);
    const logs = await requester.request(D1.id, 'logs', { lines: 5 });
    expect(logs.lines.length).toBeGreaterThan(0);
    expect(logs.lines.length).toBeLessThanOrEqual(5);
    expect(JSON.parse(logs.lines[logs.lines.length - 1]!)).toHaveProperty('msg');
    // the token is never written to the log
    const all = await requester.request(D1.id, 'logs', { lines: 5000 });
    expect(all.lines.join('\n')).not.toContain(D1.token);
  });

  it('answers bad requests with an error, never silence', async () => {
    const unknown = { ...makeRequest('ping', {}, 5000), command: 'self-destruct' };
    expect(await rawRequest(D1.id, JSON.stringify(unknown), unknown.id)).toMatchObject({ status: 'error', error: { code: 'unknown_command' } });
    const badParams = makeRequest('logs', { lines: -3 }, 5000);
    expect(await rawRequest(D1.id, JSON.stringify(badParams), badParams.id)).toMatchObject({ status: 'error', error: { code: 'invalid_params' } });
    const expired = makeRequest('ping', {}, 1000, Date.now() - 60_000);
    expect(await rawRequest(D1.id, JSON.stringify(expired), expired.id)).toMatchObject({ status: 'error', error: { code: 'deadline_exceeded' } });
    const notRequest = { id: 'half-a-request', v: 1 };
    expect(await rawRequest(D1.id, JSON.stringify(notRequest), 'half-a-request')).toMatchObject({ status: 'error', error: { code: 'bad_request' } });
    // no id to answer to: logged, and the agent keeps serving
    await operator.publishAsync(topics.device(D1.id, 'commands'), '{{{ not json', { qos: 1 });
    await a1!.waitForLog((l) => l.msg === 'dropped a request without a usable id (no reply possible)');
    const transfer = makeRequest('transfer.status', { transferId: 't-1' }, 5000);
    expect(await rawRequest(D1.id, JSON.stringify(transfer), transfer.id)).toMatchObject({ status: 'error', error: { code: 'unavailable' } });
    expect((await requester.request(D1.id, 'ping', {})).pong).toBe(true);
  });

  it('runs legacy commands through the request channel', async () => {
    expect(await requester.request(D1.id, 'legacy', { command: 'done' })).toEqual({ message: 'Done acknowledged' });
    expect(await requester.request(D1.id, 'legacy', { command: 'stop' })).toEqual({ message: 'No inference program running' });
    expect(await requester.request(D1.id, 'legacy', { command: 'start' })).toEqual({ message: 'No inference program configured' });
    expect(await requester.request(D1.id, 'legacy', { command: 'install' })).toEqual({ message: 'No install command configured' });
  });

  it('two agents on one broker never knock each other off; a group request reaches both', async () => {
    const results = await requester.requestGroup('kitchen', [D1.id, D2.id], 'ping', {}, 5000);
    expect([...results.keys()].sort()).toEqual([D1.id, D2.id]);
    for (const r of results.values()) expect(r.ok).toBe(true);
    // each reply came from the device that was asked
    const p1 = makeRequest('ping', {}, 5000);
    await rawRequest(D1.id, JSON.stringify(p1), p1.id);
    expect(replies.filter((r) => r.reply.corr === p1.id).map((r) => r.device)).toEqual([D1.id]);
    for (const a of [a1!, a2!]) expect(a.logs.filter((l) => l.msg === 'disconnected from the broker')).toHaveLength(0);
    expect(watcher.history.get(D1.id)!.filter((m) => !m.online)).toHaveLength(0);
  });

  it('a third device with the wrong token is refused and keeps retrying with backoff', async () => {
    const bad = await spawnAgent({ broker: broker.url, id: D3.id, token: 'wrong-token' });
    try {
      const first = await bad.waitForLog((l) => l.msg === 'reconnecting after backoff');
      expect(Number(first.delayMs)).toBeLessThanOrEqual(100);
      await bad.waitForLog((l) => l.msg === 'reconnecting after backoff' && Number(l.attempt) >= 3);
      expect(watcher.history.get(D3.id)).toBeUndefined();
      expect(bad.logs.map((l) => JSON.stringify(l)).join('\n')).not.toContain('wrong-token');
    } finally {
      await bad.cleanup();
    }
  });

  it('kill -9: the broker publishes the retained last will, and the agent comes back online after a restart', async () => {
    const seen = watcher.history.get(D2.id)?.length ?? 0;
    await a2!.kill('SIGKILL');
    const offline = await watcher.waitFor(D2.id, false, 10_000, seen);
    expect(offline).toMatchObject({ online: false, reason: 'connection lost' });
    // a new subscriber sees the retained offline status
    const late = await connectOperator(broker.url, OPERATOR);
    try {
      const lateWatcher = await watchStatus(late);
      expect((await lateWatcher.waitFor(D2.id, false, 5000)).online).toBe(false);
    } finally {
      await late.endAsync();
    }
    const dataDir = a2!.dataDir;
    a2 = await startAgent({ broker: broker.url, ...D2, dataDir }, watcher);
    expect((await requester.request(D2.id, 'ping', {})).pong).toBe(true);
  });

  it('SIGTERM: retained offline with the reason, exit code 0', async () => {
    const seen = watcher.history.get(D1.id)?.length ?? 0;
    const exit = await a1!.kill('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(await watcher.waitFor(D1.id, false, 5000, seen)).toMatchObject({ online: false, reason: 'SIGTERM' });
    const raw = await new Promise<Buffer>((resolve) => {
      const onMessage = (topic: string, payload: Buffer) => {
        if (topic === topics.device(D1.id, 'status')) {
          operator.off('message', onMessage);
          resolve(payload);
        }
      };
      operator.on('message', onMessage);
      void operator.subscribeAsync(topics.device(D1.id, 'status')); // re-subscribing delivers the retained message again
    });
    expect(StatusMessageSchema.parse(JSON.parse(raw.toString()))).toMatchObject({ online: false, reason: 'SIGTERM' });
  });
});

describe('bad configuration', () => {
  it('exits with code 2 and names the bad key', async () => {
    const child = spawn(process.execPath, [AGENT_BIN, '--device', 'no/slashes', '--broker', 'ftp://x', '--telemetry-interval-ms', '5'], {
      env: { ...process.env, EDGEFLEET_DEVICE_TOKEN: 'secret-token-value' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((resolve) => child.on('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toMatch(/device \(flag --device, env EDGEFLEET_DEVICE/);
    expect(stderr).toMatch(/broker .*expected a URL starting with mqtt:\/\//);
    expect(stderr).toMatch(/telemetryIntervalMs .*>=100/);
    expect(stderr).not.toContain('secret-token-value');
  });
});
