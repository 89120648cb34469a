/**
 * The controller process of bench/telemetry.js and bench/faults.js: `createManager` as `hostManager` runs it
 * (embedded broker + controller + HTTP API and live feed in one process), plus a listener
 * on the fleet's feed that measures, for every telemetry message, the time from the
 * device's sample to the moment the controller's state holds it. SIGTERM stops it as the
 * daemon does (manager.close(), exit 0; any other exit code is reported by the bench).
 *
 *   → {type:'ready', url, brokerUrl, token, publicKeyPem, stateFile}
 *   {type:'stats', reset?} → {type:'stats', latency:{counts}, received, receivedById, outOfOrder, cpu, rss, heap, elu, stateBytes}
 *   {type:'sequences'} → {type:'sequences', byId: {id: fleet.sequences.of(id)}, presence: {id: [online, ...]}}
 *   on SIGTERM, after manager.close(): {type:'final', sequences} then exit 0
 *
 * Env: INTAKE (in-process|mqtt), DATA_DIR, MQTT_HOST (127.0.0.1), MQTT_PORT (0).
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { createManager } from '@edgefleet/host-manager';
import { Histogram } from './sim/histogram.js';

const logger = pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2));
const manager = await createManager({
  dataDir: process.env.DATA_DIR,
  mqttHost: process.env.MQTT_HOST ?? '127.0.0.1',
  mqttPort: Number(process.env.MQTT_PORT ?? 0),
  mqttWsPort: false,
  httpPort: 0,
  logger,
  requestTimeoutMs: 60_000,
  ...(process.env.INTAKE ? { intake: process.env.INTAKE } : {}),
});

const latency = new Histogram();
const lastTs = new Map();
const receivedById = new Map();
let received = 0;
let outOfOrder = 0;
/** Presence changes per device as the controller saw them (offline once, back once); `presenceAt`: when, and why. */
const presence = new Map();
const presenceAt = new Map();
manager.fleet.on('feed', (e) => {
  if (e.type === 'device') {
    const seen = presence.get(e.device) ?? [];
    if (seen[seen.length - 1] !== e.online) {
      seen.push(e.online);
      const at = presenceAt.get(e.device) ?? [];
      at.push({ online: e.online, at: Date.now(), ...(e.online ? {} : { reason: e.record.offlineReason }) });
      presenceAt.set(e.device, at);
    }
    presence.set(e.device, seen);
  }
  if (e.type !== 'telemetry') return;
  const now = Date.now();
  latency.record(now - e.sample.ts);
  received++;
  receivedById.set(e.device, (receivedById.get(e.device) ?? 0) + 1);
  const prev = lastTs.get(e.device);
  if (prev !== undefined && e.sample.ts < prev) outOfOrder++;
  lastTs.set(e.device, e.sample.ts);
});

const delay = monitorEventLoopDelay({ resolution: 10 });
delay.enable();
let elu = performance.eventLoopUtilization();
let cpu = process.cpuUsage();
let since = Date.now();

/** PROFILE: the bench asks for a CPU profile of each measurement window only (not of provisioning and connecting). */
let profiler = null;
async function profile(msg) {
  const { Session } = await import('node:inspector/promises');
  if (msg.type === 'profile-start') {
    profiler = new Session();
    profiler.connect();
    await profiler.post('Profiler.enable');
    await profiler.post('Profiler.start');
  } else if (profiler) {
    const { profile: p } = await profiler.post('Profiler.stop');
    await writeFile(msg.file, JSON.stringify(p));
    profiler.disconnect();
    profiler = null;
  }
  process.send({ type: 'profiled' });
}

function sequences() {
  return Object.fromEntries(manager.state.devices().map((d) => [d.id, manager.fleet.sequences.of(d.id) ?? null]));
}

process.on('message', async (msg) => {
  if (msg.type === 'profile-start' || msg.type === 'profile-stop') return profile(msg);
  if (msg.type === 'sequences') {
    const online = Object.fromEntries(manager.state.devices().map((d) => [d.id, d.online]));
    return process.send({ type: 'sequences', byId: sequences(), online, presence: Object.fromEntries(presence), presenceAt: Object.fromEntries(presenceAt) });
  }
  if (msg.type !== 'stats') return;
  const bytes = (await manager.metrics.stateBytesWritten.get()).values[0]?.value ?? 0;
  const nowCpu = process.cpuUsage(cpu);
  const nowElu = performance.eventLoopUtilization(elu);
  const mem = process.memoryUsage();
  process.send({
    type: 'stats',
    latency: latency.snapshot(),
    received,
    receivedById: msg.withIds ? Object.fromEntries(receivedById) : undefined,
    outOfOrder,
    seconds: (Date.now() - since) / 1000,
    cpuS: (nowCpu.user + nowCpu.system) / 1e6,
    cpuSystemS: nowCpu.system / 1e6,
    elu: nowElu.utilization,
    loopDelayP99Ms: delay.percentile(99) / 1e6,
    rss: mem.rss,
    heapUsed: mem.heapUsed,
    stateBytes: bytes,
    online: manager.state.devices().filter((d) => d.online).length,
  });
  if (msg.reset) {
    latency.reset();
    delay.reset();
    elu = performance.eventLoopUtilization();
    cpu = process.cpuUsage();
    since = Date.now();
  }
});

// the bench went away (crashed, or was stopped): no controller left behind
process.on('disconnect', () => {
  if (!stopping) process.exit(0);
});

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  manager.close().then(
    () => process.send({ type: 'final', sequences: sequences(), presence: Object.fromEntries(presence) }, () => process.exit(0)),
    (error) => {
      process.stderr.write(`close failed: ${error.stack}\n`);
      process.exit(1);
    },
  );
});

process.send({ type: 'ready', url: manager.url, brokerUrl: manager.brokerUrl, token: manager.operator.token, publicKeyPem: manager.keys.publicKeyPem, stateFile: join(manager.dataDir, 'state.json') });
