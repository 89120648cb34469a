/**
 * npm run bench:slow-subscriber — what one frozen subscriber costs everyone else, side by side:
 *   embedded : the `broker` bin (per-connection outbound limits: broker/src/outbound.ts)
 *   bare     : Aedes 1.2 with its defaults (what the broker did before: drainTimeout 60 s)
 * Each broker in its own process. An operator publishes 1600 chunks of 64 KiB (100 MiB) at
 * QoS 1 to a group's transfer topic with at most 16 awaiting PUBACK (as the transfer sender
 * does); a second operator connection sends a command to a witness device in another group
 * every 20 ms. Subscribers: a normal group member (MQTT.js, QoS 0), the witness (QoS 1), and,
 * in the "frozen" runs, a second group member that connects, subscribes and never reads again
 * (a raw socket). Measured: how long the normal member takes to get every chunk (checked one
 * by one, in order), the longest gap it and the witness see, and the broker's peak RSS.
 *
 * Env: BENCH_CHUNKS (default 1600), BENCH_CHUNK_KIB (64), BENCH_ONLY (embedded or bare; the summary then needs both).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import mqttPacket from 'mqtt-packet';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CHUNKS = Number(process.env.BENCH_CHUNKS ?? 1600);
const CHUNK = Number(process.env.BENCH_CHUNK_KIB ?? 64) * 1024;
const WINDOW = 16;
const token = (id) => `${id}-token-0123456789abcdef`;
const GROUP_FILTER = 'fleet/v1/groups/lab/transfers/+/+';
const chunkTopic = (i) => `fleet/v1/groups/lab/transfers/tbench/${i}`;
const WITNESS_COMMANDS = 'fleet/v1/devices/witness/commands';

if (process.argv[2] === '--serve-bare') {
  const { Aedes } = await import('aedes');
  const aedes = await Aedes.createBroker();
  const server = createServer({ noDelay: true }, aedes.handle);
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ url: `mqtt://127.0.0.1:${server.address().port}`, port: server.address().port })}\n`));
  process.once('SIGTERM', () => aedes.close(() => server.close(() => process.exit(0))));
} else {
  await main();
}

function firstLine(child, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start within 15 s`)), 15_000);
    createInterface({ input: child.stdout }).once('line', (line) => (clearTimeout(timer), resolve(JSON.parse(line))));
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code}`)));
  });
}

function rss(pid) {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
}

function connectAs(url, id) {
  const who = id.split('-')[0]; // ops-chunks, ops-commands: the operator's client ids
  return mqtt.connectAsync(url, { clientId: id, username: who, password: token(who), protocolVersion: 4, reconnectPeriod: 0 });
}

/** Connects, subscribes, reads its SUBACK, then never reads again. */
function frozen(port) {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1');
    socket.on('error', () => undefined); // the broker may reset it: that is what is measured
    let seen = Buffer.alloc(0);
    socket.on('data', function onData(d) {
      seen = Buffer.concat([seen, d]);
      if (seen.length >= 9 && seen[4] === 0x90) {
        socket.off('data', onData);
        socket.pause();
        resolve(socket);
      }
    });
    socket.once('connect', () => {
      socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'frozen', keepalive: 0, username: 'frozen', password: Buffer.from(token('frozen')) }));
      socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: GROUP_FILTER, qos: 0 }] }));
    });
    setTimeout(() => reject(new Error('frozen subscriber: no SUBACK')), 10_000).unref();
  });
}

