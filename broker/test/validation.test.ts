import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { MqttClient } from 'mqtt';
import { pino } from 'pino';
import { topics } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { Inbox, TOKEN, closed, connectClient, endClient, publish, rawSocket, subscribe, withDeadline } from './helpers.js';
import * as p from './packets.js';

/**
 * Each attack comes from its own raw socket while a witness device publishes a
 * numbered QoS 1 message to an operator after every attack: at the end the operator
 * must hold every number, in order, and neither witness may have been disconnected.
 */
describe('validation in front of Aedes, through real sockets', () => {
  let broker: RunningBroker;
  let witnessDevice: MqttClient;
  let witnessOperator: MqttClient;
  let inbox: Inbox;
  let sent = 0;
  const logs: { msg: string; reason?: string }[] = [];
  const witnessClosed: string[] = [];
  const telemetry = topics.device('w1', 'telemetry');

  async function witnessRoundTrip(): Promise<void> {
    sent++;
    await publish(witnessDevice, telemetry, String(sent));
    await inbox.waitForCount(sent, telemetry);
  }

  async function authenticatedSocket(id = 'attacker'): Promise<Socket> {
    const s = await rawSocket(broker.ports.tcp!);
    s.write(p.connect({ clientId: id, username: id, password: TOKEN(id) }));
    const connack = await withDeadline(
      new Promise<Buffer>((resolve) => s.once('data', (d: Buffer) => resolve(d))),
      5000,
      'CONNACK',
    );
    expect([...connack.subarray(0, 4)]).toEqual([0x20, 0x02, 0x00, 0x00]);
    return s;
  }

  beforeAll(async () => {
    const logger = pino({ level: 'warn' }, { write: (line: string) => logs.push(JSON.parse(line)) });
    broker = await startTestBroker({
      logger,
      devices: [
        { id: 'w1', token: TOKEN('w1') },
        { id: 'attacker', token: TOKEN('attacker') },
      ],
      operators: [{ id: 'ops', token: TOKEN('ops') }],
    });
    witnessOperator = await connectClient(broker.url, { clientId: 'ops', username: 'ops', password: TOKEN('ops') });
    witnessDevice = await connectClient(broker.url, { clientId: 'w1', username: 'w1', password: TOKEN('w1') });
    witnessOperator.on('close', () => witnessClosed.push('operator'));
    witnessDevice.on('close', () => witnessClosed.push('device'));
    inbox = new Inbox(witnessOperator);
    expect(await subscribe(witnessOperator, topics.allDevices('telemetry'))).toEqual([1]);
    await witnessRoundTrip();
  });

  afterAll(async () => {
    await Promise.all([endClient(witnessDevice), endClient(witnessOperator)]);
    await broker.close();
  });

  it('drops an unauthenticated 200 MB publish from its header, with memory flat', async () => {
    const before = process.memoryUsage();
    const s = await rawSocket(broker.ports.tcp!);
    const done = closed(s, 10000);
    // CONNECT without credentials, then at once (no CONNACK yet) a PUBLISH announcing 200 MB
    const total = 200 * 1024 * 1024;
    s.write(p.connect({ clientId: 'intruder' }));
    s.write(Buffer.concat([Buffer.from([0x30]), p.varint(total), p.str('fleet/v1/devices/w1/telemetry')]));
    const block = Buffer.alloc(1024 * 1024, 0x41);
    let written = 0;
    let gone = false;
    s.once('close', () => (gone = true));
    while (!gone && written < total) {
      written += block.length;
      if (!s.write(block)) {
        await new Promise<void>((resolve) => {
          s.once('drain', resolve);
          s.once('close', resolve);
        });
      }
    }
    await done;
    const after = process.memoryUsage();
    // the broker closed the socket long before 200 MB got through (kernel buffers hold a few MB)
    expect(written).toBeLessThan(64 * 1024 * 1024);
    expect(after.rss - before.rss).toBeLessThan(50 * 1024 * 1024);
    expect(after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers)).toBeLessThan(50 * 1024 * 1024);
    expect(logs.some((l) => /over the 4194304-byte limit/.test(l.reason ?? ''))).toBe(true);
    await witnessRoundTrip();
  });

  it('passes a packet of exactly the limit intact and refuses one byte more', async () => {
    const events = topics.device('w1', 'events');
    expect(await subscribe(witnessOperator, events)).toEqual([1]);
    // fixed header 5 bytes + topic (2 + length) + packet id 2 + payload = 4 MiB exactly
    const payload = randomBytes(4 * 1024 * 1024 - 5 - (2 + Buffer.byteLength(events)) - 2);
    await publish(witnessDevice, events, payload);
    await inbox.waitForCount(1, events, 10000);
    const got = inbox.messages.find((m) => m.topic === events)!.payload;
    expect(createHash('sha256').update(got).digest('hex')).toBe(createHash('sha256').update(payload).digest('hex'));

    const s = await authenticatedSocket();
    const done = closed(s);
    const attackerEvents = topics.device('attacker', 'events');
    const oneTooMany = 4 * 1024 * 1024 - 5 - (2 + Buffer.byteLength(attackerEvents)) - 2 + 1;
    s.write(p.publish(attackerEvents, Buffer.alloc(oneTooMany), { qos: 1, id: 7 }));
    await done;
    expect(logs.at(-1)?.reason).toBe('packet of 4194305 bytes is over the 4194304-byte limit');
    await witnessRoundTrip();
  });

  const attacks: [string, () => Buffer, RegExp][] = [
    ['a 101-level topic', () => p.publish(Array.from({ length: 101 }, (_, i) => `l${i}`).join('/'), 'x', { qos: 1, id: 5 }), /levels/],
    ['a topic with U+0000', () => p.publish('fleet/v1/devices/attacker/\u0000status', 'x', { qos: 1, id: 5 }), /U\+0000/],
    ['a topic that is not valid UTF-8', () => p.publish(Buffer.from('fleet/v1/devices/attacker/\xc3\x28', 'latin1'), 'x'), /UTF-8/],
    ['a QoS 1 publish with packet id 0', () => p.publish(topics.device('attacker', 'telemetry'), 'x', { qos: 1, id: 0 }), /packet id 0/],
    ['a QoS 3 publish', () => p.publish(topics.device('attacker', 'telemetry'), 'x', { flags: 0b0110 }), /QoS 3/],
    ['a malformed remaining length', () => Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x7f]), /remaining length/],
    ['a SUBSCRIBE with reserved flags 0000', () => p.subscribe(3, [topics.device('attacker', 'commands')], { flags: 0 }), /reserved fixed-header flags/],
    ['a PUBREL with reserved flags 0000', () => p.pubrel(3, 0), /reserved fixed-header flags/],
    ['a second CONNECT', () => p.connect({ clientId: 'attacker' }), /second CONNECT/],
    ['a topic over 1024 bytes', () => p.publish(`fleet/${'x'.repeat(2000)}`, 'x'), /byte limit/],
  ];

  it.each(attacks)('closes the connection on %s; the broker stays up and nothing is lost', async (_name, build, reason) => {
    const s = await authenticatedSocket();
    const done = closed(s);
    s.write(build());
    const reply = await done;
    expect(reply.length).toBe(0); // nothing is sent back, the connection is just closed
    expect(logs.at(-1)?.msg).toBe('closing connection: invalid packet');
    expect(logs.at(-1)?.reason).toMatch(reason);
    await witnessRoundTrip();
  });

  it('refuses a CONNECT whose client id contains U+0000 or is not UTF-8, before authentication', async () => {
    for (const clientId of [Buffer.from('attacker\u0000'), Buffer.from([0x61, 0xc0, 0xaf])]) {
      const s = await rawSocket(broker.ports.tcp!);
      const done = closed(s);
      s.write(p.connect({ clientId, username: 'attacker', password: TOKEN('attacker') }));
      expect((await done).length).toBe(0); // no CONNACK at all
      expect(logs.at(-1)?.reason).toMatch(/client id/);
    }
    await witnessRoundTrip();
  });

  it('after all of it, the operator got every witness message exactly once, in order', () => {
    const got = inbox.messages.filter((m) => m.topic === telemetry).map((m) => Number(m.payload.toString()));
    expect(got).toEqual(Array.from({ length: sent }, (_, i) => i + 1));
    expect(witnessClosed).toEqual([]);
    expect(sent).toBeGreaterThan(10);
  });
});
