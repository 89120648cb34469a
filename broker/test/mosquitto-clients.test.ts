import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { MqttClient } from 'mqtt';
import type { Client } from 'aedes';
import { topics } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { Inbox, TOKEN, connectClient, endClient, publish, run, subscribe, withDeadline } from './helpers.js';

/** mosquitto_pub / mosquitto_sub (Debian mosquitto-clients) as third-party clients with a device credential. */
describe('third-party clients: mosquitto_pub and mosquitto_sub', () => {
  let broker: RunningBroker;
  let operator: MqttClient;
  let inbox: Inbox;
  const auth = (id: string, token = TOKEN(id)) => ['-h', '127.0.0.1', '-p', String(broker.ports.tcp), '-u', id, '-P', token, '-i', id, '-V', 'mqttv311'];

  /** Resolves once the broker has processed a SUBSCRIBE from `clientId`. */
  const subscribed = (clientId: string) =>
    withDeadline(
      new Promise<void>((resolve) => {
        const on = (_subs: unknown, client: Client) => {
          if (client.id === clientId) {
            broker.aedes.off('subscribe', on);
            resolve();
          }
        };
        broker.aedes.on('subscribe', on);
      }),
      5000,
      `${clientId} to subscribe`,
    );

  beforeAll(async () => {
    broker = await startTestBroker({
      devices: [
        { id: 'dev1', token: TOKEN('dev1'), groups: ['lab'] },
        { id: 'dev2', token: TOKEN('dev2') },
      ],
      operators: [{ id: 'ops', token: TOKEN('ops') }],
    });
    operator = await connectClient(broker.url, { clientId: 'ops', username: 'ops', password: TOKEN('ops') });
    inbox = new Inbox(operator);
    await subscribe(operator, topics.allDevices('status'));
  });
  afterAll(async () => {
    await endClient(operator);
    await broker.close();
  });

  it('mosquitto_sub receives commands on its own topic and its group', async () => {
    const ready = subscribed('dev1');
    const sub = run('mosquitto_sub', [...auth('dev1'), '-q', '1', '-C', '2', '-W', '10', '-t', topics.device('dev1', 'commands'), '-t', topics.group('lab', 'commands'), '-v']);
    await ready;
    await publish(operator, topics.device('dev1', 'commands'), 'reboot');
    await publish(operator, topics.group('lab', 'commands'), 'update');
    const r = await sub;
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual([`${topics.device('dev1', 'commands')} reboot`, `${topics.group('lab', 'commands')} update`]);
  });

  it('mosquitto_pub publishes to its own status topic', async () => {
    const before = inbox.count();
    const r = await run('mosquitto_pub', [...auth('dev1'), '-q', '1', '-t', topics.device('dev1', 'status'), '-m', 'online']);
    expect(r.code).toBe(0);
    await inbox.waitForCount(before + 1);
    expect(inbox.messages.at(-1)).toMatchObject({ topic: topics.device('dev1', 'status') });
    expect(inbox.messages.at(-1)!.payload.toString()).toBe('online');
  });

  it.each(['#', '$SYS/#', topics.device('dev2', 'commands'), topics.allDevices('status')])('mosquitto_sub on %s is refused', async (filter) => {
    const r = await run('mosquitto_sub', [...auth('dev1'), '-q', '1', '-W', '5', '-t', filter, '-v']);
    expect(r.stderr).toContain('All subscription requests were denied');
    expect(r.stdout).toBe('');
  });

  it("mosquitto_pub into another device's subtree never reaches the operator", async () => {
    const before = inbox.count();
    const forged = await run('mosquitto_pub', [...auth('dev1'), '-q', '1', '-t', topics.device('dev2', 'status'), '-m', 'forged']);
    expect(forged.code).not.toBe(0); // the broker dropped the connection instead of acknowledging
    const real = await run('mosquitto_pub', [...auth('dev2'), '-q', '1', '-t', topics.device('dev2', 'status'), '-m', 'real']);
    expect(real.code).toBe(0);
    await inbox.waitForCount(before + 1);
    expect(inbox.messages.slice(before).map((m) => m.payload.toString())).toEqual(['real']);
  });

  it('a wrong token or a borrowed client id is refused', async () => {
    const bad = await run('mosquitto_pub', [...auth('dev1', 'wrong-token-0123456789'), '-t', topics.device('dev1', 'status'), '-m', 'x']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/bad user name or password/i);
    const borrowed = await run('mosquitto_pub', [...auth('dev1'), '-i', 'dev2', '-t', topics.device('dev1', 'status'), '-m', 'x']);
    expect(borrowed.code).not.toBe(0);
    expect(borrowed.stderr).toMatch(/identifier rejected/i);
  });
});
