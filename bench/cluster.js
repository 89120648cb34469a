/**
 * npm run bench:cluster — QoS 1 message throughput through the broker clustered over Redis,
 * side by side with one instance, in one run:
 *   single       : one `broker` instance, in-memory persistence (the default)
 *   single+redis : one instance with Redis persistence and routing (what clustering costs alone)
 *   cluster      : two instances sharing one Redis; every message published on one instance is
 *                  consumed on the other (the worst case: each one crosses Redis)
 * Same clients for all: 4 devices publishing QoS 1 telemetry (256 B, each in its own worker
 * thread, at most 500 publishes awaiting PUBACK) and 2 operators subscribed at QoS 1, each to
 * two of the devices. Every message carries (device, sequence): a round counts only if each
 * subscriber got each of its messages exactly once and every publish was acknowledged.
 * Brokers and Redis are separate processes; CPU of each comes from /proc.
 *
 * Env: BENCH_MESSAGES (per device, default 20000), BENCH_ROUNDS (3), BENCH_PAYLOAD (256).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import mqtt from 'mqtt';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 20_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const PAYLOAD = Number(process.env.BENCH_PAYLOAD ?? 256);
const WARMUP = 2_000;
const WINDOW = 500;
const DEVICES = [0, 1, 2, 3].map((i) => ({ id: `bench-dev-${i}`, token: `bench-dev-${i}-token-0123456789abcdef` }));
const OPERATOR = { id: 'bench-ops', token: 'bench-ops-token-0123456789abcdef' };
const telemetry = (device) => `fleet/v1/devices/${device}/telemetry`;
/** Subscriber k gets the telemetry of devices k and k + 2. */
const SUBSCRIBERS = [0, 1].map((k) => ({ clientId: `${OPERATOR.id}-sub-${k}`, devices: [k, k + 2] }));

// ---- worker thread: one publishing device
if (!isMainThread) {
  const { url, device, count, index } = workerData;
  const pub = await mqtt.connectAsync(url, { clientId: device.id, username: device.id, password: device.token, reconnectPeriod: 0, protocolVersion: 4 });
  let acked = 0;
  let failed = 0;
  let sent = 0;
  let resolveAll;
  const all = new Promise((resolve) => (resolveAll = resolve));
  const done = (err) => {
    if (err) failed++;
    else acked++;
    if (acked + failed === count) resolveAll();
    else if (sent - acked - failed < WINDOW / 2) sendMore();
  };
  const sendMore = () => {
    while (sent < count && sent - acked - failed < WINDOW) {
      const payload = Buffer.alloc(PAYLOAD, 0x5a);
      payload.writeUInt8(index, 0);
      payload.writeUInt32BE(sent++, 1);
      pub.publish(telemetry(device.id), payload, { qos: 1 }, done);
    }
  };
  parentPort.once('message', sendMore);
  parentPort.postMessage({ ready: true });
  await all;
  await pub.endAsync();
  parentPort.postMessage({ acked, failed });
} else {
  await main();
}

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function firstLine(child, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start within 15 s`)), 15_000);
    createInterface({ input: child.stdout }).once('line', (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line));
    });
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code}`)));
  });
}

