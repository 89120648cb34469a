/**
 * npm run bench:faults — faults at scale, over real processes: the controller with its embedded
 * broker (bench/controller-process.js, as `hostManager` runs it) and simulated devices
 * (bench/sim: the agent's own connection with its jittered reconnects, telemetry flush and
 * transfer receiver). Each scenario prints one JSON result with what it checked.
 *
 *   restart   DEVICES (1,000) connected devices at 1 telemetry sample/s; the controller is stopped
 *             with SIGTERM under that load (its exit code counts), stays down OUTAGE_S (10 s), and
 *             starts again on the same port and data directory. Measured: how the reconnections
 *             spread (peak connections per second, seconds until every device is back), every
 *             device re-announced, and per device the telemetry numbering across both controller
 *             lifetimes: no sample missing across the restart or after it, none out of order, the
 *             last one the device took received (repeats of samples in flight are QoS 1's right).
 *   linkcut   CUT_FLEET (50) devices on loopback and one in its own network namespace behind a
 *             LINK_RATE (20mbit) link with a KEEPALIVE_S (10 s) keepalive; a rollout of a CUT_MB (16 MB)
 *             model to their group; 2.5 s into it the device's link goes down for CUT_S (20 s, beyond
 *             1.5 × keepalive) and
 *             comes back. Checked: the controller saw it offline once and back once, the rollout
 *             succeeded on every device, the cut device's receiver wrote each chunk once (the
 *             transfer resumed, it did not start over), every copy hash-verified. Needs root
 *             (ip netns, tc); skipped with a reason otherwise.
 *
 * Env: SCENARIOS (restart,linkcut), DEVICES, OUTAGE_S, CUT_FLEET, CUT_S, LINK_RATE, KEEPALIVE_S, CUT_MB.
 *
 * A keepalive must outlast what waits ahead of a PINGRESP on the device's link: the chunks in
 * flight (up to window × chunk size = 16 MiB by default) queued in the broker's socket. At
 * 20 Mbit/s that is ~7 s: with a 3 s keepalive the device drops and reconnects while chunks
 * flow (measured: an extra offline/online during the resumed transfer); at 4 Mbit/s it is
 * ~34 s, beyond even the agent's default of 30 s.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import onnxProto from 'onnx-proto';
import { DEFAULT_CHUNK_SIZE } from '@edgefleet/host-manager';
import { child } from './sim/child.js';
import { provision, startFleet } from './sim/fleet.js';
import { createLinks, netnsAvailable } from './netns.js';

const SCENARIOS = (process.env.SCENARIOS ?? 'restart,linkcut').split(',');
const DEVICES = Number(process.env.DEVICES ?? 1000);
const OUTAGE_S = Number(process.env.OUTAGE_S ?? 10);
const CUT_FLEET = Number(process.env.CUT_FLEET ?? 50);
const CUT_S = Number(process.env.CUT_S ?? 20);
const LINK_RATE = process.env.LINK_RATE ?? '20mbit';
const KEEPALIVE_S = Number(process.env.KEEPALIVE_S ?? 10);
const CUT_MB = Number(process.env.CUT_MB ?? 16);
const here = (f) => fileURLToPath(new URL(f, import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const out = (o) => console.log(JSON.stringify(o));
const load = () => loadavg().map((l) => Number(l.toFixed(2)));

async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

async function until(check, what, ms) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(250);
  }
}

function startController(dataDir, port, host = '127.0.0.1') {
  return child(here('./controller-process.js'), [], { DATA_DIR: dataDir, MQTT_PORT: String(port), MQTT_HOST: host });
}

/** Per device, what the two controller lifetimes saw against what the device took. */
function compareSequences(before, after, taken) {
  const r = { devices: 0, lostAcrossRestart: 0, missingAfter: 0, lastNotReceived: 0, repeated: 0 };
  for (const [id, count] of Object.entries(taken)) {
    r.devices++;
    const s1 = before[id];
    const s2 = after[id];
    if (!s2) {
      r.lastNotReceived++;
      continue;
    }
    if (s1 && s2.first > s1.last + 1) r.lostAcrossRestart += s2.first - s1.last - 1;
    if (s1 && s2.first <= s1.last) r.repeated += s1.last - s2.first + 1;
    r.missingAfter += s2.missing;
    r.repeated += s2.repeated;
    if (s2.last !== count - 1) r.lastNotReceived++;
  }
  return r;
}

