/**
 * npm run bench:rollout — a 1 MB model to 1,000 simulated devices.
 *
 * Layout: this process runs the controller as `hostManager` does (embedded
 * broker + controller + API in one process); the devices are lightweight
 * agents (bench/rollout-devices.js) in WORKERS separate processes, each device
 * with its own MQTT connection and its own provisioned credential, running the
 * agent's real transfer receiver. Timed: from the rollout command (one wave,
 * no soak) to every device having acknowledged the commit (rollout
 * `succeeded`). Verified: every device's stored file has the model's sha256
 * and the new version active.
 *
 * Two rollouts in one run, side by side:
 *   fanout   target group:bench, each chunk published once to the group topic
 *   unicast  target all, every chunk published to each device (the baseline)
 * Published anchor: Greengrass notifies at most 1,000 devices per minute.
 *
 * Env: DEVICES (1000), WORKERS (4), SIZE_MB (1), CHUNK_KB (256: the transfer default),
 * DEVICE_DATA_ROOT (where the simulated devices keep their files; default the temp dir).
 */
import { fork } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import onnxProto from 'onnx-proto';
import { pino } from 'pino';
import { createManager } from '@edgefleet/host-manager';

const DEVICES = Number(process.env.DEVICES ?? 1000);
const WORKERS = Number(process.env.WORKERS ?? 4);
const SIZE_MB = Number(process.env.SIZE_MB ?? 1);
const CHUNK_KB = Number(process.env.CHUNK_KB ?? 256);
const GROUP = 'bench';

/** y = x + W with W a SIZE_MB initializer: a valid ONNX file of the wanted size; `seed` makes versions differ. */
function model(seed) {
  const { onnx } = onnxProto;
  const n = Math.floor((SIZE_MB * 1024 * 1024) / 4) - 64;
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) w[i] = ((i * 2654435761 + seed) % 1000) / 1000;
  const vi = (name) => ({ name, type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: [{ dimValue: n }] } } } });
  const m = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'edgefleet-bench',
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'bench',
      node: [{ opType: 'Add', input: ['x', 'W'], output: ['y'], name: 'add' }],
      input: [vi('x')],
      output: [vi('y')],
      initializer: [{ name: 'W', dims: [n], dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(w.buffer) }],
    },
  });
  return Buffer.from(onnx.ModelProto.encode(m).finish());
}

/** PROFILE=<dir>: a CPU profile of the controller process during each timed rollout only. */
async function startProfile() {
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return async (file) => {
    const { profile } = await session.post('Profiler.stop');
    await writeFile(file, JSON.stringify(profile));
    session.disconnect();
  };
}

