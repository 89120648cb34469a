// npm run bench:transfer — a 50 MB ONNX model (random-initializer: one MatMul whose W is
// 50 MB of random float32 bits; a valid ONNX file) delivered to 1, 10 and 50 devices
// through the embedded broker (its own process), beside a sequential `scp` of the same
// file to as many targets on one real sshd. Every delivery is verified: each device's
// receiver checks every chunk and the whole file against the signed manifest, and the
// bench re-hashes each installed copy (and each scp copy) against the registry's sha256.
//
// Devices are lightweight receiver processes (bench/transfer-receiver.js): one process
// each, its own MQTT connection, running the real receiver code
// (createTransferReceiver from @edgefleet/device-agent) with a plain file store, delivering with
// activate:false — 50 full agents each loading a 50 MB onnxruntime session do not fit
// the point of this bench on 2 cores.
//
// Options (env): BENCH_DEVICES=1,10,50  BENCH_MB=50  BENCH_SWEEP=full|quick|none|<KiB>:<window>,...  BENCH_CHUNK_QOS=0
// Tuning only: BENCH_SKIP_SCP=1 (no baseline, no ratio)  BENCH_PROFILE=<dir> (a CPU profile of device d0 per delivery)
import { fork, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo, cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { createRegistry, createRequester, deliverModel, loadOrCreateFleetKeys, openState } from '@edgefleet/host-manager';
import { buildModel, cpuOf, cpuSeconds, ipc, out, round2, run, seconds, sha256File, startSshd, waitLine } from './lib.js';

if (process.env.BENCH_LINK === 'netns') {
  // the realistic mode: a shaped link per device (bench/transfer-links.js)
  await import('./transfer-links.js');
  process.exit(0);
}
const here = fileURLToPath(new URL('.', import.meta.url));
const DEVICE_COUNTS = (process.env.BENCH_DEVICES ?? '1,10,50').split(',').map(Number);
const MB = Number(process.env.BENCH_MB ?? 50);
const SWEEP = process.env.BENCH_SWEEP ?? 'quick';
const CHUNK_QOS = Number(process.env.BENCH_CHUNK_QOS ?? 0); // as the agent subscribes chunk topics
const MAX = Math.max(...DEVICE_COUNTS);
const KiB = 1024;

async function scpLoop(sshd, file, n, targetDir, sha) {
  await rm(targetDir, { recursive: true, force: true });
  await mkdir(targetDir, { recursive: true });
  // CPU of the scp clients (this process reaps them) and of sshd with its per-connection processes (it reaps those)
  const cpu = async () => ({ client: await cpuSeconds(process.pid, { reaped: true }), sshd: (await cpuSeconds(sshd.child.pid)) + (await cpuSeconds(sshd.child.pid, { reaped: true })) });
  const cpu0 = await cpu();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    await run('scp', ['-q', '-i', sshd.key, '-P', String(sshd.port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'LogLevel=ERROR', file, `${userInfo().username}@127.0.0.1:${join(targetDir, `copy-${i}.onnx`)}`]);
  }
  const ms = performance.now() - t0;
  const cpu1 = await cpu();
  const cpuS = { client: round2(cpu1.client - cpu0.client), sshd: round2(cpu1.sshd - cpu0.sshd) };
  const v0 = performance.now();
  for (let i = 0; i < n; i++) {
    if ((await sha256File(join(targetDir, `copy-${i}.onnx`))) !== sha) throw new Error(`scp copy ${i} does not match`);
  }
  const verifyMs = performance.now() - v0;
  await rm(targetDir, { recursive: true, force: true });
  return { ms, verifyMs, cpuS };
}

const work = await mkdtemp(join(tmpdir(), 'bench-transfer-'));
const children = [];
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const c of children) c.kill('SIGTERM');
    void rm(work, { recursive: true, force: true }).finally(() => process.exit(130));
  });
}
try {
  // model + registry + keys (host side, this process)
  const hostDir = join(work, 'host');
  const modelFile = join(work, 'model.onnx');
  await writeFile(modelFile, buildModel(MB * 1024 * 1024));
  const registry = createRegistry(await openState(join(hostDir, 'state.json')), hostDir);
  const record = await registry.add(modelFile, { name: 'bench' });
  const blob = registry.blobPath(record);
  const keys = await loadOrCreateFleetKeys(hostDir);

  // broker process
  const broker = spawn(process.execPath, [join(here, 'transfer-broker.js'), DEVICE_COUNTS.join(','), String(8 * 1024 * 1024)], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(broker);
  const port = Number((await waitLine(broker, /"port":(\d+)/))[1]);
  const url = `mqtt://127.0.0.1:${port}`;

  // receiver processes
  const receivers = [];
  for (let i = 0; i < MAX; i++) {
    const child = fork(join(here, 'transfer-receiver.js'), [`d${i}`, url, join(work, 'devices', `d${i}`), String(CHUNK_QOS), DEVICE_COUNTS.filter((k) => i < k).map((k) => `upto${k}`).join(',')], {
      // BENCH_PROFILE=<dir>: CPU profiles of device d0, one per delivery
      env: { ...process.env, FLEET_PUBLIC_KEY: keys.publicKeyPem, ...(process.env.BENCH_PROFILE && i === 0 ? { BENCH_PROFILE_DIR: process.env.BENCH_PROFILE } : {}) },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    children.push(child);
    receivers.push(child);
  }
  await Promise.all(receivers.map((c) => new Promise((resolve) => c.once('message', resolve))));

  const operator = await mqtt.connectAsync(url, { clientId: 'bench-host', username: 'bench', password: 'bench-operator', reconnectPeriod: 0 });
  const requester = await createRequester(operator);

  const sshd = await startSshd(await mkdtemp(join(work, 'sshd-')));
  children.push(sshd.child);

  out({
    bench: 'transfer', setup: true, modelBytes: record.length, model: 'random-initializer ONNX (MatMul, W = random float32 bits)',
    cpus: cpus().length, node: process.version, layout: 'broker: own process; host (sender): this process; each device: own process running the real receiver with a file store, activate:false',
    chunkQos: CHUNK_QOS, scp: 'sequential scp to one sshd on loopback, one connection per copy, copies hash-verified afterwards',
  });

  const sweeps = {
    full: [64, 256, 1024].flatMap((c) => [4, 16, 64].map((w) => [c * KiB, w])),
    quick: [[64 * KiB, 16], [256 * KiB, 4], [256 * KiB, 16], [256 * KiB, 64], [1024 * KiB, 16], [1024 * KiB, 64]],
    none: [[1024 * KiB, 16]],
  }[SWEEP] ?? SWEEP.split(',').map((c) => c.split(':').map(Number)).map(([k, w]) => [k * KiB, w]);

  const summary = [];
  for (const n of DEVICE_COUNTS) {
    const devices = Array.from({ length: n }, (_, i) => `d${i}`);
    // BENCH_SKIP_SCP=1 is for tuning runs only: no ratio is meaningful without the baseline beside it
    const scp = process.env.BENCH_SKIP_SCP ? { ms: NaN, verifyMs: NaN, cpuS: {} } : await scpLoop(sshd, blob, n, join(work, 'scp-target'), record.sha256);
    out({ bench: 'transfer', method: 'scp-loop', devices: n, seconds: seconds(scp.ms), verifySeconds: seconds(scp.verifyMs), cpuS: scp.cpuS, cpuSPerDevice: round2((scp.cpuS.client + scp.cpuS.sshd) / n), MBps: Math.round((record.length * n) / 1e6 / (scp.ms / 1000)) });
    let best;
    for (const [chunkSize, window] of n === 50 && SWEEP !== 'none' ? sweeps.filter(([c]) => c >= 256 * KiB) : sweeps) {
      await Promise.all(devices.map((_, i) => ipc(receivers[i], { type: 'reset' }, 'reset-done')));
      const target = n === 1 ? { devices } : { group: `upto${n}`, devices };
      const phases = {};
      const cpu0 = await cpuOf(broker, receivers);
      const t0 = performance.now();
      const results = await deliverModel({ onPhase: (p, ms) => (phases[p] = ms / 1000), mqtt: operator, request: requester.request, record, blobPath: blob, keys, target, chunkSize, window, activate: false, requestTimeoutMs: 60_000, commitTimeoutMs: 120_000 });
      const ms = performance.now() - t0;
      const cpu1 = await cpuOf(broker, receivers);
      const cpuS = Object.fromEntries(Object.keys(cpu1).map((k) => [k, Math.round((cpu1[k] - cpu0[k]) * 100) / 100]));
      const failed = Object.entries(results).filter(([, r]) => !r.ok);
      if (failed.length) throw new Error(`delivery failed: ${JSON.stringify(failed.slice(0, 3))}`);
      const hashes = await Promise.all(devices.map((_, i) => ipc(receivers[i], { type: 'hash', name: 'bench', version: record.version }, 'hash')));
      const verified = hashes.every((h) => h.sha === record.sha256);
      if (!verified) throw new Error('an installed copy does not match the registry sha256');
      const r = { bench: 'transfer', method: 'mqtt', devices: n, chunkKiB: chunkSize / KiB, window, seconds: seconds(ms), MBps: Math.round((record.length * n) / 1e6 / (ms / 1000)), verified, phases, cpuS, cpuSPerDevice: round2((cpuS.broker + cpuS.host + cpuS.receivers) / n), vsScp: Math.round((scp.ms / ms) * 100) / 100 };
      out(r);
      if (!best || ms < best.ms) best = { ms, chunkKiB: r.chunkKiB, window };
    }
    summary.push({ devices: n, scpSeconds: seconds(scp.ms), mqttBestSeconds: seconds(best.ms), best: { chunkKiB: best.chunkKiB, window: best.window }, ratio: Math.round((scp.ms / best.ms) * 100) / 100 });
  }
  out({ bench: 'transfer', summary, note: 'ratio = scp loop time / MQTT delivery time (higher is better)' });
  requester.close();
  await operator.endAsync();
} finally {
  for (const c of children) c.kill('SIGTERM');
  await rm(work, { recursive: true, force: true });
}
