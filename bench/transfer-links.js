// npm run bench:transfer with BENCH_LINK=netns — delivery over edge-like links instead of
// loopback. Every device (bench/transfer-receiver.js: the real receiver, its own MQTT
// connection) runs in its own network namespace behind its own veth pair, shaped to
// BENCH_RATE (20mbit) each way by tbf, with BENCH_DELAY_MS (20) of one-way delay added by
// bench/delay-line.js (this kernel has no netem), so every device has a link of its own and
// the host side has one per device: the broker's uplink is not what limits; each device's own
// link is. The physical limit of a delivery is therefore the model's size ÷ the link rate (all
// links carry their copy at the same time), plus nothing.
//
// For each model size (BENCH_MB=10,50) and fleet size (BENCH_DEVICES=10,50): the group fan-out
// (each chunk published once to the group, the broker writes it to every device's link) and
// the sequential scp loop over the same links (scp to an sshd inside the device's namespace,
// through the same delay line), timed on BENCH_SCP_SAMPLE (3) devices and extrapolated to the
// fleet (the loop is sequential, each copy crosses one link: time × devices), against the link
// limit. Then the 1 % loss case (BENCH_LOSS=1, iptables drops in each device's namespace;
// 10 MB to the largest fleet): every device must still verify its file.
//
// Needs root (ip netns, tc tbf, iptables). Every installed copy and every scp copy is hashed
// against the registry's sha256 before its time counts.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { createRegistry, createRequester, deliverModel, loadOrCreateFleetKeys, openState } from '@edgefleet/host-manager';
import { createLinks, netnsAvailable } from './netns.js';
import { buildModel, ipc, out, round2, run, seconds, sha256File, startSshd, waitLine } from './lib.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const DEVICE_COUNTS = (process.env.BENCH_DEVICES ?? '10,50').split(',').map(Number);
const SIZES_MB = (process.env.BENCH_MB ?? '10,50').split(',').map(Number);
const RATE = process.env.BENCH_RATE ?? '20mbit';
const DELAY_MS = Number(process.env.BENCH_DELAY_MS ?? 20);
const LOSS = Number(process.env.BENCH_LOSS ?? 1);
const SCP_SAMPLE = Number(process.env.BENCH_SCP_SAMPLE ?? 3);
const MAX = Math.max(...DEVICE_COUNTS);
const MQTT_PORT = 18830 + (process.pid % 1000);
const SSH_PORT = 28830 + (process.pid % 1000);
const load = () => loadavg().map((l) => Number(l.toFixed(2)));

/** '20mbit' → bits per second. */
function bitsPerSecond(rate) {
  const m = /^(\d+(?:\.\d+)?)(k|m|g)?bit$/i.exec(rate);
  if (!m) throw new Error(`BENCH_RATE: expected e.g. 20mbit, got ${rate}`);
  return Number(m[1]) * { undefined: 1, k: 1e3, m: 1e6, g: 1e9 }[m[2]?.toLowerCase()];
}

const can = netnsAvailable();
if (can !== true) {
  out({ bench: 'transfer', link: 'netns', skipped: `network namespaces: ${can}` });
} else {
  const work = await mkdtemp(join(tmpdir(), 'bench-transfer-links-'));
  const children = [];
  const net = createLinks(MAX, { rate: RATE, tag: 'eft' });
  try {
    await runBench(work, net, children);
  } finally {
    for (const c of children) c.kill('SIGTERM');
    net.destroy();
    await rm(work, { recursive: true, force: true });
  }
}

