/**
 * npm run bench:footprint
 *
 * The device agent's footprint on a board: resident memory (VmRSS) and CPU (share of one core) when
 * idle without a model, with one small model active, and after 1,000 inferences; its time from start
 * to online (the retained status seen by an operator) and the small model's load time (models.activate
 * round trip, runtime load included) and inference latency. For
 *   - x64: the agent as its bundle installs it (its Node.js, the launcher's V8 flags), beside the same
 *     agent run from the checkout with Node's defaults, and a bare idle Node.js (the floor);
 *   - arm64 and armv7, EMULATED (qemu-user, a Debian root, the bundle installed with install.sh):
 *     memory is the qemu process's (emulator included) and CPU is emulated CPU, so they only show
 *     orders of magnitude and what changes between phases.
 * Broker in its own process; every inference answer is checked against the model's output computed
 * here before timings count. Targets: idle without a model ≤ 60 MB RSS and < 1 % of a core.
 *
 * Env: BOARDS (default "x64,arm64,armv7"), SETTLE_S (before each idle window, default 10),
 * IDLE_S (idle window, default 20), INFERENCES (default 1000), IN_FLIGHT (default 4).
 */
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { chown, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { extract } from 'tar';
import { ManifestSchema, StatusMessageSchema, chunkHashes, generateFleetKeys, sha256Hex, topics } from '@edgefleet/protocol';
import { createRequester } from '@edgefleet/host-manager';
import { boardRoot, buildAgentBundle, killBoardProcess, runInBoard, spawnInBoard } from '@edgefleet/agent-bundle';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { createModelService } = await import(join(ROOT, 'device-agent/dist/src/models/index.js'));
const BOARDS = (process.env.BOARDS ?? 'x64,arm64,armv7').split(',');
const SETTLE_S = Number(process.env.SETTLE_S ?? 10);
const IDLE_S = Number(process.env.IDLE_S ?? 20);
const INFERENCES = Number(process.env.INFERENCES ?? 1000);
const IN_FLIGHT = Number(process.env.IN_FLIGHT ?? 4);
const OPERATOR = { id: 'bench-op', token: 'bench-operator-token-01' };
const TICKS = 100; // USER_HZ on Linux
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round = (v, d = 1) => Math.round(v * 10 ** d) / 10 ** d;

// ------------------------------------------------------------------ the small model: x[1,16] → tanh(xW1+b1)W2+b2 → y[1,4]

function seeded(seed) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5);
}
const rnd = seeded(5);
const W1 = Float32Array.from({ length: 16 * 32 }, rnd);
const B1 = Float32Array.from({ length: 32 }, rnd);
const W2 = Float32Array.from({ length: 32 * 4 }, rnd);
const B2 = Float32Array.from({ length: 4 }, rnd);

async function smallModel() {
  const { default: onnxProto } = await import('onnx-proto');
  const { onnx } = onnxProto;
  const F = onnx.TensorProto.DataType.FLOAT;
  const t = (name, dims, data) => ({ name, dims, dataType: F, rawData: new Uint8Array(data.buffer) });
  const vi = (name, dims) => ({ name, type: { tensorType: { elemType: F, shape: { dim: dims.map((d) => ({ dimValue: d })) } } } });
  const n = (opType, input, output) => ({ opType, input, output, name: output[0] });
  const model = onnx.ModelProto.create({
    irVersion: 8, producerName: 'bench', opsetImport: [{ domain: '', version: 13 }],
    graph: { name: 'small', input: [vi('x', [1, 16])], output: [vi('y', [1, 4])], initializer: [t('W1', [16, 32], W1), t('b1', [32], B1), t('W2', [32, 4], W2), t('b2', [4], B2)],
      node: [n('MatMul', ['x', 'W1'], ['a']), n('Add', ['a', 'b1'], ['b']), n('Tanh', ['b'], ['h']), n('MatMul', ['h', 'W2'], ['c']), n('Add', ['c', 'b2'], ['y'])] },
  });
  return Buffer.from(onnx.ModelProto.encode(model).finish());
}

function expected(x) {
  const h = Array.from({ length: 32 }, (_, j) => Math.tanh(x.reduce((s, v, i) => s + v * W1[i * 32 + j], B1[j])));
  return Array.from({ length: 4 }, (_, k) => h.reduce((s, v, j) => s + v * W2[j * 4 + k], B2[k]));
}

