import { describe, expect, it } from '@jest/globals';
import { PacketGuard, DEFAULT_LIMITS, type GuardLimits } from '@edgefleet/broker';
import * as p from './packets.js';

const limits: GuardLimits = { ...DEFAULT_LIMITS, maxPacketSize: 64 * 1024 };

/** Feeds `bytes` cut at the given offsets; returns the violation reason or undefined. */
function feedSplit(bytes: Buffer, cuts: number[]): string | undefined {
  const g = new PacketGuard(limits);
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    const v = g.feed(bytes.subarray(start, cut));
    if (v) return v.reason;
    start = cut;
  }
  return undefined;
}

/** Every offset near packet starts and ends, and a sample in between (large payloads make every offset slow). */
function offsets(length: number): number[] {
  const out: number[] = [];
  for (let i = 0; i <= length; i++) if (i < 800 || length - i < 800 || i % 61 === 0) out.push(i);
  return out;
}

const session = Buffer.concat([
  p.connect({ clientId: 'dev1', username: 'dev1', password: 'secret', will: { topic: 'fleet/v1/devices/dev1/status', payload: 'offline' } }),
  p.subscribe(7, ['fleet/v1/devices/dev1/commands', 'fleet/v1/groups/lab/transfers/+/+', 'a/#']),
  p.publish('fleet/v1/devices/dev1/telemetry', Buffer.alloc(300, 1), { qos: 1, id: 9 }),
  p.publish('fleet/v1/devices/dev1/status', 'x'),
  p.publish('fleet/v1/devices/dëv1/événements', Buffer.alloc(20000, 2), { qos: 2, id: 10 }),
  p.pubrel(10),
  p.puback(3),
  p.unsubscribe(8, ['a/#']),
  p.pingreq(),
  p.disconnect(),
]);

