/**
 * npm run bench:swap
 *
 * Sustained concurrent inference load while model versions are swapped several times, through
 *   1. the ModelService in this process (IN_FLIGHT workers calling infer in a loop), and
 *   2. the agent's local HTTP API of a device in its own process (swap-server.js), as a real client sees it,
 * for a small model, a 6.3 MB one and a 25 MB one (the last on a worker thread, see session.ts). Every
 * answer is checked against the output of the version it reports (computed in plain JS) and, once an
 * activation has returned, no later request may be answered by an older version.
 *
 * Reported per setup, as one JSON object each: requests answered, failed requests (target 0), wrong
 * answers (target 0), per swap the activation time and the longest gap between two answered requests
 * in a window around the switch (target < 10 ms), and as the baseline the longest gap in equally long
 * windows of the same run without a swap. Then, without load, the longest stall of this thread during an
 * activation with the session built inline and on a worker thread (swap-activation-stall).
 *
 * Env: IN_FLIGHT (concurrent requests, default 64), SWAPS (default 6), THREADS (intra-op threads, default 1),
 * WINDOW_MS (half-width of the window around a switch, default 50), STEADY_MS (load between swaps, at least, default 400).
 */
import { fork } from 'node:child_process';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import http from 'node:http';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { pino } from 'pino';
import { linear, openDevice, workerSessionBytes } from './swap-models.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const models = await import('@edgefleet/device-agent');
const createModelService = (o) => models.createModelService({ workerSessionBytes, ...o });

const IN_FLIGHT = Number(process.env.IN_FLIGHT ?? 64);
const SWAPS = Number(process.env.SWAPS ?? 6);
const THREADS = Number(process.env.THREADS ?? 1);
const WINDOW_MS = Number(process.env.WINDOW_MS ?? 50);
const STEADY_MS = Number(process.env.STEADY_MS ?? 400);
const logger = pino({ level: 'silent' });

const close = (a, b) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= 1e-3 * (1 + Math.abs(b[i])));

// ------------------------------------------------------------------ one setup

