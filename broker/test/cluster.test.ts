import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IClientOptions, MqttClient } from 'mqtt';
import { topics } from '@edgefleet/protocol';
import { startBrokerProcess, startRedis, writeCredentials, type BrokerProcess, type RedisProcess } from '../../test/support/cluster.js';
import { eventually } from '../../test/support/manager-process.js';
import { Inbox, TOKEN, connectClient, endClient, frozenSubscriber, publishWindowed, subscribe, withDeadline } from './helpers.js';

const DEVICES = ['dev1', 'dev2', 'dev3', 'dev4'];
const HEARTBEAT_MS = 300;

const as = (id: string, extra: IClientOptions = {}): IClientOptions => ({ clientId: id, username: id, password: TOKEN(id), ...extra });
const presence = (id: string, state: string) => ({ topic: topics.device(id, 'status'), payload: state, qos: 1 as const, retain: true });

/** Publishes on `via` until `inbox` has a message (a subscription made on one instance reaches the others through Redis). */
async function untilRouted(via: MqttClient, topic: string, inbox: Inbox): Promise<void> {
  await withDeadline(
    (async () => {
      for (let i = 0; inbox.count(topic) === 0; i++) {
        await via.publishAsync(topic, `probe-${i}`, { qos: 1 });
        await inbox.waitForCount(1, topic, 200).catch(() => undefined);
      }
    })(),
    10_000,
    `a message routed to ${topic}`,
  );
}