const work = await mkdtemp(join(tmpdir(), 'bench-rollout-'));
const logger = pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2));
const manager = await createManager({
  dataDir: join(work, 'controller'),
  mqttHost: '127.0.0.1',
  mqttPort: 0,
  mqttWsPort: false,
  httpPort: 0,
  logger,
  tickMs: 50,
  requestTimeoutMs: 60_000,
  chunkSize: CHUNK_KB * 1024,
});
const workers = [];
try {
  const t0 = Date.now();
  const creds = [];
  // Provisioned as an operator would, in batches so the state writes coalesce (each token costs one scrypt hash).
  for (let i = 0; i < DEVICES; i += 50) {
    const ids = Array.from({ length: Math.min(50, DEVICES - i) }, (_, k) => `sim-${String(i + k).padStart(4, '0')}`);
    const made = await Promise.all(ids.map((id) => manager.ops.addDevice({ id, groups: [GROUP], actor: 'operator:bench' })));
    made.forEach((r, k) => creds.push({ id: ids[k], token: r.token }));
  }
  const provisionS = (Date.now() - t0) / 1000;

  const t1 = Date.now();
  const per = Math.ceil(DEVICES / WORKERS);
  await Promise.all(
    Array.from({ length: WORKERS }, (_, w) => {
      // Each real device has its own libuv thread pool for its file system calls (fsync of the staging
      // file...); a process simulating 250 devices gets a larger pool so their fsyncs do not queue behind 4 threads.
      const child = fork(fileURLToPath(new URL('./rollout-devices.js', import.meta.url)), [], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '64' },
      });
      workers.push(child);
      return new Promise((resolve, reject) => {
        child.once('message', (m) => (m.type === 'ready' ? resolve(m) : reject(new Error(JSON.stringify(m)))));
        child.once('exit', (code) => reject(new Error(`device worker ${w} exited with ${code}`)));
        child.send({
          type: 'start',
          devices: creds.slice(w * per, (w + 1) * per),
          broker: manager.brokerUrl,
          group: GROUP,
          publicKeyPem: manager.keys.publicKeyPem,
          dataRoot: join(process.env.DEVICE_DATA_ROOT ?? work, `devices-${w}`),
        });
      });
    }),
  );
  // The controller learns presence from the retained status messages.
  while (manager.state.devices().filter((d) => d.online).length < DEVICES) await new Promise((r) => setTimeout(r, 50));
  const connectS = (Date.now() - t1) / 1000;

  const verify = (name, version, sha256) =>
    Promise.all(
      workers.map(
        (child) =>
          new Promise((resolve) => {
            child.once('message', resolve);
            child.send({ type: 'verify', model: name, version, sha256 });
          }),
      ),
    ).then((answers) => ({ checked: answers.reduce((n, a) => n + a.count, 0), bad: answers.flatMap((a) => a.bad) }));

  const results = [];
  for (const [label, to, seed] of [
    ['fanout', { kind: 'group', name: GROUP }, 1],
    ['unicast', { kind: 'all' }, 2],
  ]) {
    const file = join(work, `bench-${seed}.onnx`);
    await writeFile(file, model(seed));
    const rec = await manager.registry.add(file, { name: 'benchmodel' });
    manager.metrics.deliveryPhase.reset();
    const profiler = process.env.PROFILE ? await startProfile() : null;
    const start = process.hrtime.bigint();
    const rollout = await manager.ops.deploy({
      model: 'benchmodel',
      version: rec.version,
      to,
      policy: { canary: 0, waves: [100], soakS: 0, minRequests: 0 },
      actor: 'operator:bench',
    });
    const done = await manager.rollouts.settled(rollout.id);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    if (profiler) await profiler(join(process.env.PROFILE, `controller-${label}.cpuprofile`));
    const states = Object.values(done.devices).map((d) => d.state);
    const acknowledged = states.filter((s) => s === 'switched').length;
    const check = await verify('benchmodel', rec.version, rec.sha256);
    const result = {
      bench: 'rollout',
      mode: label,
      devices: DEVICES,
      workers: WORKERS,
      modelBytes: rec.length,
      chunkSize: CHUNK_KB * 1024,
      status: done.status,
      acknowledged,
      verified: check.checked - check.bad.length,
      seconds: Number(seconds.toFixed(3)),
      devicesPerMinute: Math.round((acknowledged / seconds) * 60),
      vsGreengrass1000PerMinute: Number(((acknowledged / seconds) * 60 / 1000).toFixed(1)),
      phasesS: Object.fromEntries(
        (await manager.metrics.deliveryPhase.get()).values.filter((v) => v.metricName?.endsWith('_sum')).map((v) => [v.labels.phase, Number(v.value.toFixed(3))]),
      ),
      targetUnder10s: seconds < 10 && acknowledged === DEVICES && check.bad.length === 0,
      ...(done.status !== 'succeeded' ? { reason: done.reason, firstErrors: Object.values(done.devices).filter((d) => d.error).slice(0, 3).map((d) => ({ id: d.id, error: d.error })) } : {}),
    };
    results.push(result);
    console.log(JSON.stringify(result));
  }
  const [fan, uni] = results;
  console.log(
    JSON.stringify({
      bench: 'rollout',
      summary: `${DEVICES} devices, ${SIZE_MB} MB: group fan-out ${fan.seconds} s vs per-device unicast ${uni.seconds} s`,
      fanoutSpeedup: Number((uni.seconds / fan.seconds).toFixed(2)),
      setup: { provisionS, connectS, layout: `controller+embedded broker in one process, ${WORKERS} device processes (libuv pool ${process.env.UV_THREADPOOL_SIZE ?? 64} each), one MQTT connection and credential per device`, deviceDataRoot: process.env.DEVICE_DATA_ROOT ?? 'temp dir (disk)' },
    }),
  );
} finally {
  await Promise.all(
    workers.map(
      (child) =>
        new Promise((resolve) => {
          if (child.exitCode !== null || !child.connected) return resolve();
          child.once('exit', resolve);
          child.send({ type: 'stop' });
          setTimeout(() => child.kill('SIGKILL'), 5000).unref();
        }),
    ),
  );
  await manager.close();
  await rm(work, { recursive: true, force: true });
  if (process.env.DEVICE_DATA_ROOT) for (let w = 0; w < WORKERS; w++) await rm(join(process.env.DEVICE_DATA_ROOT, `devices-${w}`), { recursive: true, force: true });
}
