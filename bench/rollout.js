/**
 * npm run bench:rollout — a 1 MB model to DEVICES simulated devices (default 1,000; 10,000 is the scale target).
 *
 * Layout: this process runs the controller as `hostManager` does (embedded broker + controller
 * + API in one process); the devices are bench/sim's simulated devices (the agent's
 * connection, dispatcher and real transfer receiver: manifest signature, target, expiry,
 * per-chunk and whole-file sha256, staging, commit; only the model runtime is a file store)
 * in ceil(DEVICES / PER_PROCESS) processes, each device with its own MQTT connection and
 * its own credential, provisioned through the HTTP API's batch route. Timed: from the
 * rollout command (one wave, no soak) to every device having acknowledged the commit
 * (rollout `succeeded`). Verified: every device's stored file has the model's sha256 and
 * the new version is active.
 *
 * Side by side in one run:
 *   fanout   target group:bench: each chunk published once to the group topic, and the
 *            offer, status and commit requests once each to the group's command topic
 *   unicast  target all: every chunk and request to each device (the baseline; skipped
 *            above UNICAST_MAX devices, default 2,000, where it takes minutes)
 * Published anchor: Greengrass notifies at most 1,000 devices per minute.
 *
 * Env: DEVICES (1000), PER_PROCESS (2500), SIZE_MB (1), CHUNK_KB (256: the transfer default),
 * DEVICE_DATA_ROOT (where the simulated devices keep their files; default the temp dir),
 * UNICAST_MAX (2000), PROFILE (a directory: CPU profile of the controller per timed rollout).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { pino } from 'pino';
import { createManager } from '@edgefleet/host-manager';
import { provision, startFleet } from './sim/fleet.js';

const DEVICES = Number(process.env.DEVICES ?? 1000);
const PER_PROCESS = Number(process.env.PER_PROCESS ?? 2500);
const SIZE_MB = Number(process.env.SIZE_MB ?? 1);
const CHUNK_KB = Number(process.env.CHUNK_KB ?? 256);
const UNICAST_MAX = Number(process.env.UNICAST_MAX ?? 2000);
const GROUP = 'bench';
const load = () => loadavg().map((l) => Number(l.toFixed(2)));

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
const dataRoot = await mkdtemp(join(process.env.DEVICE_DATA_ROOT ?? work, 'devices-'));
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
let fleet;
try {
  const t0 = Date.now();
  const { creds } = await provision({ url: manager.url, token: manager.operator.token, count: DEVICES, prefix: 'sim-', groups: [GROUP] });
  const provisionS = (Date.now() - t0) / 1000;
  const t1 = Date.now();
  const execArgv = process.env.PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.PROFILE}`] : [];
  fleet = await startFleet({ creds, broker: manager.brokerUrl, publicKeyPem: manager.keys.publicKeyPem, processes: Math.ceil(DEVICES / PER_PROCESS), dataRoot, connectPerS: 1000, execArgv });
  // The controller learns presence from the retained status messages.
  while (manager.state.devices().filter((d) => d.online).length < DEVICES) await new Promise((r) => setTimeout(r, 50));
  const connectS = (Date.now() - t1) / 1000;

  const results = [];
  const modes = [['fanout', { kind: 'group', name: GROUP }, 1]];
  if (DEVICES <= UNICAST_MAX) modes.push(['unicast', { kind: 'all' }, 2]);
  for (const [label, to, seed] of modes) {
    const file = join(work, `bench-${seed}.onnx`);
    await writeFile(file, model(seed));
    const rec = await manager.registry.add(file, { name: 'benchmodel' });
    manager.metrics.deliveryPhase.reset();
    const loadBefore = load();
    const profiler = process.env.PROFILE ? await startProfile() : null;
    const simBefore = await fleet.stats();
    const cpuBefore = process.cpuUsage();
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
    const cpu = process.cpuUsage(cpuBefore);
    const simAfter = await fleet.stats();
    if (profiler) await profiler(join(process.env.PROFILE, `controller-${label}.cpuprofile`));
    const states = Object.values(done.devices).map((d) => d.state);
    const acknowledged = states.filter((s) => s === 'switched').length;
    const check = await fleet.verify('benchmodel', rec.version, rec.sha256);
    const result = {
      bench: 'rollout',
      mode: label,
      devices: DEVICES,
      processes: fleet.workers.length,
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
      // CPU seconds used while the rollout ran: on a shared machine these say more than the wall time
      cpuS: { controller: Number(((cpu.user + cpu.system) / 1e6).toFixed(2)), devices: Number((simAfter.cpuUserS + simAfter.cpuSystemS - simBefore.cpuUserS - simBefore.cpuSystemS).toFixed(2)) },
      target: DEVICES >= 10_000 ? 'under 30 s' : 'under 5 s at 1,000',
      load: { before: loadBefore, after: load() },
      ...(done.status !== 'succeeded' ? { reason: done.reason, firstErrors: Object.values(done.devices).filter((d) => d.error).slice(0, 3).map((d) => ({ id: d.id, error: d.error })) } : {}),
    };
    results.push(result);
    console.log(JSON.stringify(result));
  }
  const [fan, uni] = results;
  console.log(
    JSON.stringify({
      bench: 'rollout',
      summary: `${DEVICES} devices, ${SIZE_MB} MB: group fan-out ${fan.seconds} s` + (uni ? ` vs per-device unicast ${uni.seconds} s` : ' (unicast skipped above UNICAST_MAX)'),
      ...(uni ? { fanoutSpeedup: Number((uni.seconds / fan.seconds).toFixed(2)) } : {}),
      setup: { provisionS, provisionPerS: Math.round(DEVICES / provisionS), connectS, connectPerS: Math.round(DEVICES / connectS), layout: `controller+embedded broker in one process, ${fleet.workers.length} device processes, one MQTT connection and credential per device`, deviceDataRoot: process.env.DEVICE_DATA_ROOT ?? 'temp dir (disk)' },
    }),
  );
} finally {
  await fleet?.stop();
  await manager.close();
  await rm(work, { recursive: true, force: true });
  await rm(dataRoot, { recursive: true, force: true });
}