// ------------------------------------------------------------------ processes and measurements

function proc(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const rss = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { ppid: Number(f[1]), cpuTicks: Number(f[11]) + Number(f[12]), rssKb: rss ? Number(rss[1]) : 0 };
}

/** The agent's own process below `pid` (the launcher and runuser are small shells around it). */
function agentPid(pid) {
  const all = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
  const family = new Set([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of all) {
      try {
        if (!family.has(p) && family.has(proc(p).ppid)) (family.add(p), (grew = true));
      } catch {
        // the process ended meanwhile
      }
    }
  }
  for (const p of family) {
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('deviceAgent.js')) return p;
    } catch {
      // ended meanwhile
    }
  }
  return pid;
}

/** RSS at the end and CPU over an idle window, of the agent's process. */
async function idle(pid, label) {
  await sleep(SETTLE_S * 1000);
  const p = agentPid(pid);
  const a = proc(p);
  const t = performance.now();
  await sleep(IDLE_S * 1000);
  const b = proc(p);
  return { phase: label, rssMB: round(b.rssKb / 1024), cpuPercentOfCore: round(((b.cpuTicks - a.cpuTicks) / TICKS / ((performance.now() - t) / 1000)) * 100, 2) };
}

function once(emitterSetup) {
  return new Promise((resolve, reject) => emitterSetup(resolve, reject));
}

async function startBroker(devices) {
  const script = `
    const { createBroker, staticCredentials } = await import(${JSON.stringify(join(ROOT, 'broker/dist/src/index.js'))});
    const { hashSecret } = await import(${JSON.stringify(join(ROOT, 'packages/node-io/dist/src/index.js'))});
    const creds = JSON.parse(process.env.CREDS).map((c) => ({ ...c, groups: [], secretHash: hashSecret(c.token) }));
    const b = await createBroker({ tcp: { host: '127.0.0.1', port: 0 }, credentials: staticCredentials(creds) });
    console.log(JSON.stringify({ url: b.url }));`;
  const creds = [{ role: 'operator', id: OPERATOR.id, token: OPERATOR.token }, ...devices.map((d) => ({ role: 'device', id: d.id, token: d.token }))];
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, CREDS: JSON.stringify(creds) }, stdio: ['ignore', 'pipe', 'inherit'] }); // its errors shown: a broker that cannot start must not leave the bench waiting
  child.on('exit', (code) => code && console.error(`the bench's broker exited with ${code}`));
  const url = await once((resolve) => child.stdout.on('data', (d) => {
    const m = /"url":"([^"]+)"/.exec(String(d));
    if (m) resolve(m[1]);
  }));
  return { child, url };
}

// ------------------------------------------------------------------ one agent through every phase

async function preinstall(dataDir, device, bytes) {
  const svc = await createModelService({ dataDir, threads: 1, logger: pino({ level: 'silent' }) });
  const manifest = ManifestSchema.parse({
    kind: 'model', name: 'small', version: 1, sha256: sha256Hex(bytes), length: bytes.length,
    issuedAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 86_400_000).toISOString(),
    target: { devices: [device] }, chunking: { size: 262144, sha256: chunkHashes(bytes, 262144) },
  });
  await mkdir(dataDir, { recursive: true });
  await writeFile(join(dataDir, 'staged.onnx'), bytes);
  await svc.install(manifest, join(dataDir, 'staged.onnx')); // installed, not active: activated during the run
  await svc.close();
}

async function inferences(requester, device) {
  const inputs = Array.from({ length: 16 }, (_, k) => Array.from({ length: 16 }, (_, i) => Math.sin(i + k) * 2));
  for (const [k, x] of inputs.entries()) {
    const r = await requester.request(device, 'infer', { model: 'small', inputs: { x: { dtype: 'float32', shape: [1, 16], data: x } } }, 120_000);
    const want = expected(x);
    const worst = Math.max(...r.outputs.y.data.map((v, i) => Math.abs(v - want[i])));
    if (!(worst < 1e-4)) throw new Error(`wrong answer from ${device} for input ${k}: off by ${worst}`);
  }
  const latencies = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
    while (next < INFERENCES) {
      const x = inputs[next++ % inputs.length];
      const t = performance.now();
      await requester.request(device, 'infer', { model: 'small', inputs: { x: { dtype: 'float32', shape: [1, 16], data: x } } }, 120_000);
      latencies.push(performance.now() - t);
    }
  }));
  latencies.sort((a, b) => a - b);
  return { inferences: INFERENCES, inFlight: IN_FLIGHT, totalS: round((performance.now() - t0) / 1000, 2), p50Ms: round(latencies[Math.floor(latencies.length / 2)], 2), p95Ms: round(latencies[Math.floor(latencies.length * 0.95)], 2) };
}

