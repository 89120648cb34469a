/**
 * Issue 10, class 1: the legacy channel (`hello`) must not be a fleet-wide kill switch.
 * The attacker holds one device's own credentials and publishes `exit` there, plain and
 * retained; real agent processes must keep running, and the operator's plain-text
 * commands must still reach them. On a third-party broker (Mosquitto, anonymous, so
 * nothing stops the plant) an agent started after a retained `exit` keeps running.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from './support/broker.js';
import { cleanupAgents, connectOperator, startAgent, watchStatus } from './support/agent-process.js';
import type { AgentProcess, StatusWatcher } from './support/agent-process.js';
import { startMosquitto } from './support/mosquitto.js';
import type { MosquittoProcess } from './support/mosquitto.js';

const run = promisify(execFile);
const OPERATOR = { id: 'op', token: 'operator-token-legacy' };
const VICTIMS = [
  { id: 'pi-a', token: 'device-token-a' },
  { id: 'pi-b', token: 'device-token-b' },
  { id: 'pi-c', token: 'device-token-c' },
];
const ATTACKER = { id: 'pi-evil', token: 'device-token-evil' };
const LEGACY = ['--legacy-topic', 'hello'];

/** A plain-text command from the operator, through mosquitto_pub (the original's way). */
async function operatorSays(port: number, message: string): Promise<void> {
  await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-u', OPERATOR.id, '-P', OPERATOR.token, '-i', `${OPERATOR.id}-pub`, '-q', '1', '-t', 'hello', '-m', message]);
}

/** Connects as the attacking device and publishes on `hello`; resolves once the broker has dropped it. */
async function attackerPublishes(url: string, message: string, retain: boolean): Promise<{ acked: boolean }> {
  const client = mqtt.connect(url, { clientId: ATTACKER.id, username: ATTACKER.id, password: ATTACKER.token, protocolVersion: 4, reconnectPeriod: 0 });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  const dropped = new Promise<void>((resolve) => client.once('close', () => resolve()));
  let acked = false;
  client.publish('hello', message, { qos: 1, retain }, (err) => (acked = !err));
  await dropped;
  client.end(true);
  return { acked };
}

const running = (a: AgentProcess) => a.child.exitCode === null && a.child.signalCode === null;
const heard = (a: AgentProcess, text: string) => a.stdout.includes(`   message: ${text}`);

describe('a device publishing `exit` on the legacy topic, through the embedded broker', () => {
  let broker: RunningBroker;
  let operator: MqttClient;
  let watcher: StatusWatcher;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    broker = await startTestBroker({ devices: [...VICTIMS, ATTACKER], operators: [OPERATOR], legacyTopic: 'hello' });
    operator = await connectOperator(broker.url, OPERATOR);
    watcher = await watchStatus(operator);
    for (const v of VICTIMS.slice(0, 2)) {
      const agent = await startAgent({ broker: broker.url, ...v, args: LEGACY }, watcher);
      agents.push(agent);
      await agent.waitForStdout('Subscribing to topic hello using QoS1');
    }
  });

  afterAll(async () => {
    await cleanupAgents(...agents);
    await operator?.endAsync();
    await broker?.close();
  });

  it('cannot stop the other agents, plain or retained; the operator still can', async () => {
    const port = broker.ports.tcp!;
    for (const retain of [false, true]) {
      // the broker drops the attacker without a PUBACK [MQTT-3.3.5-2]
      expect(await attackerPublishes(broker.url, 'exit', retain)).toEqual({ acked: false });
    }
    // the operator's plain-text command arrives after the attacks: every agent answers it and heard nothing else
    const marks = agents.map((a) => a.stdout.length);
    await operatorSays(port, 'done');
    await Promise.all(agents.map((a, i) => a.waitForStdout('Done acknowledged', 10_000, marks[i])));
    for (const a of agents) {
      expect([a.id, running(a), heard(a, 'exit'), a.stdout.includes('Exiting...')]).toEqual([a.id, true, false, false]);
    }

    // an agent that starts now finds no retained `exit` waiting for it (nor any retained message to ignore)
    const late = await startAgent({ broker: broker.url, ...VICTIMS[2]!, args: LEGACY }, watcher);
    agents.push(late);
    await late.waitForStdout('Subscribing to topic hello using QoS1');
    const from = late.stdout.length;
    await operatorSays(port, 'done');
    await late.waitForStdout('Done acknowledged', 10_000, from);
    expect(late.stdout.some((l) => l.startsWith('Ignored a retained message'))).toBe(false);
    expect(running(late)).toBe(true);

    // and the operator's own `exit` still stops every agent, as the original channel did
    const seen = agents.map((a) => watcher.history.get(a.id)?.length ?? 0);
    await operatorSays(port, 'exit');
    for (const a of agents) expect(await a.exited).toEqual({ code: 0, signal: null });
    await Promise.all(agents.map((a, i) => watcher.waitFor(a.id, false, 10_000, seen[i])));
  });
});

describe('a retained `exit` planted on a third-party broker (Mosquitto 2, anonymous)', () => {
  let mosquitto: MosquittoProcess | undefined;
  let port: number;
  let watcherClient: MqttClient | undefined;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    // no ACL at all: anyone may publish anything, retained, which is the case the agent must survive alone
    mosquitto = await startMosquitto(['allow_anonymous true', 'persistence false']);
    port = mosquitto.port;
  });

  afterAll(async () => {
    await cleanupAgents(...agents);
    await watcherClient?.endAsync();
    await mosquitto?.stop();
  });

  it('an agent started afterwards ignores it, keeps running and still obeys live commands', async () => {
    await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-i', ATTACKER.id, '-q', '1', '-r', '-t', 'hello', '-m', 'exit']);
    // the plant is really there: a new subscriber is handed the retained `exit`
    const planted = await run('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(port), '-i', 'probe', '-t', 'hello', '-C', '1', '-W', '5', '-v']);
    expect(planted.stdout.trim()).toBe('hello exit');

    const url = `mqtt://127.0.0.1:${port}`;
    watcherClient = await connectOperator(url, OPERATOR);
    const watcher = await watchStatus(watcherClient);
    const agent = await startAgent({ broker: url, ...VICTIMS[0]!, args: LEGACY }, watcher);
    agents.push(agent);
    await agent.waitForStdout('Ignored a retained message on hello: commands are never retained');
    expect(agent.logs.some((l) => l.msg === 'ignored a retained message on the legacy topic: commands there are never retained')).toBe(true);
    expect(heard(agent, 'exit')).toBe(false);

    // a live command (not retained when delivered [MQTT-3.3.1-9]) is still a command
    const from = agent.stdout.length;
    await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-i', 'op-pub', '-q', '1', '-t', 'hello', '-m', 'done']);
    await agent.waitForStdout('Done acknowledged', 10_000, from);
    expect(running(agent)).toBe(true);

    // restarting does not change that: the retained `exit` is still there and still ignored
    expect((await agent.kill('SIGTERM')).code).toBe(0);
    const restarted = await startAgent({ broker: url, ...VICTIMS[0]!, args: LEGACY }, watcher);
    agents.push(restarted);
    await restarted.waitForStdout('Ignored a retained message on hello');
    const again = restarted.stdout.length;
    await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-i', 'op-pub', '-q', '1', '-t', 'hello', '-m', 'done']);
    await restarted.waitForStdout('Done acknowledged', 10_000, again);
    expect(running(restarted)).toBe(true);
  });
});