async function runBench(work, net, children) {
  const hostDir = join(work, 'host');
  const state = await openState(join(hostDir, 'state.json'));
  const registry = createRegistry(state, hostDir);
  const keys = await loadOrCreateFleetKeys(hostDir);
  const broker = spawn(process.execPath, [join(here, 'transfer-broker.js'), DEVICE_COUNTS.join(','), String(8 * 1024 * 1024)], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(broker);
  const brokerPort = Number((await waitLine(broker, /"port":(\d+)/))[1]);

  // sshd inside the first devices' namespaces (same config: each namespace has its own addresses)
  const sshds = [];
  for (let i = 0; i < Math.min(SCP_SAMPLE, MAX); i++) {
    const dir = join(work, `sshd-${i}`);
    await mkdir(dir, { recursive: true });
    const s = await startSshd(dir, { listen: net.links[i].devIp, wrap: net.wrap(i) });
    children.push(s.child);
    sshds.push(s);
  }
  const routes = net.links.flatMap((l, i) => [
    { listenHost: l.hostIp, listenPort: MQTT_PORT, targetHost: '127.0.0.1', targetPort: brokerPort },
    ...(i < sshds.length ? [{ listenHost: l.hostIp, listenPort: SSH_PORT, targetHost: l.devIp, targetPort: sshds[i].port }] : []),
  ]);
  const delay = spawn(process.execPath, [join(here, 'delay-line.js'), JSON.stringify({ delayMs: DELAY_MS, routes })], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(delay);
  await waitLine(delay, /"ready":true/);

  const receivers = [];
  for (let i = 0; i < MAX; i++) {
    const groups = DEVICE_COUNTS.filter((k) => i < k).map((k) => `upto${k}`).join(',');
    const argv = [...net.wrap(i), process.execPath, join(here, 'transfer-receiver.js'), `d${i}`, `mqtt://${net.links[i].hostIp}:${MQTT_PORT}`, join(work, 'devices', `d${i}`), '0', groups];
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], env: { ...process.env, FLEET_PUBLIC_KEY: keys.publicKeyPem } });
    children.push(child);
    receivers.push(child);
  }
  await Promise.all(receivers.map((c) => new Promise((resolve) => c.once('message', resolve))));
  const operator = await mqtt.connectAsync(`mqtt://127.0.0.1:${brokerPort}`, { clientId: 'bench-host', username: 'bench', password: 'bench-operator', reconnectPeriod: 0 });
  const requester = await createRequester(operator);
  out({
    bench: 'transfer', link: 'netns', setup: true, rate: RATE, delayMs: DELAY_MS, devices: DEVICE_COUNTS, sizesMB: SIZES_MB, scpSample: SCP_SAMPLE, load: load(),
    layout: 'each device: own network namespace + veth, tbf both ways, one-way delay by a user-space delay line on the host side; broker: own process on the host; sender: this process; scp: to an sshd in the device namespace over the same link and delay line',
  });

  const deliver = async (record, n) => {
    const devices = Array.from({ length: n }, (_, i) => `d${i}`);
    await Promise.all(devices.map((_, i) => ipc(receivers[i], { type: 'reset' }, 'reset-done')));
    const t0 = performance.now();
    const results = await deliverModel({ mqtt: operator, request: requester.request, groupRequests: requester.requestGroup, record, blobPath: registry.blobPath(record), keys, target: { group: `upto${n}`, devices }, activate: false, requestTimeoutMs: 300_000, commitTimeoutMs: 300_000, deadlineMs: 1_800_000 });
    const ms = performance.now() - t0;
    const failed = Object.entries(results).filter(([, r]) => !r.ok);
    const hashes = await Promise.all(devices.map((_, i) => ipc(receivers[i], { type: 'hash', name: 'bench', version: record.version }, 'hash')));
    return { ms, failed: failed.length, firstFailures: failed.slice(0, 2), verified: hashes.filter((h) => h.sha === record.sha256).length };
  };

  const summary = [];
  for (const mb of SIZES_MB) {
    const file = join(work, `model-${mb}.onnx`);
    await writeFile(file, buildModel(mb * 1024 * 1024));
    const record = await registry.add(file, { name: 'bench' });
    const linkLimitS = (record.length * 8) / bitsPerSecond(RATE);
    // the scp loop: one copy after another, each over its device's own link; timed on a sample
    const perCopy = [];
    for (let i = 0; i < sshds.length; i++) {
      const target = `/tmp/scp-${process.pid}-${i}.onnx`;
      const t0 = performance.now();
      await run('scp', ['-q', '-i', sshds[i].key, '-P', String(SSH_PORT), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', registry.blobPath(record), `${userInfo().username}@${net.links[i].hostIp}:${target}`]);
      perCopy.push(performance.now() - t0);
      const sha = await sha256File(target);
      await rm(target, { force: true });
      if (sha !== record.sha256) throw new Error(`scp copy ${i} does not match`);
    }
    const scpPerCopyS = perCopy.reduce((a, b) => a + b, 0) / perCopy.length / 1000;
    out({ bench: 'transfer', link: 'netns', method: 'scp-loop', MB: mb, sampleDevices: perCopy.length, perCopyS: round2(scpPerCopyS), linkLimitS: round2(linkLimitS), load: load() });
    for (const n of DEVICE_COUNTS) {
      const r = await deliver(record, n);
      if (r.failed || r.verified !== n) throw new Error(`fan-out to ${n} devices: ${r.failed} failed, ${r.verified} verified: ${JSON.stringify(r.firstFailures)}`);
      const scpLoopS = scpPerCopyS * n;
      const row = { bench: 'transfer', link: 'netns', method: 'mqtt-fanout', MB: mb, devices: n, seconds: seconds(r.ms), verified: r.verified, linkLimitS: round2(linkLimitS), ofLinkLimit: round2(r.ms / 1000 / linkLimitS), scpLoopS: round2(scpLoopS), scpLoop: `extrapolated: ${perCopy.length} copies timed × ${n}`, vsScp: round2(scpLoopS / (r.ms / 1000)), load: load() };
      out(row);
      summary.push({ MB: mb, devices: n, fanoutS: row.seconds, linkLimitS: row.linkLimitS, ofLinkLimit: row.ofLinkLimit, scpLoopS: row.scpLoopS, vsScp: row.vsScp });
    }
  }
  if (LOSS > 0) {
    net.setLoss(LOSS);
    const mb = Math.min(...SIZES_MB);
    const record = state.modelVersions('bench').find((v) => Math.abs(v.length - mb * 1024 * 1024) < 1024 * 1024) ?? state.modelVersions('bench')[0];
    const r = await deliver(record, MAX);
    const linkLimitS = (record.length * 8) / bitsPerSecond(RATE);
    out({ bench: 'transfer', link: 'netns', method: 'mqtt-fanout', lossPercent: LOSS, MB: round2(record.length / 2 ** 20), devices: MAX, seconds: seconds(r.ms), failed: r.failed, verified: r.verified, allVerified: r.verified === MAX && r.failed === 0, ofLinkLimit: round2(r.ms / 1000 / linkLimitS), load: load() });
    net.setLoss(0);
  }
  out({ bench: 'transfer', link: 'netns', summary, targets: 'fan-out ≤ 1.25 × link limit at 50 devices; ≥ 30 × faster than the scp loop', note: 'link limit = model size ÷ link rate: every device has its own link, so the broker sends all copies at once and each one is bounded by its own link' });
  requester.close();
  await operator.endAsync();
}