async function restartScenario(work) {
  const port = await freePort();
  const dataDir = join(work, 'restart-controller');
  let c = startController(dataDir, port);
  const info = await c.ready;
  const { creds } = await provision({ url: info.url, token: info.token, count: DEVICES, prefix: 'rs-', groups: ['restart'] });
  const fleet = await startFleet({ creds, broker: info.brokerUrl, publicKeyPem: info.publicKeyPem, processes: Math.ceil(DEVICES / 2500), dataRoot: join(work, 'restart-devices'), connectPerS: 1000 });
  try {
    fleet.telemetry(1);
    await sleep(15_000);
    const loadAtStop = load();
    const final = c.waitFor('final');
    c.c.kill('SIGTERM');
    const first = await Promise.race([final, sleep(60_000).then(() => null)]);
    const exit1 = await c.exit;
    const downAt = Date.now();
    await sleep(OUTAGE_S * 1000);
    const restartAt = Date.now();
    c = startController(dataDir, port);
    await c.ready;
    let backAt = 0;
    await until(async () => (await c.ask({ type: 'stats' }, 'stats')).online >= DEVICES, `all ${DEVICES} devices back online`, 300_000);
    backAt = Date.now();
    await sleep(10_000);
    fleet.telemetry(0);
    let last = -1;
    for (let i = 0; i < 120; i++) {
      await sleep(1000);
      const sim = await fleet.stats();
      const s = await c.ask({ type: 'stats' }, 'stats');
      if (sim.pending === 0 && s.received === last) break;
      last = s.received;
    }
    const sim = await fleet.stats();
    const seq2 = await c.ask({ type: 'sequences' }, 'sequences');
    const stats2 = await c.ask({ type: 'stats' }, 'stats');
    const seconds = Object.entries(sim.connectsBySecond).filter(([sec]) => Number(sec) * 1000 >= downAt).map(([, n]) => n);
    // the controller's state says who is online (a device back before this observer listened has no presence event here)
    const back = (id) => seq2.online[id] === true && (seq2.presence[id] ?? [true]).at(-1) === true;
    const reannounced = Object.keys(sim.sampledById).filter(back).length;
    const notBack = Object.keys(sim.sampledById).filter((id) => !back(id)).slice(0, 3).map((id) => ({ id, presence: (seq2.presenceAt[id] ?? []).map((p) => ({ online: p.online, atS: Number(((p.at - restartAt) / 1000).toFixed(1)), ...(p.reason ? { reason: p.reason } : {}) })), connects: sim.devicesDetail[id]?.connects }));
    const compared = compareSequences(first?.sequences ?? {}, seq2.byId, sim.sampledById);
    const result = {
      bench: 'faults',
      scenario: 'restart',
      devices: DEVICES,
      sigtermUnderLoad: { exitCode: exit1.code, signal: exit1.signal, reportedFinal: first !== null, load: loadAtStop },
      outageS: OUTAGE_S,
      reconnect: { allBackS: Number(((backAt - restartAt) / 1000).toFixed(1)), peakConnectsPerS: Math.max(0, ...seconds), secondsWithConnects: seconds.length, reconnections: seconds.reduce((a, b) => a + b, 0), backoff: 'agent defaults: full jitter, 1 s doubling to 60 s' },
      reannounced,
      ...(notBack.length ? { notReannounced: notBack } : {}),
      telemetry: { taken: sim.sampled, acknowledged: sim.published, ...compared, outOfOrderAfterRestart: stats2.outOfOrder, stillBuffered: sim.pending },
      ok: exit1.code === 0 && reannounced === DEVICES && compared.lostAcrossRestart === 0 && compared.missingAfter === 0 && compared.lastNotReceived === 0 && stats2.outOfOrder === 0,
      load: load(),
    };
    out(result);
  } finally {
    await fleet.stop();
    c.c.kill('SIGTERM');
    await c.exit;
  }
}

async function rollout(info, modelFile, group) {
  const headers = { authorization: `Bearer ${info.token}` };
  const up = await fetch(`${info.url}/api/models?name=cutmodel`, { method: 'POST', headers: { ...headers, 'content-type': 'application/octet-stream' }, body: await (await import('node:fs/promises')).readFile(modelFile) });
  const rec = await up.json();
  if (!up.ok) throw new Error(`model upload: ${JSON.stringify(rec)}`);
  const res = await fetch(`${info.url}/api/rollouts`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'cutmodel', version: rec.version, to: `group:${group}`, policy: { canary: 0, waves: [100], soakS: 0, minRequests: 0 } }) });
  const r = await res.json();
  if (!res.ok) throw new Error(`deploy: ${JSON.stringify(r)}`);
  return { id: r.id, version: rec.version, sha256: rec.sha256, poll: async () => (await (await fetch(`${info.url}/api/rollouts/${r.id}`, { headers })).json()) };
}

