import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { topics } from '@edgefleet/protocol';
import { startBrokerProcess, writeCredentials, type BrokerProcess } from '../../test/support/cluster.js';
import { eventually } from '../../test/support/manager-process.js';
import { Inbox, TOKEN, connectClient, endClient, frozenSubscriber, publishWindowed, rawSocket, subscribe, withDeadline } from './helpers.js';
import { connect as connectPacket, subscribe as subscribePacket } from './packets.js';

const GROUP = 'lab';
const CHUNK = 64 * 1024;
const CHUNKS = 3200; // 200 MiB through the group
// above what is in flight when the device freezes (Aedes' 100 messages, 6.4 MiB), so its queue then grows to the limit
const LIMIT = 8 * 1024 * 1024;
const COMMAND_EVERY = 100;

function chunk(index: number): Buffer {
  const b = Buffer.alloc(CHUNK, index % 251);
  b.writeUInt32BE(index, 0);
  return b;
}

describe('a subscriber that stops reading', () => {
  let dir: string;
  let broker: BrokerProcess;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'broker-slow-'));
    const credentials = await writeCredentials(dir, {
      devices: [
        { id: 'normal', token: TOKEN('normal'), groups: [GROUP] },
        { id: 'frozen', token: TOKEN('frozen'), groups: [GROUP] },
        { id: 'witness', token: TOKEN('witness'), groups: ['other'] },
        { id: 'slow', token: TOKEN('slow'), groups: ['slowlab'] },
      ],
      operators: [{ id: 'ops', token: TOKEN('ops') }],
    });
    broker = await startBrokerProcess({ credentials, args: ['--max-queued-bytes', String(LIMIT), '--stall-ms', '1000', '--stall-timeout-ms', '3000'] });
  });
  afterAll(async () => {
    await broker?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('does not slow down the rest of its group or anyone else; what is queued for it stays bounded; it is closed once it takes nothing', async () => {
    const filter = topics.transferFilter({ kind: 'group', name: GROUP });
    const frozen = await frozenSubscriber(broker.port, 'frozen', filter);
    const normal = await connectClient(broker.url, { clientId: 'normal', username: 'normal', password: TOKEN('normal') });
    const witness = await connectClient(broker.url, { clientId: 'witness', username: 'witness', password: TOKEN('witness') });
    const ops = await connectClient(broker.url, { clientId: 'ops', username: 'ops', password: TOKEN('ops') });
    let sampler: NodeJS.Timeout | undefined;
    try {
      expect(await subscribe(normal, filter, 0)).toEqual([0]);
      expect(await subscribe(witness, topics.device('witness', 'commands'), 1)).toEqual([1]);
      const chunks = new Inbox(normal);
      const commands = new Inbox(witness);
      const rssBefore = await broker.rss();
      let rssPeak = rssBefore;
      sampler = setInterval(() => void broker.rss().then((r) => (rssPeak = Math.max(rssPeak, r)), () => undefined), 50);

      const jobs: { topic: string; payload: Buffer }[] = [];
      for (let i = 0; i < CHUNKS; i++) {
        jobs.push({ topic: topics.transferChunk({ kind: 'group', name: GROUP }, 'tslow', i), payload: chunk(i) });
        if (i % COMMAND_EVERY === COMMAND_EVERY - 1) jobs.push({ topic: topics.device('witness', 'commands'), payload: Buffer.from(`cmd-${i}`) });
      }
      // far more than the kernel's socket buffers and the broker's limit hold for the frozen device
      // Aedes alone would hold the whole group (and the publisher) for its drainTimeout, 60 s
      await withDeadline(publishWindowed(ops, jobs, 16), 30_000, 'every publish to be acknowledged');
      await chunks.waitForCount(CHUNKS, undefined, 30_000);
      await commands.waitForCount(CHUNKS / COMMAND_EVERY, undefined, 10_000);
      clearInterval(sampler);

      // the normal member got every chunk, intact and in order, although it shares the group with the frozen one
      expect(chunks.messages.map((m) => m.payload.readUInt32BE(0))).toEqual(Array.from({ length: CHUNKS }, (_, i) => i));
      expect(chunks.messages.every((m, i) => m.payload.equals(chunk(i)))).toBe(true);
      expect(commands.messages.map((m) => m.payload.toString())).toEqual(jobs.filter((j) => j.topic.endsWith('/commands')).map((j) => j.payload.toString()));
      // the broker held about its limit for the frozen device (and its own garbage), not the 200 MiB that went through
      expect(rssPeak - rssBefore).toBeLessThan(100 * 1024 * 1024);
      const stalled = broker.logs().filter((l) => l.msg === 'client takes nothing: no longer waiting for it; its QoS 0 messages are dropped beyond the limit');
      expect(stalled).toEqual([expect.objectContaining({ clientId: 'frozen', limit: LIMIT })]);

      // over the limit and taking nothing: the broker closes it (and nobody else)
      const closing = await eventually('the broker to close the frozen device', async () => {
        const lines = broker.logs().filter((l) => l.msg === 'closing a connection that is too far behind');
        return lines.length > 0 ? lines : undefined;
      });
      frozen.socket.resume(); // it reads what the kernel holds for it, then the end of the connection
      await withDeadline(frozen.closed, 10_000, 'the frozen device to see its connection end');
      expect(closing).toEqual([expect.objectContaining({ clientId: 'frozen', reason: expect.stringContaining('over the limit') })]);
      expect(closing[0]!.droppedQos0 as number).toBeGreaterThan(0);
      expect(normal.connected && witness.connected && ops.connected).toBe(true);
    } finally {
      clearInterval(sampler);
      frozen.socket.destroy();
      await Promise.all([endClient(normal), endClient(witness), endClient(ops)]);
    }
  }, 120_000);

  it('still paces a group by a member that reads slowly but steadily: it gets everything and is never dropped', async () => {
    const filter = topics.transferFilter({ kind: 'group', name: 'slowlab' });
    const slow = await slowSubscriber(broker.port, 'slow', filter, 2 * 1024 * 1024);
    const ops = await connectClient(broker.url, { clientId: 'ops', username: 'ops', password: TOKEN('ops') });
    try {
      const count = 256; // 16 MiB at 2 MB/s: several seconds, with the socket full all along
      const jobs = Array.from({ length: count }, (_, i) => ({ topic: topics.transferChunk({ kind: 'group', name: 'slowlab' }, 'tpaced', i), payload: chunk(i) }));
      await withDeadline(publishWindowed(ops, jobs, 16), 60_000, 'every publish to be acknowledged');
      await withDeadline(slow.received(count), 60_000, `${count} chunks at the slow reader`);
      expect(slow.indexes()).toEqual(Array.from({ length: count }, (_, i) => i));
      expect(broker.logs().filter((l) => l.clientId === 'slow' && (l.level as number) >= 40)).toEqual([]);
    } finally {
      slow.socket.destroy();
      await endClient(ops);
    }
  }, 90_000);
});

