/**
 * The broker's message queue under a subscriber that stops reading: Aedes holds at most 100
 * messages in flight (mqemitter) and queues the rest. When the frozen subscriber goes away,
 * thousands of queued messages that nobody else waits for complete at once; before the fix
 * that drain was one recursion per message and crashed the broker with "Maximum call stack
 * size exceeded" (how the controller died on SIGTERM with thousands of devices connected).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import mqttPacket from 'mqtt-packet';
import type { MqttClient } from 'mqtt';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { Inbox, TOKEN, connectClient, endClient, publish, rawSocket, subscribe, withDeadline } from './helpers.js';

type Queue = { length: number; current: number };

describe('a long message queue behind a frozen subscriber', () => {
  let broker: RunningBroker;
  let publisher: MqttClient;
  beforeAll(async () => {
    broker = await startTestBroker({ operators: [{ id: 'ops', token: TOKEN('ops') }] });
    publisher = await connectClient(broker.url, { clientId: 'ops-pub', username: 'ops', password: TOKEN('ops') });
  });
  afterAll(async () => {
    await endClient(publisher);
    await broker.close();
  });

  it('drains without overflowing the stack when the frozen subscriber disconnects, and the broker keeps serving', async () => {
    const queue = (broker.aedes as unknown as { mq: Queue }).mq;
    const clients = (broker.aedes as unknown as { clients: Record<string, unknown> }).clients;
    // a subscriber that connects, subscribes, and then never reads again
    const frozen = await rawSocket(broker.ports.tcp!);
    frozen.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'ops-frozen', keepalive: 0, username: 'ops', password: Buffer.from(TOKEN('ops')) }));
    frozen.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'fleet/v1/devices/frozen/commands', qos: 0 }] }));
    await withDeadline(new Promise((resolve) => frozen.once('data', resolve)), 5000, 'CONNACK');
    await withDeadline((async () => { while (!clients['ops-frozen']) await new Promise((r) => setTimeout(r, 10)); })(), 5000, 'the frozen client to register');
    await new Promise((r) => setTimeout(r, 100)); // its SUBACK
    frozen.pause();

    // fill its socket until every slot waits for it, then queue thousands that nobody subscribes to
    const big = Buffer.alloc(64 * 1024, 1);
    for (let i = 0; i < 1000; i++) publisher.publish('fleet/v1/devices/frozen/commands', big, { qos: 0 });
    // each connection has ~2,000 of its packets in the broker at most: several publishers make a queue long enough
    const more = await Promise.all([1, 2, 3, 4].map((k) => connectClient(broker.url, { clientId: `ops-pub${k}`, username: 'ops', password: TOKEN('ops') })));
    for (const p of [publisher, ...more]) for (let i = 0; i < 5000; i++) p.publish('fleet/v1/devices/nobody/telemetry', 'x', { qos: 0 });
    await withDeadline((async () => { while (queue.length < 3000) await new Promise((r) => setTimeout(r, 20)); })(), 20_000, 'a queue of 3,000 messages behind the frozen subscriber');
    expect(queue.current).toBe(100);
    frozen.destroy();
    await withDeadline((async () => { while (queue.length > 0) await new Promise((r) => setTimeout(r, 20)); })(), 20_000, 'the queue to drain');

    // still a broker: a subscriber gets a message
    const listener = await connectClient(broker.url, { clientId: 'ops-listener', username: 'ops', password: TOKEN('ops') });
    const inbox = new Inbox(listener);
    await subscribe(listener, 'fleet/v1/devices/after/telemetry');
    await publish(publisher, 'fleet/v1/devices/after/telemetry', 'still here');
    await inbox.waitForCount(1, 'fleet/v1/devices/after/telemetry');
    await endClient(listener);
    await Promise.all(more.map((c) => endClient(c)));
  }, 60_000);
});
