import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { MqttClient } from 'mqtt';
import { topics } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { Inbox, TOKEN, connectClient, endClient, publish, subscribe, withDeadline } from './helpers.js';

describe('deny-by-default ACL from the protocol rules', () => {
  let broker: RunningBroker;
  let operator: MqttClient;
  let opInbox: Inbox;
  const device = (id: string) => connectClient(broker.url, { clientId: id, username: id, password: TOKEN(id) });

  beforeAll(async () => {
    broker = await startTestBroker({
      devices: [
        { id: 'dev1', token: TOKEN('dev1'), groups: ['lab'] },
        { id: 'dev2', token: TOKEN('dev2'), groups: ['field'] },
      ],
      operators: [{ id: 'ops', token: TOKEN('ops') }],
      legacyTopic: 'hello',
    });
    operator = await connectClient(broker.url, { clientId: 'ops', username: 'ops', password: TOKEN('ops') });
    opInbox = new Inbox(operator);
    expect(await subscribe(operator, ['fleet/v1/#', 'hello'])).toEqual([1, 1]);
  });
  afterAll(async () => {
    await endClient(operator);
    await broker.close();
  });

  it('lets a device subscribe to its own commands, its transfers and its groups, and refuses the rest (SUBACK 0x80)', async () => {
    const d1 = await device('dev1');
    const granted = await subscribe(d1, [
      topics.device('dev1', 'commands'),
      topics.transferFilter({ kind: 'device', name: 'dev1' }), // chunks: QoS 0 only (below)
      topics.group('lab', 'commands'),
      'hello',
      '#',
      '$SYS/#',
      '+/#',
      'fleet/v1/#',
      topics.device('dev2', 'commands'),
      topics.allDevices('status'),
      topics.group('field', 'commands'),
      topics.device('dev1', 'status'),
    ]);
    expect(granted).toEqual([1, 128, 1, 1, 128, 128, 128, 128, 128, 128, 128, 128]);
    // transfer filters at QoS 0: a device with a persistent session never makes the broker queue chunks
    expect(await subscribe(d1, [topics.transferFilter({ kind: 'device', name: 'dev1' }), topics.transferFilter({ kind: 'group', name: 'lab' })], 0)).toEqual([0, 0]);
    await endClient(d1);
  });

  it("does not deliver a device's publish into another device's subtree, and drops that device", async () => {
    const d1 = await device('dev1');
    const dropped = new Promise<void>((resolve) => d1.once('close', () => resolve()));
    const before = opInbox.count();
    d1.publish(topics.device('dev2', 'status'), 'forged', { qos: 1 });
    await withDeadline(dropped, 5000, 'dev1 to be disconnected'); // [MQTT-3.3.5-2]
    // a legitimate message sent afterwards arrives; the forged one never did
    const d2 = await device('dev2');
    await publish(d2, topics.device('dev2', 'telemetry'), 'real');
    await opInbox.waitForCount(before + 1);
    expect(opInbox.messages.slice(before).map((m) => m.payload.toString())).toEqual(['real']);
    await Promise.all([endClient(d1), endClient(d2)]);
  });

  it('delivers what a device may publish, and commands from the operator to the device', async () => {
    const d1 = await device('dev1');
    const inbox = new Inbox(d1);
    await subscribe(d1, [topics.device('dev1', 'commands'), topics.group('lab', 'commands'), 'hello']);
    const before = opInbox.count();
    for (const ch of ['status', 'telemetry', 'events', 'replies'] as const) await publish(d1, topics.device('dev1', ch), ch);
    await opInbox.waitForCount(before + 4);
    await publish(operator, topics.device('dev1', 'commands'), 'cmd');
    await publish(operator, topics.group('lab', 'commands'), 'group-cmd');
    await publish(operator, 'hello', 'legacy');
    await inbox.waitForCount(3); // cmd, group-cmd and the operator's plain-text command
    expect(inbox.messages.map((m) => m.payload.toString()).sort()).toEqual(['cmd', 'group-cmd', 'legacy']);
    await endClient(d1);
  });

  it("refuses an operator's publish outside the fleet tree", async () => {
    const op2 = await connectClient(broker.url, { clientId: 'ops-2', username: 'ops', password: TOKEN('ops') });
    const dropped = new Promise<void>((resolve) => op2.once('close', () => resolve()));
    op2.publish('$SYS/fake/heartbeat', 'x', { qos: 1 });
    await withDeadline(dropped, 5000, 'ops-2 to be disconnected');
    await endClient(op2);
  });
});
