/**
 * npm run bench:broker — messages per second through three brokers, side by side, one run:
 *   embedded  : the edgefleet broker bin (authentication + ACL + packet validation on)
 *   bare      : Aedes 1.2 with no hooks, behind a plain net server
 *   mosquitto : Mosquitto 2 (Debian), anonymous, on loopback
 * Same clients for all: one MQTT.js publisher -> one MQTT.js subscriber (wildcard
 * subscription), 256-byte payloads, QoS 0 and QoS 1. Each broker runs in its own
 * process; both clients run in this one. Every message carries its sequence number and
 * the subscriber checks that each arrived exactly once before a run counts.
 *
 * Env: BENCH_QOS0 (default 100000), BENCH_QOS1 (50000), BENCH_ROUNDS (3), BENCH_PAYLOAD (256),
 *      BENCH_ONLY (e.g. embedded,bare).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import mqtt from 'mqtt';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const COUNTS = { 0: Number(process.env.BENCH_QOS0 ?? 100_000), 1: Number(process.env.BENCH_QOS1 ?? 50_000) };
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const PAYLOAD = Number(process.env.BENCH_PAYLOAD ?? 256);
const WARMUP = 5_000;
const PUBLISHER = { id: 'bench-pub', token: 'bench-pub-token-0123456789abcdef' };
const SUBSCRIBER = { id: 'bench-ops', token: 'bench-ops-token-0123456789abcdef' };
const TOPIC = `fleet/v1/devices/${PUBLISHER.id}/telemetry`;
const FILTER = 'fleet/v1/devices/+/telemetry';

// ---- worker thread: the publisher (its own event loop, so it does not share a core with the subscriber)
if (!isMainThread) {
  const { url, qos, count } = workerData;
  const pub = await mqtt.connectAsync(url, { clientId: PUBLISHER.id, username: PUBLISHER.id, password: PUBLISHER.token, reconnectPeriod: 0, protocolVersion: 4 });
  const payloads = Array.from({ length: 64 }, () => Buffer.alloc(PAYLOAD, 0x5a));
  let acked = 0;
  let failed = 0;
  let resolveAcks;
  const allAcked = new Promise((resolve) => (resolveAcks = resolve));
  // At most WINDOW publishes outstanding (QoS 0: not yet written to the socket; QoS 1: not yet
  // acknowledged), like a client that respects backpressure; MQTT.js itself would queue all of them.
  const WINDOW = 1000;
  let sent = 0;
  const sendMore = () => {
    while (sent < count && sent - acked - failed < WINDOW) {
      const payload = Buffer.from(payloads[sent % 64]);
      payload.writeUInt32BE(sent++, 0);
      pub.publish(TOPIC, payload, { qos }, done);
    }
  };
  const done = (err) => {
    if (err) failed++;
    else acked++;
    if (acked + failed === count) resolveAcks();
    else if (sent - acked - failed < WINDOW / 2) sendMore();
  };
  parentPort.once('message', sendMore);
  parentPort.postMessage({ ready: true });
  await allAcked;
  await pub.endAsync();
  parentPort.postMessage({ acked, failed });
} else if (process.argv[2] === '--serve-bare') {
  const { Aedes } = await import('aedes');
  const aedes = await Aedes.createBroker();
  // the same TCP_NODELAY the embedded broker sets on its sockets, so only hooks and the guard differ
  const server = createServer({ noDelay: true }, aedes.handle);
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${JSON.stringify({ url: `mqtt://127.0.0.1:${server.address().port}` })}\n`);
  });
  process.once('SIGTERM', () => aedes.close(() => server.close(() => process.exit(0))));
} else {
  await main();
}

function firstLine(child, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start within 10 s`)), 10_000);
    createInterface({ input: child.stdout }).once('line', (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line));
    });
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code}`)));
  });
}

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 1000 });
      await c.endAsync();
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`nothing answered MQTT on ${port}`);
      await new Promise((r) => setTimeout(r, 50)); // the broker is still starting
    }
  }
}

async function startBrokers(dir) {
  const creds = join(dir, 'credentials.json');
  writeFileSync(
    creds,
    JSON.stringify({
      devices: [{ id: PUBLISHER.id, token: PUBLISHER.token, groups: [] }],
      operators: [{ id: SUBSCRIBER.id, token: SUBSCRIBER.token }],
    }),
  );
  const embeddedProc = spawn('node', [join(ROOT, 'broker/dist/bin/broker.js'), '--credentials', creds, '--host', '127.0.0.1', '--port', '0', '--log-level', 'error'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const bareProc = spawn('node', [fileURLToPath(import.meta.url), '--serve-bare'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  // max_queued_messages: the default (1000) makes Mosquitto drop QoS 1 messages from a fast
  // publisher once the subscriber's queue is full; raised so every message is delivered and counted.
  writeFileSync(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'max_queued_messages 1000000', 'set_tcp_nodelay true', 'persistence false', 'log_dest stderr', 'log_type error', ''].join('\n'));
  const mosquittoProc = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
  const [embedded, bare] = await Promise.all([firstLine(embeddedProc, 'embedded broker'), firstLine(bareProc, 'bare Aedes')]);
  await waitForPort(port, 10_000);
  return {
    brokers: [
      { name: 'embedded', url: embedded.url, pid: embeddedProc.pid },
      { name: 'bare', url: bare.url, pid: bareProc.pid },
      { name: 'mosquitto', url: `mqtt://127.0.0.1:${port}`, pid: mosquittoProc.pid },
    ],
    procs: [embeddedProc, bareProc, mosquittoProc],
  };
}

/** One measured run: the publisher (worker thread) sends `count` messages as fast as MQTT.js lets it; the clock stops when the subscriber has them all. */
async function measure(broker, qos, count) {
  const sub = await mqtt.connectAsync(broker.url, {
    clientId: SUBSCRIBER.id,
    username: SUBSCRIBER.id,
    password: SUBSCRIBER.token,
    reconnectPeriod: 0,
    protocolVersion: 4,
    clean: true,
  });
  const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { url: broker.url, qos, count } });
  const fromWorker = [];
  let wake;
  worker.on('message', (m) => (fromWorker.push(m), wake?.()));
  worker.on('error', (err) => (fromWorker.push({ error: err }), wake?.()));
  const next = async () => {
    while (fromWorker.length === 0) await new Promise((r) => (wake = r));
    const m = fromWorker.shift();
    if (m.error) throw m.error;
    return m;
  };
  try {
    const granted = await sub.subscribeAsync(FILTER, { qos });
    if (granted[0]?.qos !== qos) throw new Error(`${broker.name}: subscription not granted at QoS ${qos}`);
    const seen = new Uint8Array(count);
    let received = 0;
    let duplicates = 0;
    let resolveAll;
    const all = new Promise((resolve) => (resolveAll = resolve));
    sub.on('message', (_topic, payload) => {
      const seq = payload.readUInt32BE(0);
      if (payload.length !== PAYLOAD || seq >= count) throw new Error(`${broker.name}: corrupt message`);
      if (seen[seq]) duplicates++;
      else {
        seen[seq] = 1;
        if (++received === count) resolveAll();
      }
    });
    await next(); // publisher connected
    const cpuBefore = cpuSeconds(broker.pid);
    const start = process.hrtime.bigint();
    worker.postMessage('go');
    const stall = setTimeout(() => resolveAll(new Error('stalled')), 120_000);
    const outcome = await all;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const brokerCpu = cpuSeconds(broker.pid) - cpuBefore;
    clearTimeout(stall);
    if (outcome instanceof Error) throw new Error(`${broker.name} QoS ${qos}: only ${received}/${count} messages arrived within 120 s`);
    const { acked, failed } = await next();
    return { seconds, brokerCpu, received, duplicates, acked: qos === 1 ? acked : undefined, failed };
  } finally {
    await worker.terminate();
    await sub.endAsync();
  }
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

