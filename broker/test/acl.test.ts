import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { MqttClient } from 'mqtt';
import { topics } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { Inbox, TOKEN, closed, connectClient, endClient, publish, rawSocket, subscribe, withDeadline } from './helpers.js';
import * as p from './packets.js';

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

  it('closes a device that collects more than 64 refused subscriptions, and a SUBSCRIBE with more than 128 filters', async () => {
    const d1 = await device('dev1');
    const dropped = new Promise<void>((resolve) => d1.once('close', () => resolve()));
    const refused = Array.from({ length: 64 }, (_, i) => topics.device(`other-${i}`, 'commands'));
    expect(await subscribe(d1, refused)).toEqual(refused.map(() => 128)); // 64 refusals: still answered
    d1.subscribe(topics.device('other-64', 'commands'), { qos: 1 }); // the 65th closes the connection
    await withDeadline(dropped, 5000, 'dev1 to be disconnected after 65 refused subscriptions');
    await endClient(d1);

    // 128 distinct filters dev2 is granted are answered; 129 in one packet close it (the guard, not the ACL)
    const granted = (n: number) => Array.from({ length: n }, (_, i) => `${topics.device('dev2', 'commands').replace(/commands$/, 'transfers')}/t${i}/+`);
    const raw = await rawSocket(broker.ports.tcp!);
    const gone = closed(raw);
    raw.write(p.connect({ clientId: 'dev2', username: 'dev2', password: TOKEN('dev2') }));
    raw.write(p.subscribe(1, granted(128), { qos: 0 }));
    const suback = await withDeadline(new Promise<Buffer>((resolve) => {
      const got: Buffer[] = [];
      raw.on('data', (d: Buffer) => {
        got.push(d);
        const all = Buffer.concat(got);
        if (all.length >= 4 + 5 + 128) resolve(all);
      });
    }), 5000, 'CONNACK and SUBACK');
    expect([...suback.subarray(4, 9)]).toEqual([0x90, 0x82, 0x01, 0x00, 0x01]); // SUBACK, remaining length 130, packet id 1
    expect([...new Set(suback.subarray(9))]).toEqual([0]); // all 128 granted at QoS 0
    raw.write(p.subscribe(2, granted(129), { qos: 0 }));
    await gone;
    // the operator is untouched
    await publish(operator, topics.device('dev1', 'commands'), 'still up');
  });

  it("refuses an operator's publish outside the fleet tree", async () => {
    const op2 = await connectClient(broker.url, { clientId: 'ops-2', username: 'ops', password: TOKEN('ops') });
    const dropped = new Promise<void>((resolve) => op2.once('close', () => resolve()));
    op2.publish('$SYS/fake/heartbeat', 'x', { qos: 1 });
    await withDeadline(dropped, 5000, 'ops-2 to be disconnected');
    await endClient(op2);
  });
});
