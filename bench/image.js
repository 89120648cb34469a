// npm run bench:image — a ~100 MB Docker image to 1, 10 and 50 devices through the fleet, beside
// `docker save IMAGE | ssh device docker load` in a loop, in one run, verified on every device.
//
// The image: `docker import` of a root filesystem holding one file of random bytes (incompressible,
// as layers of binaries are), in the operator's engine. Ours: `docker save` streamed through dockerode
// into the host's image registry (as `hostManager image push` does), then the host's delivery (signed
// manifest, 1 MiB chunks, group fan-out through the broker) to devices that each run the agent's real
// transfer receiver and containers service (bench/image-receiver.js: archive checks, `docker load` with
// tags stripped, the engine's image ID checked against the pin); the image has no container spec, so it
// is installed, not run. Baseline: for each device in turn, `docker save ID | ssh root@127.0.0.1
// docker -H <device engine> load` through a real sshd. Both are verified the same way: every device's
// engine is asked for the pinned image ID afterwards.
//
// What is shared, and how both sides are kept alike: every "device" is on this machine. By default each
// device gets its own Docker engine (dockerd with its own data root, exec root, socket and bridge, no
// iptables; needs root), so every load is a real load into an engine that does not have the image; between runs the
// image is removed from every device engine, for ours and the baseline alike. BENCH_ENGINES=shared points
// every device at this machine's one engine instead: it then holds the image after the first load, so
// later loads skip storing its layer (the agent skips the load, `docker load` still reads the archive):
// the output says so, and the ratio is not comparable to per-device engines.
//
// Options (env): BENCH_DEVICES=1,10,50  BENCH_MB=100  BENCH_ENGINES=per-device|shared  BENCH_CHUNK_KIB=1024  BENCH_WINDOW=16
import { fork, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { cpus, freemem } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import mqtt from 'mqtt';
import { createImageRegistry, createRequester, deliverModel, loadOrCreateFleetKeys, openState } from '@edgefleet/host-manager';
import { cpuSeconds, ipc, out, round2, run, seconds, startSshd, waitLine } from './lib.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const DEVICE_COUNTS = (process.env.BENCH_DEVICES ?? '1,10,50').split(',').map(Number);
const MB = Number(process.env.BENCH_MB ?? 100);
const PER_DEVICE = (process.env.BENCH_ENGINES ?? 'per-device') !== 'shared';
const CHUNK = Number(process.env.BENCH_CHUNK_KIB ?? 1024) * 1024;
const WINDOW = Number(process.env.BENCH_WINDOW ?? 16);
const MAX = Math.max(...DEVICE_COUNTS);
const MAIN_SOCKET = '/var/run/docker.sock';

/**
 * A device's own engine: dockerd (and the containerd it starts) with its own roots, socket and bridge.
 * Never `--bridge=none`: a dockerd started so deletes the interface docker0, which this machine's own
 * engine uses. Each bench engine gets a bridge of its own (made here, removed at the end) and no iptables.
 */
async function startEngine(dir, index) {
  await mkdir(dir, { recursive: true });
  const socket = join(dir, 's');
  const bridge = `efbench${index}`;
  await run('ip', ['link', 'add', bridge, 'type', 'bridge']);
  bridges.push(bridge);
  await run('ip', ['addr', 'add', `10.213.${index}.1/24`, 'dev', bridge]);
  const child = spawn('dockerd', ['--data-root', join(dir, 'root'), '--exec-root', join(dir, 'x'), '--pidfile', join(dir, 'pid'), '-H', `unix://${socket}`, `--bridge=${bridge}`, '--iptables=false', '--ip-masq=false', '--ip6tables=false'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => (log = (log + d.toString()).slice(-4000)));
  const docker = new Docker({ socketPath: socket });
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`dockerd for ${dir} exited: ${log}`);
    try {
      await docker.ping();
      break;
    } catch {
      if (i > 300) throw new Error(`dockerd for ${dir} did not answer within 30 s: ${log}`); // still starting: ask again
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { child, socket, docker, dir };
}

async function rssMiB(pid) {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
  } catch {
    return 0; // gone
  }
}

/** Every process of an engine: dockerd and the containerd it started (its child). */
async function enginePids(engine) {
  const children = await readFile(`/proc/${engine.child.pid}/task/${engine.child.pid}/children`, 'utf8').catch(() => '');
  return [engine.child.pid, ...children.split(' ').filter(Boolean).map(Number)];
}

async function engineCpu(engines) {
  let total = 0;
  for (const e of engines) for (const pid of await enginePids(e)) total += await cpuSeconds(pid);
  return total;
}

/** The operator's image: `docker import` of a root filesystem with one random file of about MB megabytes. */
async function operatorImage(work, main) {
  const root = join(work, 'rootfs');
  await mkdir(root, { recursive: true });
  await writeFile(join(root, 'payload.bin'), randomBytes(MB * 1024 * 1024));
  await writeFile(join(root, 'README'), `edgefleet bench image ${Date.now()}\n`);
  await run('tar', ['-C', root, '-cf', join(work, 'rootfs.tar'), '.']);
  const { stdout } = await run('docker', ['import', join(work, 'rootfs.tar'), `edgefleet-bench/image:${Date.now()}`]);
  await rm(root, { recursive: true, force: true });
  const id = stdout.trim();
  return { id, info: await main.getImage(id).inspect() };
}

/** `hostManager image push`'s first half: docker save through dockerode, streamed to a file, added to the registry. */
async function intoRegistry(main, id, images, work) {
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const engine0 = await cpuSeconds(MAIN_PID);
  const file = join(work, 'upload.tar');
  await pipeline(await main.getImage(id).get(), createWriteStream(file));
  const record = await images.addArchive(file, { name: 'bench', container: null });
  if (record.image.digest !== id) throw new Error(`the registry pins ${record.image.digest}, the engine says ${id}`);
  const host = process.cpuUsage(cpu0);
  return { record, ms: performance.now() - t0, cpuS: round2((host.user + host.system) / 1e6 + (await cpuSeconds(MAIN_PID)) - engine0) };
}

/** Every device engine holds the pinned image (the verification both sides get). */
async function verifyAll(engines, id) {
  const ids = await Promise.all(engines.map((e) => e.docker.getImage(id).inspect().then((i) => i.Id, () => null)));
  const missing = ids.filter((x) => x !== id).length;
  if (missing) throw new Error(`${missing} of ${engines.length} device engines do not hold ${id}`);
  return true;
}

async function removeEverywhere(engines, id) {
  // force: the agent's tags name it too; absent already is fine
  await Promise.all(engines.map((e) => e.docker.getImage(id).remove({ force: true }).catch(() => undefined)));
}

/** The operator's own engine (docker save runs there); it is this machine's shared engine, so others' work shows in it too. */
const MAIN_PID = Number(await readFile('/var/run/docker.pid', 'utf8').catch(() => '0'));

/** The baseline: one `docker save | ssh docker load` after the other, as a loop in a shell script would. */
async function sshLoop(sshd, engines, id) {
  // operator side: the docker CLI, ssh and bash this process reaps, and the operator's engine; device side: sshd (with the remote docker CLI) and the device engines
  const operator = async () => (await cpuSeconds(process.pid, { reaped: true })) + (await cpuSeconds(MAIN_PID));
  const device = async () => (await cpuSeconds(sshd.child.pid)) + (await cpuSeconds(sshd.child.pid, { reaped: true })) + (await engineCpu(engines));
  const cpu0 = { operator: await operator(), device: await device() };
  const t0 = performance.now();
  for (const e of engines) {
    const ssh = `ssh -i ${sshd.key} -p ${sshd.port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@127.0.0.1`;
    await run('bash', ['-o', 'pipefail', '-c', `docker save ${id} | ${ssh} docker -H unix://${e.socket} load -q`], { maxBuffer: 1 << 20 });
  }
  const ms = performance.now() - t0;
  const cpuS = { operator: round2((await operator()) - cpu0.operator), devices: round2((await device()) - cpu0.device) };
  return { ms, cpuS, verified: await verifyAll(engines, id) };
}

/** Where the baseline's time goes, each stage alone on one device: save to a file, copy over ssh, load from the file. */
async function baselineStages(sshd, engine, id, work) {
  const file = join(work, 'stage.tar');
  const ssh = ['-i', sshd.key, '-p', String(sshd.port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', 'root@127.0.0.1'];
  const time = async (fn) => {
    const t = performance.now();
    await fn();
    return seconds(performance.now() - t);
  };
  const save = await time(() => run('sh', ['-c', `docker save ${id} > ${file}`]));
  const copy = await time(() => run('sh', ['-c', `ssh ${ssh.join(' ')} 'cat > /dev/null' < ${file}`]));
  const load = await time(() => run('docker', ['-H', `unix://${engine.socket}`, 'load', '-q', '-i', file]));
  await removeEverywhere([engine], id);
  await rm(file, { force: true });
  return { dockerSave: save, sshCopy: copy, dockerLoad: load };
}

const work = await mkdtemp('/tmp/bi-'); // short: a dockerd's exec root holds unix sockets (108-byte paths)
const children = [];
const engines = [];
const bridges = [];
const cleanup = async () => {
  for (const c of children) c.kill('SIGTERM');
  await Promise.all(engines.map((e) => new Promise((r) => (e.child.exitCode !== null ? r() : (e.child.once('exit', r), e.child.kill('SIGTERM'))))));
  await run('sh', ['-c', `umount $(grep -o '${work}[^ ]*' /proc/mounts | sort -r) 2>/dev/null || true`]).catch(() => undefined); // overlay mounts a killed engine left
  for (const b of bridges) await run('ip', ['link', 'del', b]).catch(() => undefined); // gone already: nothing to remove
  await rm(work, { recursive: true, force: true });
};
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => void cleanup().finally(() => process.exit(130)));
let imageId;
const main = new Docker({ socketPath: MAIN_SOCKET });
try {
  const hostDir = join(work, 'host');
  const images = createImageRegistry(await openState(join(hostDir, 'state.json')), hostDir);
  const keys = await loadOrCreateFleetKeys(hostDir);
  const image = await operatorImage(work, main);
  imageId = image.id;
  const pushed = await intoRegistry(main, imageId, images, work);
  const { record } = pushed;

  // device engines
  const memBefore = freemem();
  const e0 = performance.now();
  if (PER_DEVICE) {
    for (let i = 0; i < MAX; i += 5) engines.push(...(await Promise.all(Array.from({ length: Math.min(5, MAX - i) }, (_, k) => startEngine(join(work, 'e', String(i + k)), i + k)))));
  } else {
    for (let i = 0; i < MAX; i++) engines.push({ child: { pid: 0, exitCode: 0, kill() {} }, socket: MAIN_SOCKET, docker: main, dir: '' });
  }
  const engineStart = seconds(performance.now() - e0);
  let engineRss = 0;
  if (PER_DEVICE) for (const e of engines) for (const pid of await enginePids(e)) engineRss += await rssMiB(pid);

  // broker, devices, sshd
  const broker = spawn(process.execPath, [join(here, 'transfer-broker.js'), DEVICE_COUNTS.join(','), String(8 * 1024 * 1024)], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(broker);
  const url = `mqtt://127.0.0.1:${Number((await waitLine(broker, /"port":(\d+)/))[1])}`;
  const receivers = [];
  for (let i = 0; i < MAX; i++) {
    const groups = DEVICE_COUNTS.filter((k) => i < k).map((k) => `upto${k}`).join(',');
    const child = fork(join(here, 'image-receiver.js'), [`d${i}`, url, join(work, 'devices', `d${i}`), engines[i].socket, groups], { env: { ...process.env, FLEET_PUBLIC_KEY: keys.publicKeyPem }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    children.push(child);
    receivers.push(child);
  }
  await Promise.all(receivers.map((c) => new Promise((resolve) => c.once('message', resolve))));
  const operator = await mqtt.connectAsync(url, { clientId: 'bench-host', username: 'bench', password: 'bench-operator', reconnectPeriod: 0 });
  const requester = await createRequester(operator);
  const sshd = await startSshd(await mkdtemp(join(work, 'sshd-')));
  children.push(sshd.child);

  out({
    bench: 'image', setup: true, imageBytes: record.length, image: `docker import of a root filesystem with ${MB} MiB of random bytes`, imageId,
    cpus: cpus().length, node: process.version, chunkKiB: CHUNK / 1024, window: WINDOW,
    engines: PER_DEVICE ? `one per device: ${MAX} dockerd (+ containerd), started in ${engineStart} s, ${Math.round(engineRss)} MiB RSS together (free memory ${Math.round(memBefore / 2 ** 20)} → ${Math.round(freemem() / 2 ** 20)} MiB)` : "shared: every device uses this machine's one engine (later loads find the layer there)",
    layout: 'broker: own process; host (registry, sender): this process; each device: own process (the agent\'s receiver and containers service) and, per-device, its own engine',
    baseline: 'for each device in turn: docker save ID | ssh root@127.0.0.1 docker -H <device engine> load (one sshd on loopback)',
    registryPushSeconds: seconds(pushed.ms), registryPushCpuS: pushed.cpuS,
  });

  const summary = [];
  for (const n of DEVICE_COUNTS) {
    const devices = Array.from({ length: n }, (_, i) => `d${i}`);
    const mine = engines.slice(0, n);
    if (n === 1) out({ bench: 'image', baselineStages: await baselineStages(sshd, mine[0], imageId, work), note: 'one device, each stage alone' });
    await removeEverywhere(mine, imageId);
    const base = await sshLoop(sshd, mine, imageId);
    out({ bench: 'image', method: 'docker save | ssh docker load', devices: n, seconds: seconds(base.ms), verified: base.verified, cpuS: base.cpuS, cpuSPerDevice: { operator: round2(base.cpuS.operator / n), device: round2(base.cpuS.devices / n) }, MBps: Math.round((record.length * n) / 1e6 / (base.ms / 1000)) });

    await removeEverywhere(mine, imageId);
    await Promise.all(devices.map((_, i) => ipc(receivers[i], { type: 'reset' }, 'reset-done')));
    const phases = {};
    const cpu0 = { broker: await cpuSeconds(broker.pid), receivers: (await Promise.all(receivers.slice(0, n).map((c) => cpuSeconds(c.pid)))).reduce((a, b) => a + b, 0), engines: await engineCpu(mine), host: process.cpuUsage() };
    const t0 = performance.now();
    const target = n === 1 ? { devices } : { group: `upto${n}`, devices };
    const results = await deliverModel({ onPhase: (p, ms) => (phases[p] = ms / 1000), mqtt: operator, request: requester.request, record, blobPath: images.blobPath(record), keys, target, chunkSize: CHUNK, window: WINDOW, requestTimeoutMs: 60_000, commitTimeoutMs: 600_000, deadlineMs: 1_800_000 });
    const ms = performance.now() - t0;
    const failed = Object.entries(results).filter(([, r]) => !r.ok);
    if (failed.length) throw new Error(`delivery failed on ${failed.length} devices: ${JSON.stringify(failed.slice(0, 3))}`);
    const host = process.cpuUsage(cpu0.host);
    const cpuS = {
      host: round2((host.user + host.system) / 1e6),
      broker: round2((await cpuSeconds(broker.pid)) - cpu0.broker),
      receivers: round2((await Promise.all(receivers.slice(0, n).map((c) => cpuSeconds(c.pid)))).reduce((a, b) => a + b, 0) - cpu0.receivers),
      engines: round2((await engineCpu(mine)) - cpu0.engines),
    };
    const verified = await verifyAll(mine, imageId);
    // operator side: the registry push (once), the sender and the broker; device side: each device's receiver and engine
    const operatorCpu = pushed.cpuS + cpuS.host + cpuS.broker;
    const cpuSPerDevice = { operator: round2(operatorCpu / n), device: round2((cpuS.receivers + cpuS.engines) / n) };
    // the baseline saves the image on every iteration; ours saved it into the registry once (image push): counted too
    const withPush = ms + pushed.ms;
    out({ bench: 'image', method: 'fleet (MQTT)', devices: n, seconds: seconds(ms), withRegistryPushSeconds: seconds(withPush), verified, phases, cpuS, cpuSPerDevice, MBps: Math.round((record.length * n) / 1e6 / (ms / 1000)), vsBaseline: round2(base.ms / withPush) });
    summary.push({ devices: n, baselineSeconds: seconds(base.ms), fleetSeconds: seconds(withPush), ratio: round2(base.ms / withPush), deliverySeconds: seconds(ms), commitSeconds: phases.commit, chunksSeconds: phases.chunks });
    await removeEverywhere(mine, imageId);
  }
  out({ bench: 'image', summary, engines: PER_DEVICE ? 'per-device' : 'shared', note: 'ratio = baseline loop time / (registry push + fleet delivery) (higher is better); commit = each device checks the archive, docker load, verifies the ID' });
  requester.close();
  await operator.endAsync();
} finally {
  if (imageId) await main.getImage(imageId).remove({ force: true }).catch(() => undefined); // the bench's own image
  await cleanup();
}