async function startRedis(dir) {
  const port = await freePort();
  // pub/sub output buffers raised from the default (32 MB hard), as broker/README.md says for a cluster
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--client-output-buffer-limit', 'pubsub 512mb 256mb 60'], { stdio: 'ignore' });
  for (const deadline = Date.now() + 10_000; ; ) {
    const open = await new Promise((resolve) => {
      const s = netConnect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (open) break;
    if (Date.now() > deadline) throw new Error('redis-server did not listen within 10 s');
    await new Promise((r) => setTimeout(r, 50)); // redis-server is still starting
  }
  return { url: `redis://127.0.0.1:${port}`, pid: child.pid, child };
}

function startBroker(creds, extra) {
  const child = spawn('node', [join(ROOT, 'broker/dist/bin/broker.js'), '--credentials', creds, '--host', '127.0.0.1', '--port', '0', '--log-level', 'error', ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  return firstLine(child, 'broker').then((line) => ({ url: line.url, pid: child.pid, child }));
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** A subscriber that checks each (device, sequence) arrives exactly once. */
async function subscriber(url, spec, count) {
  const client = await mqtt.connectAsync(url, { clientId: spec.clientId, username: OPERATOR.id, password: OPERATOR.token, reconnectPeriod: 0, protocolVersion: 4, clean: true });
  const granted = await client.subscribeAsync(spec.devices.map((d) => telemetry(DEVICES[d].id)), { qos: 1 });
  if (granted.some((g) => g.qos !== 1)) throw new Error(`${spec.clientId}: subscriptions not granted at QoS 1`);
  const seen = spec.devices.map(() => new Uint8Array(count));
  let received = 0;
  let duplicates = 0;
  let resolveAll;
  const all = new Promise((resolve) => (resolveAll = resolve));
  client.on('message', (_topic, payload) => {
    const device = payload.readUInt8(0);
    const seq = payload.readUInt32BE(1);
    const slot = spec.devices.indexOf(device);
    if (payload.length !== PAYLOAD || slot < 0 || seq >= count) throw new Error(`${spec.clientId}: corrupt or foreign message`);
    if (seen[slot][seq]) duplicates++;
    else {
      seen[slot][seq] = 1;
      if (++received === count * spec.devices.length) resolveAll();
    }
  });
  return { client, all, stats: () => ({ received, duplicates }) };
}

/** One round: the four devices publish `count` each; the clock stops when both subscribers have everything. */
async function measure(layout, count) {
  // cluster: subscriber k on instance k, its devices on the other instance, so every message crosses Redis
  const subs = await Promise.all(SUBSCRIBERS.map((s, k) => subscriber(layout.urls[k % layout.urls.length], s, count)));
  await new Promise((r) => setTimeout(r, 300)); // subscriptions made on one instance reach the other through Redis
  const workers = DEVICES.map((device, i) => {
    const url = layout.urls[(i + 1) % layout.urls.length];
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { url, device, count, index: i } });
    const messages = [];
    let wake;
    worker.on('message', (m) => (messages.push(m), wake?.()));
    worker.on('error', (err) => (messages.push({ error: err }), wake?.()));
    const next = async () => {
      while (messages.length === 0) await new Promise((r) => (wake = r));
      const m = messages.shift();
      if (m.error) throw m.error;
      return m;
    };
    return { worker, next };
  });
  try {
    await Promise.all(workers.map((w) => w.next()));
    const cpuBefore = layout.pids.map(cpuSeconds);
    const start = process.hrtime.bigint();
    for (const w of workers) w.worker.postMessage('go');
    let timer;
    const stalled = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${layout.name}: not everything arrived within 180 s`)), 180_000)));
    await Promise.race([Promise.all(subs.map((s) => s.all)), stalled]);
    clearTimeout(timer);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpu = layout.pids.map((pid, i) => cpuSeconds(pid) - cpuBefore[i]);
    const acks = await Promise.all(workers.map((w) => w.next()));
    const acked = acks.reduce((n, a) => n + a.acked, 0);
    const failed = acks.reduce((n, a) => n + a.failed, 0);
    const stats = subs.map((s) => s.stats());
    return { seconds, cpu, acked, failed, received: stats.reduce((n, s) => n + s.received, 0), duplicates: stats.reduce((n, s) => n + s.duplicates, 0) };
  } finally {
    await Promise.all(workers.map((w) => w.worker.terminate()));
    await Promise.all(subs.map((s) => s.client.endAsync()));
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function startLayouts(dir) {
  const creds = join(dir, 'credentials.json');
  writeFileSync(creds, JSON.stringify({ devices: DEVICES.map((d) => ({ id: d.id, token: d.token, groups: [] })), operators: [{ id: OPERATOR.id, token: OPERATOR.token }] }));
  const redisSingle = await startRedis(dir);
  const redisCluster = await startRedis(dir);
  const single = await startBroker(creds, []);
  const singleRedis = await startBroker(creds, ['--redis', redisSingle.url]);
  const a = await startBroker(creds, ['--redis', redisCluster.url]);
  const b = await startBroker(creds, ['--redis', redisCluster.url]);
  return {
    layouts: [
      { name: 'single', urls: [single.url], pids: [single.pid], processes: 'one broker' },
      { name: 'single+redis', urls: [singleRedis.url], pids: [singleRedis.pid, redisSingle.pid], processes: 'one broker + redis-server' },
      { name: 'cluster', urls: [a.url, b.url], pids: [a.pid, b.pid, redisCluster.pid], processes: 'two brokers + redis-server' },
    ],
    children: [single, singleRedis, a, b, redisSingle, redisCluster].map((p) => p.child),
  };
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'bench-cluster-'));
  const { layouts, children } = await startLayouts(dir);
  const total = MESSAGES * DEVICES.length;
  const results = Object.fromEntries(layouts.map((l) => [l.name, []]));
  try {
    for (const l of layouts) await measure(l, WARMUP);
    for (let round = 0; round < ROUNDS; round++) {
      // rotate the order every round so no layout always runs first
      for (const l of layouts.map((_, i) => layouts[(i + round) % layouts.length])) {
        const r = await measure(l, MESSAGES);
        if (r.received !== total || r.duplicates !== 0 || r.acked !== total || r.failed !== 0) throw new Error(`${l.name}: verification failed ${JSON.stringify(r)}`);
        results[l.name].push(r);
      }
    }
  } finally {
    for (const c of children) c.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
  const rate = {};
  for (const l of layouts) {
    const runs = results[l.name];
    const rates = runs.map((r) => total / r.seconds);
    const cpuPerMsg = runs.map((r) => (r.cpu.reduce((a, b) => a + b, 0) / total) * 1e6);
    rate[l.name] = median(rates);
    console.log(
      JSON.stringify({
        bench: 'cluster',
        layout: l.name,
        processes: l.processes,
        qos: 1,
        messages: total,
        payloadBytes: PAYLOAD,
        msgsPerSec: Math.round(median(rates)),
        roundsMsgsPerSec: rates.map(Math.round),
        serverCpuMicrosPerMsg: Math.round(median(cpuPerMsg) * 10) / 10,
        cpuSecondsPerProcess: runs.map((r) => r.cpu.map((c) => Math.round(c * 100) / 100)),
        verified: { allReceivedOnce: true, allPubacked: true },
      }),
    );
  }
  const ratio = (a, b) => Math.round((a / b) * 1000) / 1000;
  console.log(
    JSON.stringify({
      bench: 'cluster',
      summary: true,
      setup: {
        clients: `4 MQTT.js devices (worker threads, <= ${WINDOW} QoS 1 publishes awaiting PUBACK each) -> 2 MQTT.js operators (QoS 1), in the bench process`,
        cluster: 'each operator on one instance, its devices on the other: every message crosses Redis',
        payloadBytes: PAYLOAD,
        messagesPerRound: total,
        rounds: ROUNDS,
        cpus: cpus().length,
        node: process.version,
      },
      ratios: { 'cluster/single': ratio(rate.cluster, rate.single), 'single+redis/single': ratio(rate['single+redis'], rate.single), 'cluster/single+redis': ratio(rate.cluster, rate['single+redis']) },
      loadAverage: loadavg().map((x) => Math.round(x * 100) / 100),
    }),
  );
}