async function measure(target, operator, requester) {
  const online = once((resolve) => {
    const onMessage = (topic, payload) => {
      if (topic !== topics.device(target.device, 'status') || payload.length === 0) return;
      const s = StatusMessageSchema.safeParse(JSON.parse(String(payload)));
      if (s.success && s.data.online && s.data.ts >= started) (operator.off('message', onMessage), resolve(s.data));
    };
    operator.on('message', onMessage);
  });
  const started = Date.now();
  const child = target.start();
  const status = await Promise.race([online, sleep(300_000).then(() => { throw new Error(`${target.name} did not come online`); })]);
  const base = { bench: 'footprint', target: target.name, emulated: target.emulated, runtime: status.device.runtime?.name ?? null, node: target.node };
  const results = [{ ...base, phase: 'start to online', ms: Date.now() - started }];
  try {
    results.push({ ...base, ...(await idle(child.pid, 'idle, no model')) });
    const t = performance.now();
    await requester.request(target.device, 'models.activate', { model: 'small', version: 1 }, 300_000);
    results.push({ ...base, phase: 'load small model (activate, runtime included)', ms: round(performance.now() - t) });
    results.push({ ...base, ...(await idle(child.pid, 'idle, one small model')) });
    results.push({ ...base, phase: `${INFERENCES} inferences (MQTT)`, ...(await inferences(requester, target.device)) });
    results.push({ ...base, ...(await idle(child.pid, `idle, after ${INFERENCES} inferences`)) });
  } finally {
    target.stop(child);
  }
  return results;
}

// ------------------------------------------------------------------ the targets

