import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { topics } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { Inbox, TOKEN, connectClient, endClient, publish, subscribe, withDeadline } from './helpers.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.once('error', reject);
  });
}

async function waitForPort(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port }, () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25)); // polling a port that is not open yet
  }
}

describe('two broker instances sharing one Redis', () => {
  let dir: string;
  let redis: ChildProcess;
  let b1: RunningBroker;
  let b2: RunningBroker;
  let redisPort: number;
  const creds = {
    devices: [{ id: 'dev1', token: TOKEN('dev1'), groups: ['lab'] }],
    operators: [{ id: 'ops', token: TOKEN('ops') }],
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'broker-redis-'));
    const port = (redisPort = await freePort());
    redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    await waitForPort(port, 5000);
    const persistence = { kind: 'redis' as const, url: `redis://127.0.0.1:${port}` };
    b1 = await startTestBroker({ ...creds, persistence });
    b2 = await startTestBroker({ ...creds, persistence });
  });
  afterAll(async () => {
    await Promise.all([b1?.close(), b2?.close()]);
    redis?.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  it('delivers to a client on broker 1 what a client on broker 2 publishes, and shares retained messages', async () => {
    expect(b1.ports.tcp).not.toBe(b2.ports.tcp);
    const device = await connectClient(b1.url, { clientId: 'dev1', username: 'dev1', password: TOKEN('dev1') });
    const inbox = new Inbox(device);
    expect(await subscribe(device, [topics.device('dev1', 'commands'), topics.group('lab', 'commands')])).toEqual([1, 1]);
    const op = await connectClient(b2.url, { clientId: 'ops', username: 'ops', password: TOKEN('ops') });
    // the subscription made on broker 1 reaches broker 2 through Redis asynchronously: retry until it lands
    await withDeadline(
      (async () => {
        for (let i = 0; inbox.count() === 0; i++) {
          await publish(op, topics.device('dev1', 'commands'), `probe-${i}`);
          await inbox.waitForCount(1, undefined, 200).catch(() => undefined);
        }
      })(),
      5000,
      'the first cross-broker message',
    );
    const before = inbox.count();
    for (let i = 0; i < 20; i++) await publish(op, topics.group('lab', 'commands'), `g${i}`);
    await inbox.waitForCount(before + 20);
    expect(inbox.messages.slice(before).map((m) => m.payload.toString())).toEqual(Array.from({ length: 20 }, (_, i) => `g${i}`));

    // retained status published through broker 1 is served by broker 2
    await device.publishAsync(topics.device('dev1', 'status'), 'online', { qos: 1, retain: true });
    const watcher = await connectClient(b2.url, { clientId: 'ops-watch', username: 'ops', password: TOKEN('ops') });
    const watched = new Inbox(watcher);
    await subscribe(watcher, topics.allDevices('status'));
    await watched.waitForCount(1);
    expect(watched.messages[0]!.payload.toString()).toBe('online');
    await Promise.all([endClient(device), endClient(op), endClient(watcher)]);
  });

  it('a broker starting on a Redis that holds retained messages only presence may have (left by an older broker) removes them', async () => {
    type Store = { storeRetained(p: object): Promise<void>; createRetainedStream(p: string): AsyncIterable<{ topic: string }> };
    const storeOf = (b: RunningBroker) => (b.aedes as unknown as { persistence: Store }).persistence;
    // what an older broker let a device plant (a retained `exit` on the legacy topic, a retained event) beside its presence
    for (const topic of ['hello', topics.device('dev1', 'events'), topics.device('dev1', 'status')]) {
      await storeOf(b1).storeRetained({ cmd: 'publish', topic, payload: Buffer.from('exit'), qos: 1, retain: true });
    }
    const warnings: { msg: string; topic?: string }[] = [];
    const { pino } = await import('pino');
    const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line)) });
    const b3 = await startTestBroker({ ...creds, persistence: { kind: 'redis', url: `redis://127.0.0.1:${redisPort}` }, legacyTopic: 'hello', logger });
    try {
      const removed = warnings.filter((w) => w.msg === 'removed a retained message that only presence may have').map((w) => w.topic);
      expect(removed.sort()).toEqual([topics.device('dev1', 'events'), 'hello'].sort());
      const left: string[] = [];
      for await (const packet of storeOf(b3).createRetainedStream('#')) left.push(packet.topic);
      expect(left).toEqual([topics.device('dev1', 'status')]); // presence stays
    } finally {
      await b3.close();
    }
  });

  it('fails clearly when Redis cannot be reached', async () => {
    const port = await freePort();
    await expect(startTestBroker({ ...creds, persistence: { kind: 'redis', url: `redis://127.0.0.1:${port}` } })).rejects.toThrow(
      /cannot reach Redis/,
    );
  });
});