describe('PacketGuard framing', () => {
  it('accepts a valid session cut anywhere', () => {
    for (const cut of offsets(session.length)) {
      expect([cut, feedSplit(session, [cut])]).toEqual([cut, undefined]);
    }
  });

  it('accepts a valid session fed one byte at a time and in random pieces', () => {
    expect(feedSplit(session, Array.from({ length: session.length - 1 }, (_, i) => i + 1))).toBeUndefined();
    let seed = 42;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 200; round++) {
      const cuts = Array.from({ length: 1 + Math.floor(rand() * 20) }, () => Math.floor(rand() * session.length)).sort((a, b) => a - b);
      expect(feedSplit(session, cuts)).toBeUndefined();
    }
  });

  const connected = p.connect({ clientId: 'dev1' });
  const cases: [string, Buffer, RegExp][] = [
    ['QoS 1 publish with packet id 0', p.publish('a/b', 'x', { qos: 1, id: 0 }), /packet id 0/],
    ['QoS 3 publish', p.publish('a/b', 'x', { flags: 0b0110 }), /QoS 3/],
    ['topic with U+0000', p.publish('a/\u0000/b', 'x'), /U\+0000/],
    ['invalid UTF-8 topic', p.publish(Buffer.from([0x61, 0x2f, 0xc3, 0x28]), 'x'), /UTF-8/],
    ['UTF-16 surrogate encoded in a topic', p.publish(Buffer.from([0x61, 0xed, 0xa0, 0x80]), 'x'), /UTF-8/],
    ['101-level topic', p.publish(Array.from({ length: 101 }, () => 'l').join('/'), 'x'), /more than 32 levels/],
    ['topic over 1024 bytes', p.publish('t'.repeat(1025), 'x'), /over the 1024-byte limit/],
    ['wildcard in a topic name', p.publish('a/+', 'x'), /wildcard/],
    ['empty topic', p.publish('', 'x'), /empty topic/],
    ['packet over the size limit', p.publish('a', Buffer.alloc(64 * 1024)), /over the 65536-byte limit/],
    ['remaining length of five bytes', Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), /remaining length/],
    ['topic length past the end of the packet', Buffer.from([0x30, 0x03, 0x00, 0x05, 0x61]), /past the end/],
    ['SUBSCRIBE with flags 0000', p.subscribe(1, ['a'], { flags: 0 }), /reserved fixed-header flags/],
    ['PUBREL with flags 0000', p.pubrel(1, 0), /reserved fixed-header flags/],
    ['PINGREQ with a flag bit set', Buffer.from([0xc1, 0x00]), /reserved fixed-header flags/],
    ['PUBACK of length 3', Buffer.from([0x40, 0x03, 0, 1, 0]), /must be 2/],
    ['CONNACK sent by a client', Buffer.from([0x20, 0x02, 0, 0]), /not one a client may send/],
    ['reserved packet type 15', Buffer.from([0xf0, 0x00]), /not one a client may send/],
    ['second CONNECT', p.connect({ clientId: 'again' }), /second CONNECT/],
    ['SUBSCRIBE with packet id 0', p.subscribe(0, ['a']), /packet id 0/],
    ['SUBSCRIBE with invalid UTF-8 filter', p.subscribe(1, [Buffer.from([0xff])]), /UTF-8/],
    ['SUBSCRIBE with # not last', p.subscribe(1, ['a/#/b']), /last level/],
    ['SUBSCRIBE with a+ level', p.subscribe(1, ['a+/b']), /whole topic level/],
    ['SUBSCRIBE with QoS 3', p.subscribe(1, ['a'], { qos: 3 }), /requested QoS/],
    ['SUBSCRIBE without filters', p.packet(0x82, Buffer.from([0, 1])), /no topic filters/],
  ];

  it.each(cases)('refuses %s wherever it is cut', (_name, bad, reason) => {
    const bytes = Buffer.concat([connected, p.publish('ok/topic', 'fine'), bad]);
    for (const cut of offsets(bytes.length)) {
      expect(feedSplit(bytes, [cut])).toMatch(reason);
    }
  });

  const connectCases: [string, Buffer, RegExp][] = [
    ['client id with U+0000', p.connect({ clientId: 'dev\u00001' }), /client id contains U\+0000/],
    ['client id not valid UTF-8', p.connect({ clientId: Buffer.from([0x64, 0xc0, 0xaf]) }), /client id is not valid UTF-8/],
    ['user name not valid UTF-8', p.connect({ clientId: 'd', username: Buffer.from([0xfe]) }), /user name is not valid UTF-8/],
    ['will topic with a wildcard', p.connect({ clientId: 'd', will: { topic: 'a/#', payload: 'x' } }), /will topic/],
    ['reserved CONNECT flag', p.connect({ clientId: 'd', flags: 0x03 }), /reserved CONNECT flag/],
    ['password without user name', p.connect({ clientId: 'd', flags: 0x42 }), /password without user name/],
    ['a PUBLISH before CONNECT', p.publish('a', 'x'), /first packet must be CONNECT/],
    ['CONNECT over the control-packet limit', p.connect({ clientId: 'd', will: { topic: 'a', payload: 'x'.repeat(40000) }, username: 'u', password: 'p'.repeat(40000) }), /over the 65536-byte limit/],
  ];
  it.each(connectCases)('refuses a CONNECT with %s', (_name, bad, reason) => {
    expect(feedSplit(bad, [])).toMatch(reason);
    expect(feedSplit(bad, [3])).toMatch(reason);
  });

  it('decides on an oversized packet from its first bytes, before the body exists', () => {
    const g = new PacketGuard(limits);
    expect(g.feed(p.connect({ clientId: 'd' }))).toBeUndefined();
    // fixed header announcing 200 MB: refused with only 5 bytes seen
    const v = g.feed(Buffer.from([0x30, ...p.varint(200 * 1024 * 1024)]));
    expect(v?.reason).toMatch(/over the 65536-byte limit/);
  });
});
