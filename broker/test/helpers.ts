/** Small helpers for broker tests: real MQTT.js clients, raw sockets, deadlines instead of sleeps. */
import { connect as netConnect, type Socket } from 'node:net';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { connect as connectPacket, subscribe as subscribePacket } from './packets.js';

export const TOKEN = (name: string) => `token-${name}-0123456789abcdef`;

/** Connects and resolves once CONNACK 0 arrives; rejects with the CONNACK error (err.code = return code). */
export function connectClient(url: string, opts: IClientOptions): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...opts });
    const fail = (err: Error) => {
      client.end(true);
      reject(err);
    };
    client.once('connect', () => {
      client.off('error', fail);
      resolve(client);
    });
    client.once('error', fail);
    client.once('close', () => fail(Object.assign(new Error('closed before CONNACK'), { code: -1 })));
  });
}

export function endClient(client: MqttClient | undefined): Promise<void> {
  if (!client) return Promise.resolve();
  return new Promise((resolve) => client.end(true, {}, () => resolve()));
}

/** Resolves with the granted QoS per filter (128 = refused). */
export async function subscribe(client: MqttClient, filter: string | string[], qos: 0 | 1 = 1): Promise<number[]> {
  try {
    const granted = await client.subscribeAsync(filter, { qos });
    return granted.map((g) => g.qos);
  } catch (err) {
    // MQTT.js rejects when any filter got 0x80; the SUBACK it carries says which
    const granted = (err as { packet?: { granted?: (number | { qos: number })[] } }).packet?.granted;
    if (!granted) throw err;
    return granted.map((g) => (typeof g === 'number' ? g : g.qos));
  }
}

export function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** Collects messages by topic, and lets a test wait for the n-th one. */
export class Inbox {
  readonly messages: { topic: string; payload: Buffer }[] = [];
  private waiters: { check: () => boolean; resolve: () => void }[] = [];
  constructor(client: MqttClient) {
    client.on('message', (topic, payload) => {
      this.messages.push({ topic, payload });
      this.waiters = this.waiters.filter((w) => (w.check() ? (w.resolve(), false) : true));
    });
  }
  count(topic?: string): number {
    return topic === undefined ? this.messages.length : this.messages.filter((m) => m.topic === topic).length;
  }
  waitForCount(n: number, topic?: string, ms = 5000): Promise<void> {
    const check = () => this.count(topic) >= n;
    if (check()) return Promise.resolve();
    return withDeadline(new Promise<void>((resolve) => this.waiters.push({ check, resolve })), ms, `${n} messages${topic ? ` on ${topic}` : ''}`);
  }
}

/** Publishes at QoS 1 and waits for the PUBACK. */
export function publish(client: MqttClient, topic: string, payload: string | Buffer, qos: 0 | 1 = 1): Promise<void> {
  return client.publishAsync(topic, payload, { qos }).then(() => undefined);
}

/** Opens a raw TCP socket; resolves once connected. */
export function rawSocket(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves when the peer closes the socket; collects what it sent. */
export function closed(socket: Socket, ms = 5000): Promise<Buffer> {
  const received: Buffer[] = [];
  socket.on('data', (d: Buffer) => received.push(d));
  socket.on('error', () => {
    /* a reset is a close too */
  });
  if (socket.destroyed) return Promise.resolve(Buffer.concat(received));
  return withDeadline(new Promise((resolve) => socket.once('close', () => resolve(Buffer.concat(received)))), ms, 'the broker to close the socket');
}

/** Runs a program to completion (killed after `ms`); resolves with its exit code and output. */
export function run(
  cmd: string,
  args: string[],
  opts: { ms?: number; input?: string; onSpawn?: (child: import('node:child_process').ChildProcess) => void } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return import('node:child_process').then(
    ({ spawn }) =>
      new Promise((resolve, reject) => {
        const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), opts.ms ?? 10000);
        child.once('error', (err) => (clearTimeout(timer), reject(err)));
        child.once('close', (code) => (clearTimeout(timer), resolve({ code, stdout, stderr })));
        child.stdin.end(opts.input ?? '');
        opts.onSpawn?.(child);
      }),
  );
}

/** A device that connects, subscribes, reads its SUBACK and then never reads again (a frozen process). */
export async function frozenSubscriber(port: number, id: string, filter: string): Promise<{ socket: Socket; closed: Promise<void> }> {
  const socket = await rawSocket(port);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => {
    /* the broker resets it when it gives up on it: that is the point */
  });
  let seen = Buffer.alloc(0);
  const subacked = new Promise<void>((resolve) => {
    socket.on('data', function onData(d: Buffer) {
      seen = Buffer.concat([seen, d]);
      // CONNACK (4 bytes) then SUBACK 0x90 0x03 id id rc
      if (seen.length >= 9 && seen[4] === 0x90) {
        socket.off('data', onData);
        socket.pause();
        resolve();
      }
    });
  });
  socket.write(Buffer.concat([connectPacket({ clientId: id, username: id, password: TOKEN(id) }), subscribePacket(7, [filter], { qos: 0 })]));
  await withDeadline(subacked, 5000, `${id}'s SUBACK`);
  if (seen[8] !== 0) throw new Error(`${id}'s subscription to ${filter} was not granted at QoS 0 (return code ${seen[8]})`);
  return { socket, closed };
}

/** Publishes like the transfer sender: QoS 1, at most `window` awaiting PUBACK. */
export async function publishWindowed(client: MqttClient, jobs: { topic: string; payload: Buffer }[], window: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: window }, async () => {
      while (next < jobs.length) {
        const job = jobs[next++]!;
        await client.publishAsync(job.topic, job.payload, { qos: 1 });
      }
    }),
  );
}
