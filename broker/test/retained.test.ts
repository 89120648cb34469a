/**
 * The legacy channel and retained messages, attacked with a device's own credentials:
 * a device may only listen on the legacy topic, and only presence is ever retained,
 * so nothing a device plants is acted on by other subscribers or later ones.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { MqttClient } from 'mqtt';
import { topics } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { Inbox, TOKEN, connectClient, endClient, publish, subscribe, withDeadline } from './helpers.js';

/** Topics that hold a retained message in the broker's store right now. */
async function retainedTopics(broker: RunningBroker): Promise<string[]> {
  const store = (broker.aedes as unknown as { persistence: { createRetainedStream(p: string): AsyncIterable<{ topic: string }> } }).persistence;
  const found: string[] = [];
  for await (const packet of store.createRetainedStream('#')) found.push(packet.topic);
  return found.sort();
}

describe('the legacy topic and retained messages, against a device holding its own credentials', () => {
  let broker: RunningBroker;
  let operator: MqttClient;
  let listener: MqttClient;
  let listenerInbox: Inbox;
  let operatorInbox: Inbox;
  let marker = 0;
  const device = (id: string, extra: Partial<Parameters<typeof connectClient>[1]> = {}) =>
    connectClient(broker.url, { clientId: id, username: id, password: TOKEN(id), ...extra });

  /** A message the operator sends on `hello` after each attack: listeners must see markers only. */
  async function markerRoundTrip(): Promise<void> {
    marker++;
    await publish(operator, 'hello', `done ${marker}`);
    await listenerInbox.waitForCount(marker, 'hello');
  }

  /** Publishes as `client` and waits until the broker drops it; the PUBACK never comes. */
  async function expectDropped(client: MqttClient, topic: string, payload: string, opts: { qos: 0 | 1; retain: boolean }): Promise<void> {
    const dropped = new Promise<void>((resolve) => client.once('close', () => resolve()));
    let acked = false;
    client.publish(topic, payload, opts, (err) => (acked = !err));
    await withDeadline(dropped, 5000, `the broker to drop the client that published to ${topic}`); // [MQTT-3.3.5-2]
    if (opts.qos === 1) expect(acked).toBe(false); // no PUBACK (at QoS 0 MQTT.js calls back once the packet is written)
    await endClient(client);
  }

  beforeAll(async () => {
    broker = await startTestBroker({
      devices: [
        { id: 'evil', token: TOKEN('evil'), groups: ['lab'] },
        { id: 'victim', token: TOKEN('victim'), groups: ['lab'] },
      ],
      operators: [{ id: 'ops', token: TOKEN('ops') }],
      legacyTopic: 'hello',
    });
    operator = await connectClient(broker.url, { clientId: 'ops', username: 'ops', password: TOKEN('ops') });
    operatorInbox = new Inbox(operator);
    expect(await subscribe(operator, ['hello', 'fleet/v1/#'])).toEqual([1, 1]);
    listener = await device('victim');
    listenerInbox = new Inbox(listener);
    expect(await subscribe(listener, 'hello')).toEqual([1]); // devices may still listen
  });

  afterAll(async () => {
    await Promise.all([endClient(operator), endClient(listener)]);
    await broker.close();
  });

  const variants: [string, { qos: 0 | 1; retain: boolean }][] = [
    ['QoS 0', { qos: 0, retain: false }],
    ['QoS 1', { qos: 1, retain: false }],
    ['QoS 0, retained', { qos: 0, retain: true }],
    ['QoS 1, retained', { qos: 1, retain: true }],
  ];
  it.each(variants)('a device publishing `exit` on the legacy topic (%s) is dropped; nobody receives it; nothing is retained', async (_name, opts) => {
    await expectDropped(await device('evil'), 'hello', 'exit', opts);
    await markerRoundTrip();
    expect(listenerInbox.messages.map((m) => m.payload.toString())).toEqual(Array.from({ length: marker }, (_, i) => `done ${i + 1}`));
    expect(operatorInbox.messages.filter((m) => m.topic === 'hello').map((m) => m.payload.toString())).not.toContain('exit');
    expect(await retainedTopics(broker)).toEqual([]);
    // a subscriber that comes later gets no retained message either: it sees the next marker first
    const late = await device('evil');
    const lateInbox = new Inbox(late);
    await subscribe(late, 'hello');
    await publish(operator, 'hello', 'after');
    await lateInbox.waitForCount(1);
    expect(lateInbox.messages.map((m) => m.payload.toString())).toEqual(['after']);
    await endClient(late);
    await listenerInbox.waitForCount(marker + 1);
    listenerInbox.messages.pop(); // 'after'
  });

  it('an operator may send plain-text commands on it, but not retained ones (dropped, not delivered, not stored)', async () => {
    await markerRoundTrip(); // the operator's own plain command arrives
    const op2 = await connectClient(broker.url, { clientId: 'ops-2', username: 'ops', password: TOKEN('ops') });
    await expectDropped(op2, 'hello', 'exit', { qos: 1, retain: true });
    await markerRoundTrip();
    expect(listenerInbox.messages.map((m) => m.payload.toString())).toEqual(Array.from({ length: marker }, (_, i) => `done ${i + 1}`));
    expect(await retainedTopics(broker)).toEqual([]);
  });

  it.each(['events', 'telemetry', 'replies'] as const)("a device retaining a message on its own %s is dropped, and nothing is stored", async (channel) => {
    await expectDropped(await device('evil'), topics.device('evil', channel), '{"planted":true}', { qos: 1, retain: true });
    expect(await retainedTopics(broker)).toEqual([]);
    // the same message, not retained, is its to send
    const d = await device('evil');
    const before = operatorInbox.count(topics.device('evil', channel));
    await publish(d, topics.device('evil', channel), '{"live":true}');
    await operatorInbox.waitForCount(before + 1, topics.device('evil', channel));
    await endClient(d);
  });

  it('presence stays retained: its own status, and its last will there', async () => {
    const d = await device('evil', { will: { topic: topics.device('evil', 'status'), payload: Buffer.from('offline'), qos: 1, retain: true } });
    await d.publishAsync(topics.device('evil', 'status'), 'online', { qos: 1, retain: true });
    expect(await retainedTopics(broker)).toEqual([topics.device('evil', 'status')]);
    await endClient(d);
  });

  it('a retained will anywhere but its status, or any will on the legacy topic, is refused at CONNECT (CONNACK 5)', async () => {
    const will = (topic: string, retain: boolean) => ({ will: { topic, payload: Buffer.from('exit'), qos: 1 as const, retain } });
    await expect(device('evil', will(topics.device('evil', 'events'), true))).rejects.toMatchObject({ code: 5 });
    await expect(device('evil', will('hello', false))).rejects.toMatchObject({ code: 5 });
    await expect(device('evil', will('hello', true))).rejects.toMatchObject({ code: 5 });
    await expect(connectClient(broker.url, { clientId: 'ops-w', username: 'ops', password: TOKEN('ops'), ...will('hello', true) })).rejects.toMatchObject({ code: 5 });
    const ok = await device('evil', will(topics.device('evil', 'events'), false)); // not retained: its own events
    expect(ok.connected).toBe(true);
    await endClient(ok);
    await markerRoundTrip();
  });

  it('transfer chunks are never queued for a device: its transfer filters are granted at QoS 0 only', async () => {
    const d = await device('evil', { clean: false });
    const chunks = topics.transferFilter({ kind: 'group', name: 'lab' });
    expect(await subscribe(d, chunks, 1)).toEqual([128]);
    expect(await subscribe(d, chunks, 0)).toEqual([0]);
    await endClient(d);
  });
});