/** The packet guard alone, in this process: CPU per 256 B QoS 1 PUBLISH framed and checked (64 KiB reads). */
async function guardCost() {
  const { PacketGuard, DEFAULT_LIMITS } = await import('@edgefleet/broker');
  const { default: mqttPacket } = await import('mqtt-packet');
  const connect = mqttPacket.generate({ cmd: 'connect', clientId: PUBLISHER.id, protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0 });
  const packets = Array.from({ length: 1000 }, (_, i) =>
    mqttPacket.generate({ cmd: 'publish', topic: TOPIC, payload: Buffer.alloc(PAYLOAD), qos: 1, messageId: i + 1 }),
  );
  const bytes = Buffer.concat(packets);
  const perPacket = [];
  for (let round = 0; round < 5; round++) {
    const guard = new PacketGuard(DEFAULT_LIMITS);
    guard.feed(connect);
    const t0 = process.cpuUsage();
    for (let r = 0; r < 100; r++) {
      for (let off = 0; off < bytes.length; off += 65536) {
        if (guard.feed(bytes.subarray(off, off + 65536))) throw new Error('guard refused a valid PUBLISH');
      }
    }
    const used = process.cpuUsage(t0);
    perPacket.push(((used.user + used.system) * 1000) / (100 * packets.length));
  }
  return { what: 'PacketGuard.feed CPU per 256 B QoS 1 PUBLISH (5 rounds of 100k)', nsPerPublish: Math.round(Math.min(...perPacket)), roundsNs: perPacket.map(Math.round) };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'bench-broker-'));
  const { brokers, procs } = await startBrokers(dir);
  const setup = {
    clients: 'one MQTT.js 5 publisher (worker thread, at most 1000 publishes outstanding) -> one MQTT.js subscriber (main thread, filter fleet/v1/devices/+/telemetry), in the bench process',
    brokerProcess: 'each broker in its own process on 127.0.0.1',
    payloadBytes: PAYLOAD,
    rounds: ROUNDS,
    warmupMessages: WARMUP,
    cpus: cpus().length,
    node: process.version,
    mosquitto: 'max_queued_messages 1000000 (default 1000 drops QoS 1 from a fast publisher), set_tcp_nodelay true',
    tcpNoDelay: 'on for all three brokers (the embedded broker sets it for request/reply latency)',
  };
  const results = {};
  // BENCH_ONLY=embedded,bare narrows the comparison (the summary then omits the missing ratios)
  const only = process.env.BENCH_ONLY?.split(',');
  if (only) brokers.splice(0, brokers.length, ...brokers.filter((b) => only.includes(b.name)));
  try {
    for (const b of brokers) for (const qos of [0, 1]) await measure(b, qos, WARMUP);
    for (let round = 0; round < ROUNDS; round++) {
      for (const qos of [0, 1]) {
        // rotate the order every round so no broker always runs first (or right after another)
        for (const b of brokers.map((_, i) => brokers[(i + round) % brokers.length])) {
          const r = await measure(b, qos, COUNTS[qos]);
          if (r.received !== COUNTS[qos] || r.failed > 0 || (qos === 1 && r.acked !== COUNTS[qos])) throw new Error(`${b.name}: verification failed ${JSON.stringify(r)}`);
          ((results[`${b.name}/${qos}`] ??= { broker: b.name, qos, runs: [] }).runs).push(r);
        }
      }
    }
  } finally {
    for (const p of procs) p.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
  const rate = {};
  const cpu = {};
  const best = {};
  for (const { broker, qos, runs } of Object.values(results)) {
    const rates = runs.map((r) => COUNTS[qos] / r.seconds);
    const cpuPerMsg = runs.map((r) => (r.brokerCpu / COUNTS[qos]) * 1e6);
    rate[`${broker}/${qos}`] = median(rates);
    cpu[`${broker}/${qos}`] = median(cpuPerMsg);
    best[`${broker}/${qos}`] = Math.max(...rates);
    console.log(
      JSON.stringify({
        bench: 'broker',
        broker,
        qos,
        messages: COUNTS[qos],
        payloadBytes: PAYLOAD,
        msgsPerSec: Math.round(median(rates)),
        bestMsgsPerSec: Math.round(Math.max(...rates)),
        roundsMsgsPerSec: rates.map(Math.round),
        brokerCpuMicrosPerMsg: Math.round(median(cpuPerMsg) * 100) / 100,
        roundsBrokerCpuMicrosPerMsg: cpuPerMsg.map((x) => Math.round(x * 100) / 100),
        verified: { allReceivedOnce: true, duplicates: runs.reduce((n, r) => n + r.duplicates, 0), ...(qos === 1 ? { allPubacked: true } : {}) },
        authAclValidation: broker === 'embedded',
      }),
    );
  }
  console.log(JSON.stringify({ bench: 'broker', guardOnly: true, ...(await guardCost()) }));
  const ratio = (a, b) => Math.round((a / b) * 1000) / 1000;
  console.log(
    JSON.stringify({
      bench: 'broker',
      summary: true,
      setup,
      ratios: Object.fromEntries(
        [0, 1].map((q) => [
          `qos${q}`,
          {
            'embedded/bare': ratio(rate[`embedded/${q}`], rate[`bare/${q}`]),
            'embedded/bare (best rounds)': ratio(best[`embedded/${q}`], best[`bare/${q}`]),
            'embedded/mosquitto': ratio(rate[`embedded/${q}`], rate[`mosquitto/${q}`]),
            // throughput ratio implied by broker CPU per message (less sensitive to other load on the machine)
            'embedded/bare by broker CPU': ratio(cpu[`bare/${q}`], cpu[`embedded/${q}`]),
            'embedded/mosquitto by broker CPU': ratio(cpu[`mosquitto/${q}`], cpu[`embedded/${q}`]),
          },
        ]),
      ),
      loadAverage: loadavg().map((x) => Math.round(x * 100) / 100),
      target: 'embedded/bare >= 0.9',
      targetMet: [0, 1].every((q) => rate[`embedded/${q}`] / rate[`bare/${q}`] >= 0.9),
    }),
  );
}