describe('broker instances clustered through Redis (real processes)', () => {
  let dir: string;
  let redis: RedisProcess;
  let credentials: string;
  const running: BrokerProcess[] = [];
  const clients: MqttClient[] = [];
  const instance = async (extra: string[] = []) => {
    const b = await startBrokerProcess({ credentials, args: ['--redis', redis.url, '--heartbeat-ms', String(HEARTBEAT_MS), ...extra] });
    running.push(b);
    return b;
  };
  const client = async (url: string, opts: IClientOptions) => {
    const c = await connectClient(url, opts);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'broker-cluster-'));
    redis = await startRedis();
    credentials = await writeCredentials(dir, {
      devices: DEVICES.map((id) => ({ id, token: TOKEN(id), groups: ['lab'] })),
      operators: [{ id: 'ops', token: TOKEN('ops') }],
    });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => endClient(c)));
    await Promise.all(running.splice(0).map((b) => b.kill('SIGKILL')));
    await redis.flush();
  });
  afterAll(async () => {
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('acts as one broker: a device on A gets the chunks and commands published through B, and presence retained through either is seen from both', async () => {
    const [a, b] = [await instance(), await instance()];
    const device = await client(a.url, as('dev1'));
    const inbox = new Inbox(device);
    expect(await subscribe(device, topics.transferFilter({ kind: 'group', name: 'lab' }), 0)).toEqual([0]);
    expect(await subscribe(device, topics.device('dev1', 'commands'), 1)).toEqual([1]);
    const ops = await client(b.url, as('ops'));
    const chunkTopic = (i: number) => topics.transferChunk({ kind: 'group', name: 'lab' }, 'tcluster', i);
    await untilRouted(ops, topics.device('dev1', 'commands'), inbox);
    const chunks = Array.from({ length: 8 }, (_, i) => Buffer.alloc(256 * 1024, i + 1));
    for (const [i, c] of chunks.entries()) await ops.publishAsync(chunkTopic(i), c, { qos: 1 });
    const received = await eventually('8 chunks on A', async () => {
      const got = inbox.messages.filter((m) => m.topic.includes('/transfers/'));
      return got.length >= chunks.length ? got : undefined;
    });
    expect(received.map((m) => m.topic)).toEqual(chunks.map((_, i) => chunkTopic(i)));
    expect(received.every((m, i) => m.payload.equals(chunks[i]!))).toBe(true);

    // presence retained through A (the device's own status) and through B (another device's will) is seen on both
    await device.publishAsync(topics.device('dev1', 'status'), 'online', { qos: 1, retain: true });
    const dev2 = await client(b.url, as('dev2', { will: presence('dev2', 'offline') }));
    await dev2.publishAsync(topics.device('dev2', 'status'), 'online', { qos: 1, retain: true });
    dev2.stream.destroy(); // no DISCONNECT: B publishes its will
    for (const [name, url] of [['A', a.url], ['B', b.url]] as const) {
      const watcher = await client(url, as('ops', { clientId: `ops-watch-${name}` }));
      const seen = new Inbox(watcher);
      await subscribe(watcher, topics.allDevices('status'));
      await eventually(`both presences retained, seen from ${name}`, async () =>
        seen.messages.some((m) => m.topic === topics.device('dev1', 'status') && m.payload.toString() === 'online') &&
        seen.messages.some((m) => m.topic === topics.device('dev2', 'status') && m.payload.toString() === 'offline')
          ? true
          : undefined,
      );
    }
  });

  it('keeps a persistent QoS 1 session across instances: subscribed on A, offline, published through B, delivered on reconnecting to B, once', async () => {
    const [a, b] = [await instance(), await instance()];
    const first = await connectClient(a.url, as('dev3', { clean: false }));
    // two filters in one SUBSCRIBE (as the agent sends them): aedes-persistence-redis alone never answers that
    expect(await withDeadline(subscribe(first, [topics.device('dev3', 'commands'), topics.group('lab', 'commands')], 1), 5000, 'the SUBACK')).toEqual([1, 1]);
    await endClient(first);
    const ops = await client(b.url, as('ops'));
    const sent = ['c1', 'c2', 'c3', 'c4', 'c5'];
    for (const [i, c] of sent.entries()) await ops.publishAsync(i % 2 ? topics.group('lab', 'commands') : topics.device('dev3', 'commands'), c, { qos: 1 });

    const second = await client(b.url, as('dev3', { clean: false }));
    const inbox = new Inbox(second);
    await inbox.waitForCount(sent.length, undefined, 10_000);
    expect(inbox.messages.map((m) => m.payload.toString())).toEqual(sent);
    // acknowledged on B: nothing is delivered again on A. (A PUBACK B has not processed yet
    // when the session moves may be delivered again, as QoS 1 allows: wait until B has. The list
    // `outgoing:<client id>` is aedes-persistence-redis' own key for a session's messages in flight.)
    await endClient(second);
    await eventually('B processed the PUBACKs (the session holds no message in flight)', async () => ((await redis.cli('llen', 'outgoing:dev3')) === '0' ? true : undefined));
    const third = await client(a.url, as('dev3', { clean: false }));
    const again = new Inbox(third);
    await ops.publishAsync(topics.device('dev3', 'commands'), 'c6', { qos: 1 });
    await again.waitForCount(1, undefined, 10_000);
    expect(again.messages.map((m) => m.payload.toString())).toEqual(['c6']);
  });

  it('after an instance is killed (-9), publishes the will of a device that stays away and drops the will of one that reconnected elsewhere', async () => {
    const [a, b] = [await instance(), await instance()];
    const watcher = await client(b.url, as('ops', { clientId: 'ops-watch' }));
    const seen = new Inbox(watcher);
    await subscribe(watcher, topics.allDevices('status'));
    for (const id of ['dev1', 'dev2']) {
      const d = await connectClient(a.url, as(id, { will: presence(id, 'offline'), reconnectPeriod: 0 }));
      d.on('error', () => undefined); // the instance is killed under it
      // many messages through A, so that A's message counter is far ahead of B's: a will republished
      // under A's id with B's counter would be dropped by the watcher as a duplicate
      for (let i = 0; i < 50; i++) await d.publishAsync(topics.device(id, 'status'), `starting-${i}`, { qos: 1, retain: true });
      await d.publishAsync(topics.device(id, 'status'), 'online', { qos: 1, retain: true });
    }
    const online = (id: string) => seen.messages.some((m) => m.topic === topics.device(id, 'status') && m.payload.toString() === 'online');
    await eventually('both online, seen from B', async () => (online('dev1') && online('dev2') ? true : undefined));
    await a.kill('SIGKILL');
    // dev2 fails over to B; dev1 stays away
    const back = await client(b.url, as('dev2', { will: presence('dev2', 'offline') }));
    await back.publishAsync(topics.device('dev2', 'status'), 'online', { qos: 1, retain: true });
    // B finds A dead after 3 heartbeats and sweeps A's wills every 4
    await eventually('dev1 offline (its will, published by B)', async () => (seen.messages.some((m) => m.topic === topics.device('dev1', 'status') && m.payload.toString() === 'offline') ? true : undefined), 20_000);
    await eventually('B to drop the will of dev2', async () => (b.logs().some((l) => l.msg === 'dropped the will of a dead instance: its client connected again elsewhere' && l.clientId === 'dev2') ? true : undefined), 20_000);
    const dev2States = seen.messages.filter((m) => m.topic === topics.device('dev2', 'status')).map((m) => m.payload.toString());
    expect(dev2States.at(-1)).toBe('online');
    expect(dev2States).not.toContain('offline');
    // and a new subscriber on B sees the right retained presence for both
    const late = await client(b.url, as('ops', { clientId: 'ops-late' }));
    const retained = new Inbox(late);
    await subscribe(late, topics.allDevices('status'));
    await retained.waitForCount(2);
    expect(Object.fromEntries(retained.messages.map((m) => [m.topic, m.payload.toString()]))).toMatchObject({
      [topics.device('dev1', 'status')]: 'offline',
      [topics.device('dev2', 'status')]: 'online',
    });
  }, 60_000);

  it('a device that moves from A to B while both run: A, taken over, does not publish its will (it would land after the "online" on B)', async () => {
    const [a, b] = [await instance(), await instance()];
    const watcher = await client(b.url, as('ops', { clientId: 'ops-watch' }));
    const seen = new Inbox(watcher);
    await subscribe(watcher, topics.device('dev1', 'status'));
    const onA = await connectClient(a.url, as('dev1', { will: presence('dev1', 'offline'), reconnectPeriod: 0 }));
    onA.on('error', () => undefined);
    await onA.publishAsync(topics.device('dev1', 'status'), 'online-a', { qos: 1, retain: true });
    await seen.waitForCount(1);
    const onB = await client(b.url, as('dev1', { will: presence('dev1', 'offline') }));
    await onB.publishAsync(topics.device('dev1', 'status'), 'online-b', { qos: 1, retain: true });
    await eventually('A to close the connection taken over', async () => (a.logs().some((l) => l.msg === 'will not published: its client connected again on another instance' && l.clientId === 'dev1') ? true : undefined));
    await onB.publishAsync(topics.device('dev1', 'status'), 'still-b', { qos: 1, retain: true });
    await eventually('the marker', async () => (seen.messages.some((m) => m.payload.toString() === 'still-b') ? true : undefined));
    expect(seen.messages.map((m) => m.payload.toString())).not.toContain('offline');
    onA.end(true);
  });

  it('loses no acknowledged QoS 1 message when the instance that acknowledged it is killed (-9) mid-stream', async () => {
    const [a, b] = [await instance(), await instance()];
    const telemetry = topics.device('dev4', 'telemetry');
    // a persistent subscriber (the controller's role) on B
    const collect = new Set<number>();
    const subscriber = await connectClient(b.url, as('ops', { clientId: 'ops-collect', clean: false }));
    expect(await subscribe(subscriber, telemetry, 1)).toEqual([1]);
    const onMessage = (_t: string, p: Buffer) => collect.add(Number(p.toString()));
    subscriber.on('message', onMessage);

    const acked = new Set<number>();
    let next = 0;
    /** Streams numbered QoS 1 messages (64 in flight) until the connection dies; resolves then. */
    const stream = (device: MqttClient) =>
      new Promise<void>((resolve) => {
        let inFlight = 0;
        let dead = false;
        const pump = () => {
          while (!dead && inFlight < 64) {
            const n = next++;
            inFlight++;
            device.publish(telemetry, String(n), { qos: 1 }, (err) => {
              inFlight--;
              if (err) dead = true; // the connection is gone: MQTT.js fails what is left at once
              else acked.add(n);
              setImmediate(pump);
            });
          }
        };
        device.once('close', () => ((dead = true), resolve()));
        device.on('error', () => undefined);
        pump();
      });
    const onA = await connectClient(a.url, as('dev4', { reconnectPeriod: 0 }));
    const streaming = stream(onA);
    await eventually('a few thousand acknowledged', async () => (acked.size > 2000 ? true : undefined), 20_000, 20);
    await a.kill('SIGKILL');
    await withDeadline(streaming, 10_000, 'the device to see A die');
    const ackedBeforeKill = acked.size;
    const onB = await client(b.url, as('dev4'));
    for (let i = 0; i < 100; i++) await onB.publishAsync(telemetry, String(next++), { qos: 1 }).then(() => acked.add(next - 1));
    // what an instance stored but had not forwarded yet waits in the session: collect it by reconnecting
    await eventually('the live messages to arrive', async () => ([...acked].filter((n) => !collect.has(n)).length < ackedBeforeKill ? true : undefined));
    await endClient(subscriber);
    const again = await client(b.url, as('ops', { clientId: 'ops-collect', clean: false }));
    again.on('message', onMessage);
    const missing = () => [...acked].filter((n) => !collect.has(n));
    await eventually('every acknowledged message at the subscriber', async () => (missing().length === 0 ? true : undefined), 15_000).catch(() => undefined);
    expect(missing()).toEqual([]);
    expect(acked.size).toBeGreaterThan(2000);
  }, 60_000);

  it('closes a frozen subscriber that takes nothing for stallTimeoutMs although it is under the queue limit, and its group gets everything meanwhile', async () => {
    // in a cluster nothing waits on deliveries (mqemitter-redis), so only this timeout bounds how long a frozen device is held
    const a = await instance(['--stall-ms', '500', '--stall-timeout-ms', '2000']);
    const filter = topics.transferFilter({ kind: 'group', name: 'lab' });
    const frozen = await frozenSubscriber(a.port, 'dev1', filter);
    try {
      const normal = await client(a.url, as('dev2'));
      expect(await subscribe(normal, filter, 0)).toEqual([0]);
      const chunks = new Inbox(normal);
      const ops = await client(a.url, as('ops'));
      // 16 MiB: more than loopback's socket buffers take, a quarter of the default 64 MiB limit
      const count = 256;
      const payload = (i: number) => Buffer.alloc(64 * 1024, i % 251);
      const jobs = Array.from({ length: count }, (_, i) => ({ topic: topics.transferChunk({ kind: 'group', name: 'lab' }, 'tfrozen', i), payload: payload(i) }));
      await withDeadline(publishWindowed(ops, jobs, 16), 30_000, 'every publish to be acknowledged');
      await chunks.waitForCount(count, undefined, 30_000);
      expect(chunks.messages.every((m, i) => m.payload.equals(payload(i)))).toBe(true);
      const closing = await eventually('the instance to close the frozen device', async () => {
        const lines = a.logs().filter((l) => l.msg === 'closing a connection that is too far behind');
        return lines.length > 0 ? lines : undefined;
      });
      expect(closing).toEqual([expect.objectContaining({ clientId: 'dev1', reason: expect.not.stringContaining('over the limit'), droppedQos0: 0 })]);
      frozen.socket.resume(); // it reads what the kernel holds for it, then the end of the connection
      await withDeadline(frozen.closed, 10_000, 'the frozen device to see its connection end');
      expect(normal.connected && ops.connected).toBe(true);
    } finally {
      frozen.socket.destroy();
    }
  }, 60_000);
});
