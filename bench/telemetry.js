/**
 * npm run bench:telemetry — how many devices one controller holds at one telemetry message
 * per second each, and where it breaks.
 *
 * Layout (separate processes): the controller (bench/controller-process.js: embedded broker
 * + controller + API, as `hostManager` runs them), a dashboard on the live feed
 * (bench/telemetry-feed.js), and simulated devices (bench/sim: the agent's connection,
 * dispatcher, telemetry flush and transfer receiver; each device its own credential and
 * MQTT connection, QoS 1 telemetry), PER_PROCESS devices per process. Devices are provisioned
 * through the HTTP API's batch route.
 *
 * The fleet grows step by step (STEPS); at each step, after WARMUP_S, for MEASURE_S: latency
 * from the device's sample (its `ts`) to the controller's state and to the dashboard feed
 * (p50/p99), the controller's CPU (share of one core), event-loop utilisation, RSS, bytes
 * written to the state file per second, the devices' backlog (samples taken, not yet
 * acknowledged by the broker). It stops growing at the first step that breaks (p99 over
 * BREAK_P99_MS, or a backlog that grows). Then a steady run (STEADY_S at the largest step that
 * held, RSS every 10 s), an exact loss count (telemetry stopped and drained: every sample each
 * device took against what the controller received, per device), and SIGTERM under load (exit
 * code must be 0).
 *
 * Baseline in the same run (BASELINE_N devices, default 2000): the same controller with its
 * intake over a loopback MQTT client (INTAKE=mqtt: the path an external broker needs), against
 * the in-process subscription the embedded broker gets.
 *
 * Env: STEPS (1000,2000,5000,10000,15000,20000), MEASURE_S (60), WARMUP_S (20), PER_PROCESS (2500),
 * STEADY_S (600; 0 = skip), BREAK_P99_MS (1000), MODELS (1), BASELINE_N (2000; 0 = skip),
 * CONNECT_PER_S (1000), PROFILE (a directory: a CPU profile of the controller per measurement window),
 * SIM_PROFILE (a directory: a CPU profile of each simulator process over its whole life),
 * CONTROLLER_NODE_ARGS (Node.js options of the controller process, e.g. `--max-semi-space-size=64`; default none,
 * as `hostManager` runs), SIM_NICE (10: the simulator processes' niceness, so the simulated fleet on the
 * same cores yields them to the controller it measures, as devices with CPUs of their own would; 0 = equal).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { child } from './sim/child.js';
import { provision, startFleet } from './sim/fleet.js';
import { percentiles } from './sim/histogram.js';

const STEPS = (process.env.STEPS ?? '1000,2000,5000,10000,15000,20000').split(',').map(Number);
const MEASURE_S = Number(process.env.MEASURE_S ?? 60);
const WARMUP_S = Number(process.env.WARMUP_S ?? 20);
const PER_PROCESS = Number(process.env.PER_PROCESS ?? 2500);
const STEADY_S = Number(process.env.STEADY_S ?? 600);
const BREAK_P99_MS = Number(process.env.BREAK_P99_MS ?? 1000);
const MODELS = Number(process.env.MODELS ?? 1);
const BASELINE_N = Number(process.env.BASELINE_N ?? 2000);
const CONNECT_PER_S = Number(process.env.CONNECT_PER_S ?? 1000);
const SIM_PROFILE = process.env.SIM_PROFILE;
const SIM_NICE = Number(process.env.SIM_NICE ?? 10);
const CONTROLLER_ARGS = (process.env.CONTROLLER_NODE_ARGS ?? '').split(' ').filter(Boolean);
const here = (f) => fileURLToPath(new URL(f, import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const out = (o) => console.log(JSON.stringify(o));
const load = () => loadavg().map((l) => Number(l.toFixed(2)));


/** One controller with its dashboard and a growing fleet. */
let sessions = 0;
async function session(work, intake) {
  const id = `${intake}-${sessions++}`;
  const controller = child(here('./controller-process.js'), [], { DATA_DIR: join(work, `controller-${id}`), INTAKE: intake }, CONTROLLER_ARGS);
  const info = await controller.ready;
  const feed = child(here('./telemetry-feed.js'), [info.url], { FEED_TOKEN: info.token });
  await feed.ready;
  const fleets = [];
  let devices = 0;
  let provisionS = 0;
  return {
    controller,
    feed,
    info,
    fleets,
    get devices() {
      return devices;
    },
    get provisionS() {
      return provisionS;
    },
    /** Provisions and connects devices up to `n`; returns the time each took. */
    async growTo(n) {
      const add = n - devices;
      const t0 = Date.now();
      const { creds } = await provision({ url: info.url, token: info.token, count: add, prefix: `sim${String(fleets.length).padStart(2, '0')}-` });
      const provisioned = (Date.now() - t0) / 1000;
      provisionS += provisioned;
      const t1 = Date.now();
      const fleet = await startFleet({ creds, broker: info.brokerUrl, publicKeyPem: info.publicKeyPem, processes: Math.ceil(add / PER_PROCESS), dataRoot: join(work, `devices-${id}-${fleets.length}`), models: MODELS, connectPerS: CONNECT_PER_S, nice: SIM_NICE, execArgv: SIM_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${SIM_PROFILE}`] : [] });
      const connected = (Date.now() - t1) / 1000;
      fleet.telemetry(1);
      fleets.push(fleet);
      devices = n;
      return { added: add, provisionS: provisioned, provisionPerS: Math.round(add / provisioned), connectS: connected, connectPerS: Math.round(add / connected) };
    },
    async simStats() {
      const list = await Promise.all(fleets.map((f) => f.stats()));
      const sum = (k) => list.reduce((n, s) => n + s[k], 0);
      return { pending: sum('pending'), sampled: sum('sampled'), published: sum('published'), connected: sum('connected'), rss: sum('rss'), cpuS: sum('cpuUserS') + sum('cpuSystemS'), sampledById: Object.assign({}, ...list.map((s) => s.sampledById)) };
    },
    async stopFleets() {
      await Promise.all(fleets.map((f) => f.stop()));
    },
  };
}

/** One measurement window at the current size. */
async function measure(s, seconds, profileAs) {
  if (process.env.PROFILE && profileAs) await s.controller.ask({ type: 'profile-start' }, 'profiled');
  const c0 = await s.controller.ask({ type: 'stats', reset: true }, 'stats');
  await s.feed.ask({ type: 'stats', reset: true }, 'stats');
  const sim0 = await s.simStats();
  const rss = [];
  for (let t = 0; t < seconds; t += 5) {
    await sleep(5000);
    rss.push((await s.controller.ask({ type: 'stats' }, 'stats')).rss);
  }
  const c = await s.controller.ask({ type: 'stats', reset: true }, 'stats');
  const f = await s.feed.ask({ type: 'stats', reset: true }, 'stats');
  if (process.env.PROFILE && profileAs) await s.controller.ask({ type: 'profile-stop', file: join(process.env.PROFILE, `controller-${profileAs}.cpuprofile`) }, 'profiled');
  const sim1 = await s.simStats();
  const state = percentiles(c.latency);
  const dash = percentiles(f.latency);
  return {
    devices: s.devices,
    seconds: Number(c.seconds.toFixed(1)),
    messagesPerS: Math.round(state.n / c.seconds),
    stateLatencyMs: { p50: state.p50, p99: state.p99, max: state.max },
    feedLatencyMs: { p50: dash.p50, p99: dash.p99, max: dash.max },
    controller: { cpuCores: Number((c.cpuS / c.seconds).toFixed(2)), kernelShare: Number((c.cpuSystemS / Math.max(1e-9, c.cpuS)).toFixed(2)), perMessageUs: Math.round((c.cpuS * 1e6) / Math.max(1, c.received - c0.received)), eventLoopBusy: Number(c.elu.toFixed(2)), loopDelayP99Ms: Number(c.loopDelayP99Ms.toFixed(1)), rssMB: Math.round(c.rss / 2 ** 20), rssMinMaxMB: [Math.round(Math.min(...rss) / 2 ** 20), Math.round(Math.max(...rss) / 2 ** 20)], heapMB: Math.round(c.heapUsed / 2 ** 20) },
    stateFileBytesPerS: Math.round((c.stateBytes - c0.stateBytes) / c.seconds),
    devicesBacklog: { start: sim0.pending, end: sim1.pending },
    simulators: { cpuCores: Number(((sim1.cpuS - sim0.cpuS) / c.seconds).toFixed(2)), rssMB: Math.round(sim1.rss / 2 ** 20) },
    online: c.online,
    load: load(),
  };
}

/** Telemetry stopped; waits until every device's buffer is empty and the controller stops counting; then per device: taken vs received. */
async function lossCount(s) {
  for (const f of s.fleets) f.telemetry(0);
  let last = -1;
  for (let i = 0; i < 120; i++) {
    await sleep(1000);
    const sim = await s.simStats();
    const c = await s.controller.ask({ type: 'stats' }, 'stats');
    if (sim.pending === 0 && c.received === last) break;
    last = c.received;
  }
  const sim = await s.simStats();
  const c = await s.controller.ask({ type: 'stats', withIds: true }, 'stats');
  let lost = 0;
  let duplicates = 0;
  for (const [id, taken] of Object.entries(sim.sampledById)) {
    const got = c.receivedById[id] ?? 0;
    if (got < taken) lost += taken - got;
    else duplicates += got - taken;
  }
  return { taken: sim.sampled, acknowledgedByBroker: sim.published, receivedByController: c.received, lost, duplicates, outOfOrder: c.outOfOrder, stillBuffered: sim.pending };
}

async function steady(s, seconds) {
  const points = [];
  await s.controller.ask({ type: 'stats', reset: true }, 'stats');
  const t0 = Date.now();
  for (let t = 0; t < seconds; t += 60) {
    const window = await measure(s, Math.min(60, seconds - t));
    points.push({ atS: Math.round((Date.now() - t0) / 1000), rssMB: window.controller.rssMB, p99: window.stateLatencyMs.p99, feedP99: window.feedLatencyMs.p99, backlog: window.devicesBacklog.end, load: window.load });
  }
  const first = points[Math.min(1, points.length - 1)];
  const last = points[points.length - 1];
  return { devices: s.devices, seconds, points, rssGrowthMBPerMin: points.length > 2 ? Number(((last.rssMB - first.rssMB) / ((last.atS - first.atS) / 60)).toFixed(1)) : null, worstP99: Math.max(...points.map((p) => p.p99 ?? 0)) };
}

async function sigtermUnderLoad(s) {
  for (const f of s.fleets) f.telemetry(1);
  await sleep(5000);
  const t0 = Date.now();
  s.controller.c.kill('SIGTERM');
  const exit = await Promise.race([s.controller.exit, sleep(60_000).then(() => ({ code: 'timeout' }))]);
  s.feed.c.kill();
  return { devices: s.devices, exitCode: exit.code, signal: exit.signal ?? null, closeS: (Date.now() - t0) / 1000 };
}

const work = await mkdtemp(join(tmpdir(), 'bench-telemetry-'));
try {
  out({ bench: 'telemetry', setup: { steps: STEPS, measureS: MEASURE_S, warmupS: WARMUP_S, perProcess: PER_PROCESS, models: MODELS, hz: 1, qos: 1, layout: 'controller+embedded broker one process; dashboard feed client one process; simulated devices ceil(N/PER_PROCESS) processes per step', simNice: SIM_NICE, controllerNodeArgs: CONTROLLER_ARGS, cores: (await import('node:os')).availableParallelism(), load: load() } });
  if (BASELINE_N > 0) {
    const results = {};
    for (const intake of ['mqtt', 'in-process']) {
      const s = await session(work, intake);
      await s.growTo(BASELINE_N);
      await sleep(WARMUP_S * 1000);
      results[intake] = await measure(s, Math.min(MEASURE_S, 30), `baseline-${intake}`);
      await s.stopFleets();
      s.controller.c.kill('SIGTERM');
      await s.controller.exit;
      s.feed.c.kill();
    }
    const a = results['mqtt'];
    const b = results['in-process'];
    out({ bench: 'telemetry', mode: 'baseline', devices: BASELINE_N, loopbackClient: a, inProcess: b, controllerCpuRatio: Number((a.controller.cpuCores / Math.max(0.01, b.controller.cpuCores)).toFixed(2)) });
  }

  const s = await session(work, 'in-process');
  let held = 0;
  for (const n of STEPS) {
    const grown = await s.growTo(n);
    await sleep(WARMUP_S * 1000);
    const m = await measure(s, MEASURE_S, String(n));
    const broke = (m.stateLatencyMs.p99 ?? Infinity) > BREAK_P99_MS || m.devicesBacklog.end > m.devicesBacklog.start + n || m.online < n;
    out({ bench: 'telemetry', step: n, ...grown, ...m, broke });
    if (broke) break;
    held = n;
  }
  out({ bench: 'telemetry', provisioned: s.devices, provisionS: Number(s.provisionS.toFixed(1)), provisionPerS: Math.round(s.devices / s.provisionS) });
  if (STEADY_S > 0 && held > 0) {
    // the steady run at the largest size that held (the fleet may have grown past it: shrink is not possible, so it runs at its size)
    out({ bench: 'telemetry', steady: await steady(s, STEADY_S) });
  }
  out({ bench: 'telemetry', loss: await lossCount(s), devices: s.devices });
  out({ bench: 'telemetry', sigterm: await sigtermUnderLoad(s) });
  await s.stopFleets();
  out({ bench: 'telemetry', summary: { held, load: load() } });
} finally {
  await rm(work, { recursive: true, force: true });
}
