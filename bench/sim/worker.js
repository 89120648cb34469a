/**
 * A process of simulated devices (bench/sim/device.js), driven by its parent over IPC
 * (bench/sim/fleet.js). Many devices share this process; several processes share the cores.
 *
 *   {type:'start', devices:[{id,token,groups}], broker, publicKeyPem, dataRoot, models, connectPerS, keepaliveS?, reconnectMinMs?, reconnectMaxMs?}
 *        → {type:'ready', count} once every device is connected and announced
 *   {type:'telemetry', hz}            every device samples `hz` times a second (0 = stop), phases spread evenly
 *   {type:'stats'}                    → {type:'stats', ...counters}
 *   {type:'verify', model, version, sha256} → {type:'verified', count, bad:[ids]}
 *   {type:'kill', count}              drops `count` connections without a goodbye (last will), no reconnect
 *   {type:'stop'}                     goodbye from every device (offline status, DISCONNECT), then exit 0
 */
import { SimDevice } from './device.js';

const devices = [];
const timers = [];
/** Connections made, by wall-clock second (for the peak connect rate after a broker restart). */
const connectsBySecond = new Map();

function onConnect() {
  const s = Math.floor(Date.now() / 1000);
  connectsBySecond.set(s, (connectsBySecond.get(s) ?? 0) + 1);
}

async function start(msg) {
  const gapMs = 1000 / Math.max(1, msg.connectPerS ?? 200);
  for (const cred of msg.devices) {
    const d = new SimDevice(cred, { ...msg, onConnect });
    devices.push(d);
    d.start();
    await new Promise((r) => setTimeout(r, gapMs));
  }
  // ready once every device connected (its status is published right after it subscribed)
  while (devices.some((d) => d.connects === 0)) await new Promise((r) => setTimeout(r, 50));
  process.send({ type: 'ready', count: devices.length });
}

function telemetry(hz) {
  for (const t of timers.splice(0)) clearTimeout(t), clearInterval(t);
  if (!hz) return;
  const period = 1000 / hz;
  devices.forEach((d, i) => {
    // evenly spread phases, so a second's samples do not leave in one burst
    const first = setTimeout(() => {
      void d.tick();
      timers.push(setInterval(() => void d.tick(), period));
    }, (period * i) / devices.length);
    timers.push(first);
  });
}

function stats() {
  let connected = 0;
  let published = 0;
  let pending = 0;
  let connects = 0;
  let sampled = 0;
  for (const d of devices) {
    if (d.link.connected) connected++;
    published += d.published;
    pending += d.queue.size;
    connects += d.connects;
    sampled += d.queue.nextSeq;
  }
  const mem = process.memoryUsage();
  return {
    type: 'stats',
    devices: devices.length,
    connected,
    connects,
    sampled,
    published,
    pending,
    connectsBySecond: Object.fromEntries(connectsBySecond),
    /** per device: samples taken (seq of the next one), for loss accounting against what the controller saw */
    sampledById: Object.fromEntries(devices.map((d) => [d.id, d.queue.nextSeq])),
    /** per device: chunks its receiver wrote (a resumed transfer writes each chunk once) and its connections */
    devicesDetail: Object.fromEntries(devices.map((d) => [d.id, { written: d.receiver.stats().written, connects: d.connects }])),
    cpu: process.cpuUsage(),
    rss: mem.rss,
  };
}

async function verify(msg) {
  const bad = [];
  for (const d of devices) {
    const got = await d.models.activeSha256(msg.model).catch(() => null);
    if (!got || got.version !== msg.version || got.sha256 !== msg.sha256) bad.push(d.id);
  }
  return { type: 'verified', count: devices.length, bad };
}

process.on('message', async (msg) => {
  if (msg.type === 'start') await start(msg);
  else if (msg.type === 'telemetry') telemetry(msg.hz);
  else if (msg.type === 'stats') process.send(stats());
  else if (msg.type === 'verify') process.send(await verify(msg));
  else if (msg.type === 'kill') {
    for (const d of devices.slice(0, msg.count)) d.kill();
    process.send({ type: 'killed' });
  } else if (msg.type === 'stop') {
    telemetry(0);
    await Promise.all(devices.map((d) => d.stop()));
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