/** A device that reads its socket at about `bytesPerSecond` (a slow link), parsing what arrives. */
async function slowSubscriber(port: number, id: string, filter: string, bytesPerSecond: number) {
  const { default: mqttPacket } = await import('mqtt-packet');
  const socket = await rawSocket(port);
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const indexes: number[] = [];
  const waiters: (() => void)[] = [];
  let subacked!: () => void;
  const ready = new Promise<void>((resolve) => (subacked = resolve));
  parser.on('packet', (p) => {
    if (p.cmd === 'suback') subacked();
    if (p.cmd === 'publish') {
      indexes.push((p.payload as Buffer).readUInt32BE(0));
      for (const w of waiters.splice(0)) w();
    }
  });
  const start = Date.now();
  let read = 0;
  socket.on('data', (d: Buffer) => {
    read += d.length;
    parser.parse(d);
    const ahead = read / bytesPerSecond - (Date.now() - start) / 1000;
    if (ahead > 0) {
      socket.pause();
      setTimeout(() => socket.resume(), ahead * 1000);
    }
  });
  socket.write(Buffer.concat([connectPacket({ clientId: id, username: id, password: TOKEN(id) }), subscribePacket(9, [filter], { qos: 0 })]));
  await withDeadline(ready, 5000, `${id}'s SUBACK`);
  return {
    socket,
    indexes: () => indexes,
    received: (n: number) =>
      new Promise<void>((resolve) => {
        const check = () => (indexes.length >= n ? resolve() : waiters.push(check));
        check();
      }),
  };
}