async function run(broker, withFrozen) {
  const stuck = withFrozen ? await frozen(broker.port) : undefined;
  const normal = await connectAs(broker.url, 'normal');
  const witness = await connectAs(broker.url, 'witness');
  const ops = await connectAs(broker.url, 'ops-chunks');
  const opsCommands = await connectAs(broker.url, 'ops-commands');
  await normal.subscribeAsync(GROUP_FILTER, { qos: 0 });
  await witness.subscribeAsync(WITNESS_COMMANDS, { qos: 1 });
  const gaps = { normal: 0, witness: 0 };
  let last = { normal: 0, witness: 0 };
  let got = 0;
  let resolveAll;
  const all = new Promise((resolve) => (resolveAll = resolve));
  normal.on('message', (_t, payload) => {
    const now = Date.now();
    if (last.normal) gaps.normal = Math.max(gaps.normal, now - last.normal);
    last.normal = now;
    if (payload.readUInt32BE(0) !== got || payload.length !== CHUNK) throw new Error(`${broker.name}: chunk ${got} missing or out of order`);
    if (++got === CHUNKS) resolveAll();
  });
  witness.on('message', () => {
    const now = Date.now();
    if (last.witness) gaps.witness = Math.max(gaps.witness, now - last.witness);
    last.witness = now;
  });
  const ticker = setInterval(() => opsCommands.publish(WITNESS_COMMANDS, 'tick', { qos: 1 }), 20);
  let peak = rss(broker.pid);
  const sampler = setInterval(() => (peak = Math.max(peak, rss(broker.pid))), 50);
  const rssBefore = peak;
  const start = Date.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: WINDOW }, async () => {
      while (next < CHUNKS) {
        const i = next++;
        const payload = Buffer.alloc(CHUNK, i % 251);
        payload.writeUInt32BE(i, 0);
        await ops.publishAsync(chunkTopic(i), payload, { qos: 1 });
      }
    }),
  );
  await all;
  const seconds = (Date.now() - start) / 1000;
  clearInterval(ticker);
  clearInterval(sampler);
  stuck?.destroy();
  await Promise.all([normal, witness, ops, opsCommands].map((c) => c.endAsync(true)));
  return {
    bench: 'slow-subscriber',
    broker: broker.name,
    frozenMember: withFrozen,
    chunks: CHUNKS,
    chunkKiB: CHUNK / 1024,
    normalMemberSeconds: Math.round(seconds * 100) / 100,
    normalMemberMBps: Math.round((CHUNKS * CHUNK) / 1e6 / seconds),
    normalLongestGapMs: gaps.normal,
    witnessLongestGapMs: gaps.witness,
    brokerRssGrowthMB: Math.round((peak - rssBefore) / 1e6),
    verified: { everyChunkInOrder: true },
  };
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'bench-slow-'));
  const creds = join(dir, 'credentials.json');
  writeFileSync(
    creds,
    JSON.stringify({
      devices: [
        { id: 'normal', token: token('normal'), groups: ['lab'] },
        { id: 'frozen', token: token('frozen'), groups: ['lab'] },
        { id: 'witness', token: token('witness'), groups: ['other'] },
      ],
      operators: [{ id: 'ops', token: token('ops') }],
    }),
  );
  const embeddedProc = spawn('node', [join(ROOT, 'broker/dist/bin/broker.js'), '--credentials', creds, '--host', '127.0.0.1', '--port', '0', '--log-level', 'error'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const bareProc = spawn('node', [fileURLToPath(import.meta.url), '--serve-bare'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [embedded, bare] = await Promise.all([firstLine(embeddedProc, 'embedded broker'), firstLine(bareProc, 'bare Aedes')]);
  const brokers = [
    { name: 'embedded', url: embedded.url, port: embedded.ports.tcp, pid: embeddedProc.pid },
    { name: 'bare', url: bare.url, port: bare.port, pid: bareProc.pid },
  ];
  const results = [];
  try {
    for (const b of brokers.filter((x) => !process.env.BENCH_ONLY || x.name === process.env.BENCH_ONLY)) {
      for (const withFrozen of [false, true]) {
        const r = await run(b, withFrozen);
        results.push(r);
        console.log(JSON.stringify(r));
      }
    }
  } finally {
    embeddedProc.kill('SIGTERM');
    bareProc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
  if (process.env.BENCH_ONLY) return;
  const of = (name, f) => results.find((r) => r.broker === name && r.frozenMember === f);
  const slowdown = (name) => Math.round((of(name, true).normalMemberSeconds / of(name, false).normalMemberSeconds) * 100) / 100;
  console.log(
    JSON.stringify({
      bench: 'slow-subscriber',
      summary: true,
      slowdownWithFrozenMember: { embedded: slowdown('embedded'), bare: slowdown('bare') },
      longestGapWithFrozenMemberMs: { embedded: { normal: of('embedded', true).normalLongestGapMs, witness: of('embedded', true).witnessLongestGapMs }, bare: { normal: of('bare', true).normalLongestGapMs, witness: of('bare', true).witnessLongestGapMs } },
      setup: { publisher: `QoS 1, ${WINDOW} awaiting PUBACK`, normal: 'MQTT.js, QoS 0 group transfer filter', frozen: 'raw socket, never reads after SUBACK', witness: 'other group, a command every 20 ms', embeddedDefaults: 'stallMs 2000, maxQueuedBytes 64 MiB', cpus: cpus().length },
      loadAverage: loadavg().map((x) => Math.round(x * 100) / 100),
    }),
  );
}
