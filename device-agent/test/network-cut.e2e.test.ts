/**
 * A device cut off from the network longer than its keepalive: the agent runs
 * in its own network namespace behind a veth pair; the test takes the link down.
 * The operator sees it offline once (the broker's last will after the keepalive
 * runs out) and online again when the link returns; telemetry sampled meanwhile
 * arrives complete.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import type { MqttClient } from 'mqtt';
import { TelemetryMessageSchema, topics } from '@edgefleet/protocol';
import type { TelemetryMessage } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { cleanupAgents, connectOperator, startAgent, watchStatus } from '../../test/support/agent-process.js';
import type { AgentProcess, StatusWatcher } from '../../test/support/agent-process.js';

const OPERATOR = { id: 'op', token: 'operator-token-n' };
const DEVICE = { id: 'pi-netns', token: 'device-token-n' };
const n = process.pid % 250;
const NS = `efb1-${process.pid}`;
const HOST_IF = `efb1h${n}`;
const DEV_IF = `efb1d${n}`;
const HOST_IP = `10.231.${n}.1`;
const DEV_IP = `10.231.${n}.2`;
const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });

let broker: RunningBroker;
let operator: MqttClient;
let watcher: StatusWatcher;
let agent: AgentProcess | undefined;

beforeAll(async () => {
  ip('netns', 'add', NS);
  ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', DEV_IF);
  ip('link', 'set', DEV_IF, 'netns', NS);
  ip('addr', 'add', `${HOST_IP}/30`, 'dev', HOST_IF);
  ip('link', 'set', HOST_IF, 'up');
  ip('netns', 'exec', NS, 'ip', 'addr', 'add', `${DEV_IP}/30`, 'dev', DEV_IF);
  ip('netns', 'exec', NS, 'ip', 'link', 'set', DEV_IF, 'up');
  ip('netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up');
  broker = await startTestBroker({ devices: [DEVICE], operators: [OPERATOR], tcp: { host: HOST_IP, port: 0 } });
  operator = await connectOperator(broker.url, OPERATOR);
  watcher = await watchStatus(operator);
});

afterAll(async () => {
  await cleanupAgents(agent);
  await operator?.endAsync();
  await broker?.close();
  try {
    ip('link', 'del', HOST_IF);
  } catch {
    // already gone with the namespace
  }
  try {
    ip('netns', 'del', NS);
  } catch {
    // never created
  }
});

describe('network cut longer than the keepalive', () => {
  it('offline once via the last will, online again when the link returns, telemetry complete', async () => {
    const telemetry: TelemetryMessage[] = [];
    operator.on('message', (topic, payload) => {
      if (topic === topics.device(DEVICE.id, 'telemetry')) telemetry.push(TelemetryMessageSchema.parse(JSON.parse(payload.toString())));
    });
    await operator.subscribeAsync(topics.device(DEVICE.id, 'telemetry'), { qos: 1 });
    agent = await startAgent(
      { broker: broker.url, ...DEVICE, wrap: ['ip', 'netns', 'exec', NS], telemetryIntervalMs: 200, args: ['--keepalive-s', '1'] },
      watcher,
    );
    const before = watcher.history.get(DEVICE.id)!.length;

    ip('link', 'set', HOST_IF, 'down');
    const offline = await watcher.waitFor(DEVICE.id, false, 15_000, before);
    expect(offline).toMatchObject({ online: false, reason: 'connection lost' });
    // the agent notices too (no PINGRESP) and buffers telemetry meanwhile
    await agent.waitForLog((l) => l.msg === 'telemetry sample' && l.connected === false && Number(l.pending) >= 3, 15_000);

    ip('link', 'set', HOST_IF, 'up');
    const back = watcher.history.get(DEVICE.id)!.length;
    await watcher.waitFor(DEVICE.id, true, 20_000, back);
    const last = agent.logs.filter((l) => l.msg === 'telemetry sample').map((l) => Number(l.seq));
    const target = Math.max(...last);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('buffered telemetry did not arrive')), 15_000);
      const check = () => {
        if (telemetry.some((m) => m.seq >= target)) {
          clearTimeout(timer);
          operator.off('message', check);
          resolve();
        }
      };
      operator.on('message', check);
      check();
    });

    const statuses = watcher.history.get(DEVICE.id)!.slice(before);
    expect(statuses.filter((s) => !s.online)).toHaveLength(1);
    const seqs = [...new Set(telemetry.map((m) => m.seq))];
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => seqs[0]! + i));
    expect(telemetry.every((m) => m.dropped === 0)).toBe(true);
  }, 60_000);
});