async function runSetup({ modelName, inF, outF, via }) {
  const versions = new Map(Array.from({ length: SWAPS + 1 }, (_, i) => [i + 1, linear(inF, outF, i + 1)]));
  // The device: in this process (service), or its own process serving the local HTTP API (http).
  let device;
  if (via === 'http') {
    const child = fork(join(ROOT, 'bench/swap-server.js'), [inF, outF, SWAPS + 1, THREADS].map(String), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const ready = await new Promise((resolve, reject) => {
      child.once('message', resolve);
      child.once('exit', (code) => reject(new Error(`swap server exited ${code}`)));
    });
    const activations = [];
    child.on('message', (m) => activations.shift()?.(m));
    device = {
      port: ready.port,
      installMs: ready.installMs,
      activate: (v) => new Promise((resolve) => {
        activations.push(resolve);
        child.send({ activate: v });
      }),
      close: () => new Promise((resolve) => {
        child.once('exit', resolve);
        child.send({ exit: true });
      }),
    };
  } else {
    const dir = await mkdtemp(join(tmpdir(), 'edgefleet-bench-swap-'));
    const opened = await openDevice({ inF, outF, count: SWAPS + 1, threads: THREADS, createModelService, logger, dir });
    device = {
      models: opened.models,
      installMs: opened.installMs,
      activate: (v) => opened.models.activate('m', v),
      close: async () => {
        await opened.models.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  // For reference: the time onnxruntime takes to build one session of this model (on whichever thread).
  const createMs = [];
  for (let i = 0; i < 7; i++) {
    const t = performance.now();
    const s = await ort.InferenceSession.create(versions.get(1).bytes, {
      intraOpNumThreads: THREADS,
      graphOptimizationLevel: 'all',
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
    createMs.push(performance.now() - t);
    await s.release();
  }
  const x = Array.from({ length: inF }, (_, i) => Math.sin(i));
  const expected = new Map([...versions].map(([v, m]) => [v, m.expected(x)]));
  const body = JSON.stringify({ inputs: { x: { dtype: 'float32', shape: [1, inF], data: x } } });
  const agent = via === 'http' ? new http.Agent({ keepAlive: true, maxSockets: IN_FLIGHT }) : undefined;

  const post = () =>
    new Promise((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port: device.port, method: 'POST', path: '/models/m', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            const parsed = JSON.parse(Buffer.concat(chunks).toString());
            if (res.statusCode !== 200) reject(new Error(`${res.statusCode} ${parsed.error?.code}: ${parsed.error?.message}`));
            else resolve(parsed);
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const infer = via === 'http' ? post : () => device.models.infer({ model: 'm', inputs: { x: { dtype: 'float32', shape: [1, inF], data: x } } });

  let running = true;
  let floor = 1;
  const answeredAt = [];
  let failed = 0;
  let wrong = 0;
  let stale = 0;
  const failures = [];
  async function worker() {
    while (running) {
      const minVersion = floor;
      try {
        const r = await infer();
        answeredAt.push(performance.now());
        if (!close(r.outputs.y.data, expected.get(r.version))) wrong++;
        if (r.version < minVersion) stale++;
      } catch (error) {
        failed++;
        if (failures.length < 5) failures.push(String(error.message ?? error));
      }
    }
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const t0 = performance.now();
  const workers = Array.from({ length: IN_FLIGHT }, () => worker());
  await sleep(STEADY_MS);
  const swaps = [];
  for (let v = 2; v <= SWAPS + 1; v++) {
    const start = performance.now();
    await device.activate(v);
    const end = performance.now();
    floor = v;
    swaps.push({ to: v, start, end });
    // Leave room after the switch for a baseline window as long as the one around it.
    await sleep(Math.max(STEADY_MS, end - start + 4 * WINDOW_MS));
  }
  running = false;
  await Promise.all(workers);
  const elapsedS = (performance.now() - t0) / 1000;
  agent?.destroy();
  await device.close();

  const maxGap = (from, to) => {
    let prev;
    let gap = 0;
    for (const t of answeredAt) {
      if (t < from) {
        prev = t;
        continue;
      }
      if (t > to) {
        if (prev !== undefined) gap = Math.max(gap, t - prev);
        break;
      }
      if (prev !== undefined) gap = Math.max(gap, t - prev);
      prev = t;
    }
    return gap;
  };
  const perSwap = swaps.map((s) => ({
    to: s.to,
    activateMs: round(s.end - s.start),
    maxGapMs: round(maxGap(s.start - WINDOW_MS, s.end + WINDOW_MS)),
  }));
  // Baseline: equally long windows in the steady stretches between swaps (no activation running).
  const baselineGaps = swaps.map((s) => maxGap(s.end + WINDOW_MS, s.end + WINDOW_MS + (s.end - s.start) + 2 * WINDOW_MS));
  const result = {
    bench: 'swap',
    setup: {
      via: via === 'http' ? 'HTTP API of a device process (keep-alive clients in the bench process)' : 'ModelService.infer in process',
      model: modelName,
      modelBytes: versions.get(1).bytes.length,
      inFlight: IN_FLIGHT,
      swaps: SWAPS,
      intraOpThreads: THREADS,
      windowMs: WINDOW_MS,
      cores: availableParallelism(),
      loadAverage1m: round(loadavg()[0]),
    },
    requests: answeredAt.length,
    throughputRps: Math.round(answeredAt.length / elapsedS),
    failed,
    wrongAnswers: wrong,
    staleAnswers: stale,
    maxGapAroundSwapMs: round(Math.max(...perSwap.map((s) => s.maxGapMs))),
    baselineMaxGapMs: round(Math.max(...baselineGaps)),
    // The max is at the mercy of the OS scheduler on a shared machine; the medians compare like with like.
    medianGapAroundSwapMs: round(median(perSwap.map((s) => s.maxGapMs))),
    medianBaselineGapMs: round(median(baselineGaps)),
    targetGapMs: 10,
    met: failed === 0 && wrong === 0 && stale === 0 && Math.max(...perSwap.map((s) => s.maxGapMs)) < 10,
    installMs: round(device.installMs),
    sessionCreateMedianMs: round(median(createMs)),
    perSwap,
    ...(failures.length ? { failures } : {}),
  };
  console.log(JSON.stringify(result));
  return result;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function round(v) {
  return Math.round(v * 100) / 100;
}

// The 25 MB model is above the agent's default workerSessionMb (8), so its sessions live on worker threads.
const setups = [
  { modelName: 'linear 64→32 (small)', inF: 64, outF: 32, via: 'service' },
  { modelName: 'linear 64→32 (small)', inF: 64, outF: 32, via: 'http' },
  { modelName: 'linear 1024→1536 (6.3 MB)', inF: 1024, outF: 1536, via: 'service' },
  { modelName: 'linear 1024→1536 (6.3 MB)', inF: 1024, outF: 1536, via: 'http' },
  { modelName: 'linear 2048→3072 (25 MB, worker thread)', inF: 2048, outF: 3072, via: 'service' },
  { modelName: 'linear 2048→3072 (25 MB, worker thread)', inF: 2048, outF: 3072, via: 'http' },
];
await mkdir(tmpdir(), { recursive: true });
/**
 * Without load: the longest this thread goes without running a timer while one activation runs, with the
 * session built here (inline) and on a worker thread, side by side. This is the stall every other
 * request, MQTT keepalive and telemetry tick of the agent waits out.
 */
async function activationStall({ modelName, inF, outF }) {
  const row = { bench: 'swap-activation-stall', model: modelName, swaps: SWAPS };
  for (const [placement, threshold] of [['inline', Infinity], ['worker', 0]]) {
    const dir = await mkdtemp(join(tmpdir(), 'edgefleet-bench-stall-'));
    const { models } = await openDevice({ inF, outF, count: SWAPS + 1, threads: THREADS, createModelService: (o) => createModelService({ ...o, workerSessionBytes: threshold }), logger, dir });
    const stalls = [];
    for (let v = 2; v <= SWAPS + 1; v++) {
      let last = performance.now();
      let longest = 0;
      const timer = setInterval(() => {
        const now = performance.now();
        longest = Math.max(longest, now - last);
        last = now;
      }, 0);
      await models.activate('m', v);
      clearInterval(timer);
      stalls.push(Math.max(longest, performance.now() - last));
    }
    await models.close();
    await rm(dir, { recursive: true, force: true });
    row[placement] = { medianStallMs: round(median(stalls)), maxStallMs: round(Math.max(...stalls)) };
  }
  console.log(JSON.stringify(row));
  return row;
}

// BENCH_ONLY=<text> runs only the setups whose model name contains it (for tuning runs).
const only = (s) => !process.env.BENCH_ONLY || s.modelName.includes(process.env.BENCH_ONLY);
const results = [];
for (const s of setups.filter(only)) results.push(await runSetup(s));
for (const s of setups.filter((x) => only(x) && x.via === 'service' && x.inF >= 1024)) await activationStall(s);
console.log(
  JSON.stringify({
    bench: 'swap-summary',
    failedTotal: results.reduce((a, r) => a + r.failed, 0),
    wrongTotal: results.reduce((a, r) => a + r.wrongAnswers + r.staleAnswers, 0),
    maxGapAroundSwapMs: Object.fromEntries(results.map((r) => [`${r.setup.model} via ${r.setup.via.split(' ')[0]}`, r.maxGapAroundSwapMs])),
    baselineMaxGapMs: Object.fromEntries(results.map((r) => [`${r.setup.model} via ${r.setup.via.split(' ')[0]}`, r.baselineMaxGapMs])),
    medianGapAroundSwapMs: Object.fromEntries(results.map((r) => [`${r.setup.model} via ${r.setup.via.split(' ')[0]}`, r.medianGapAroundSwapMs])),
    medianBaselineGapMs: Object.fromEntries(results.map((r) => [`${r.setup.model} via ${r.setup.via.split(' ')[0]}`, r.medianBaselineGapMs])),
  }),
);