async function linkCutScenario(work) {
  const can = netnsAvailable();
  if (can !== true) return out({ bench: 'faults', scenario: 'linkcut', skipped: `network namespaces: ${can}` });
  const net = createLinks(1, { rate: LINK_RATE, tag: 'efc' });
  const port = await freePort();
  const c = startController(join(work, 'cut-controller'), port, '0.0.0.0');
  const fleets = [];
  try {
    const info = await c.ready;
    const { creds } = await provision({ url: info.url, token: info.token, count: CUT_FLEET + 1, prefix: 'cut-', groups: ['cut'] });
    const [cutCred, ...rest] = creds;
    fleets.push(await startFleet({ creds: rest, broker: info.brokerUrl, publicKeyPem: info.publicKeyPem, processes: 1, dataRoot: join(work, 'cut-devices') }));
    const cutFleet = await startFleet({ creds: [cutCred], broker: `mqtt://${net.links[0].hostIp}:${port}`, publicKeyPem: info.publicKeyPem, processes: 1, dataRoot: join(work, 'cut-device'), keepaliveS: KEEPALIVE_S, reconnectMinMs: 500, reconnectMaxMs: 2000, wrap: net.wrap(0) });
    fleets.push(cutFleet);
    await until(async () => (await c.ask({ type: 'stats' }, 'stats')).online >= CUT_FLEET + 1, 'every device online', 120_000);
    const modelFile = join(work, 'cut.onnx');
    const modelBytes = onnxOf(CUT_MB * 1024 * 1024);
    await writeFile(modelFile, modelBytes);
    const t0 = Date.now();
    const r = await rollout(info, modelFile, 'cut');
    await sleep(2500);
    net.setLink(0, false);
    const cutAt = Date.now();
    await sleep(CUT_S * 1000);
    net.setLink(0, true);
    let done;
    await until(async () => ['succeeded', 'failed', 'aborted'].includes((done = await r.poll()).status), 'the rollout to finish', 600_000);
    const seconds = (Date.now() - t0) / 1000;
    const seq = await c.ask({ type: 'sequences' }, 'sequences');
    const detail = (await cutFleet.stats()).devicesDetail[cutCred.id];
    const verifiedRest = await fleets[0].verify('cutmodel', r.version, r.sha256);
    const verifiedCut = await cutFleet.verify('cutmodel', r.version, r.sha256);
    const chunks = Math.ceil(modelBytes.length / DEFAULT_CHUNK_SIZE);
    const presence = seq.presence[cutCred.id] ?? [];
    const result = {
      bench: 'faults',
      scenario: 'linkcut',
      devices: CUT_FLEET + 1,
      link: { rate: LINK_RATE, keepaliveS: KEEPALIVE_S, modelMB: CUT_MB, cutS: CUT_S, cutAfterS: Number(((cutAt - t0) / 1000).toFixed(1)) },
      rollout: { status: done.status, seconds: Number(seconds.toFixed(1)), cutDevice: done.devices[cutCred.id]?.state, attempts: done.devices[cutCred.id]?.attempts },
      presenceOfCutDevice: presence,
      presenceChangesS: (seq.presenceAt[cutCred.id] ?? []).map((p) => ({ online: p.online, atS: Number(((p.at - t0) / 1000).toFixed(1)), ...(p.reason ? { reason: p.reason } : {}) })),
      offlineOnceBackOnce: JSON.stringify(presence.slice(-3)) === '[true,false,true]' && presence.filter((p) => p === false).length === 1,
      cutDevice: { connections: detail?.connects, chunksWritten: detail?.written, chunksInModel: chunks, resumed: detail?.written !== undefined && detail.written <= chunks },
      verified: { others: verifiedRest.checked - verifiedRest.bad.length, cut: verifiedCut.checked - verifiedCut.bad.length },
      load: load(),
    };
    result.ok = done.status === 'succeeded' && result.offlineOnceBackOnce && result.cutDevice.resumed && verifiedRest.bad.length === 0 && verifiedCut.bad.length === 0;
    out(result);
  } finally {
    for (const f of fleets) await f.stop();
    c.c.kill('SIGTERM');
    await c.exit;
    net.destroy();
  }
}

/** A valid ONNX file of about `bytes` (y = x + W, W random): what the registry accepts. */
function onnxOf(bytes) {
  const { onnx } = onnxProto;
  const n = Math.floor(bytes / 4);
  const vi = (name) => ({ name, type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: [{ dimValue: n }] } } } });
  const m = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'edgefleet-bench',
    opsetImport: [{ domain: '', version: 13 }],
    graph: { name: 'cut', node: [{ opType: 'Add', input: ['x', 'W'], output: ['y'], name: 'add' }], input: [vi('x')], output: [vi('y')], initializer: [{ name: 'W', dims: [n], dataType: onnx.TensorProto.DataType.FLOAT, rawData: randomBytes(n * 4) }] },
  });
  return Buffer.from(onnx.ModelProto.encode(m).finish());
}

const work = await mkdtemp(join(tmpdir(), 'bench-faults-'));
try {
  out({ bench: 'faults', setup: { scenarios: SCENARIOS, devices: DEVICES, load: load() } });
  if (SCENARIOS.includes('restart')) await restartScenario(work);
  if (SCENARIOS.includes('linkcut')) await linkCutScenario(work);
} finally {
  await rm(work, { recursive: true, force: true });
}