function run(command, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} ${args.join(' ')} failed (${code}): ${out}`))));
  });
}

function provisioning(device, broker, keys) {
  return JSON.stringify({ config: { broker, device: device.id, token: device.token, fleetPublicKey: keys.publicKeyPem, groups: [], httpPort: 0 } });
}

const stopGroup = (child) => {
  killBoardProcess(child, 'SIGTERM');
  setTimeout(() => killBoardProcess(child, 'SIGKILL'), 5000).unref();
};

async function checkoutTarget(work, device, broker, model) {
  const dataDir = join(work, 'checkout-data');
  await preinstall(dataDir, device.id, model);
  return {
    name: 'x64 agent from the checkout, Node.js defaults', device: device.id, emulated: false, node: process.version,
    start: () => spawn(process.execPath, [join(ROOT, 'device-agent/dist/bin/deviceAgent.js'), '--broker', broker, '--device', device.id, '--data-dir', dataDir, '--http-port', '0'], { env: { ...process.env, EDGEFLEET_TOKEN: device.token }, stdio: 'ignore', detached: true }),
    stop: stopGroup,
  };
}

async function nativeBundleTarget(work, device, broker, keys, model) {
  const bundle = await buildAgentBundle({ arch: 'x64', outDir: work, compression: 1 });
  await mkdir(join(work, 'x64'), { recursive: true });
  await extract({ file: bundle.file, cwd: join(work, 'x64') });
  await writeFile(join(work, 'x64.json'), provisioning(device, broker, keys));
  const p = { prefix: join(work, 'x64-opt'), etc: join(work, 'x64-etc'), data: join(work, 'x64-data') };
  await run(join(work, 'x64', bundle.name, 'install.sh'), ['--config', join(work, 'x64.json'), '--prefix', p.prefix, '--etc', p.etc, '--data', p.data, '--user', 'root', '--unit-dir', join(work, 'units'), '--no-systemd']);
  await preinstall(p.data, device.id, model);
  return {
    name: 'x64 bundle (its Node.js, launcher flags)', device: device.id, emulated: false, node: bundle.node,
    start: () => spawn(join(p.prefix, 'agent', 'launcher'), ['--config', join(p.etc, 'agent.json')], { stdio: 'ignore', detached: true }),
    stop: stopGroup,
  };
}

async function boardTarget(arch, work, device, broker, keys, model) {
  const root = await boardRoot(arch);
  const bundle = await buildAgentBundle({ arch, outDir: work, compression: 1 });
  await mkdir(join(root.dir, 'tmp', 'bundle'), { recursive: true });
  await extract({ file: bundle.file, cwd: join(root.dir, 'tmp', 'bundle') });
  await writeFile(join(root.dir, 'tmp', 'device.json'), provisioning(device, broker, keys));
  const installed = await runInBoard(root, [`/tmp/bundle/${bundle.name}/install.sh`, '--config', '/tmp/device.json']);
  if (installed.code !== 0) throw new Error(`install in the ${arch} board failed: ${installed.stderr}`);
  const data = join(root.dir, 'var/lib/edgefleet-agent');
  await preinstall(data, device.id, model);
  const [uid, gid] = readFileSync(join(root.dir, 'etc/passwd'), 'utf8').split('\n').find((l) => l.startsWith('edgefleet:')).split(':').slice(2, 4).map(Number);
  const own = async (dir) => {
    await chown(dir, uid, gid);
    for (const e of await readdir(dir, { withFileTypes: true })) e.isDirectory() ? await own(join(dir, e.name)) : await chown(join(dir, e.name), uid, gid);
  };
  await own(data);
  return {
    name: `${arch} bundle, EMULATED (qemu-user)`, device: device.id, emulated: true, node: bundle.node, cleanup: () => root.cleanup(),
    start: () => spawnInBoard(root, ['runuser', '-u', 'edgefleet', '--', '/opt/edgefleet/agent/launcher', '--config', '/etc/edgefleet/agent.json'], { detached: true }),
    stop: (child) => killBoardProcess(child, 'SIGKILL'),
  };
}

async function bareNode() {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1e6)'], { stdio: 'ignore' });
  try {
    return { bench: 'footprint', target: 'bare Node.js (the floor)', emulated: false, node: process.version, ...(await idle(child.pid, 'idle')) };
  } finally {
    child.kill('SIGKILL');
  }
}

// ------------------------------------------------------------------ main

const work = await mkdtemp(join(tmpdir(), 'bench-footprint-'));
const keys = generateFleetKeys();
const names = ['x64-checkout', ...BOARDS.map((b) => (b === 'x64' ? 'x64-bundle' : b))];
const devices = Object.fromEntries(names.map((n) => [n, { id: `fp-${n}`, token: `fp-${n}-token-0123456789` }]));
const broker = await startBroker(Object.values(devices));
const operator = await mqtt.connectAsync(broker.url, { clientId: `${OPERATOR.id}-1`, username: OPERATOR.id, password: OPERATOR.token, protocolVersion: 4 });
await operator.subscribeAsync(topics.allDevices('status'), { qos: 1 });
const requester = await createRequester(operator);
const all = [];
try {
  const model = await smallModel();
  const floor = await bareNode();
  console.log(JSON.stringify(floor));
  all.push(floor);
  for (const name of names) {
    const target =
      name === 'x64-checkout' ? await checkoutTarget(work, devices[name], broker.url, model)
      : name === 'x64-bundle' ? await nativeBundleTarget(work, devices[name], broker.url, keys, model)
      : await boardTarget(name, work, devices[name], broker.url, keys, model);
    try {
      for (const r of await measure(target, operator, requester)) {
        console.log(JSON.stringify(r));
        all.push(r);
      }
    } finally {
      await target.cleanup?.();
    }
  }
  const idleNoModel = all.filter((r) => r.phase === 'idle, no model');
  console.log(JSON.stringify({
    bench: 'footprint', summary: true,
    idleNoModel: idleNoModel.map((r) => ({ target: r.target, rssMB: r.rssMB, cpuPercentOfCore: r.cpuPercentOfCore, meets: !r.emulated ? r.rssMB <= 60 && r.cpuPercentOfCore < 1 : 'n/a (emulated)' })),
    floorRssMB: floor.rssMB, targets: { rssMB: 60, cpuPercentOfCore: 1 },
  }));
} finally {
  requester.close();
  operator.end(true);
  broker.child.kill('SIGKILL');
  await rm(work, { recursive: true, force: true });
}
