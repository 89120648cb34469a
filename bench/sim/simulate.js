/**
 * npm run simulate -- --devices N [--telemetry-hz R] [--models K] [--processes P] [--data-dir D] [--api URL] [--broker URL] [--prefix P] [--keep]
 *
 * Simulated devices against a running controller: provisioned through its HTTP API (batch
 * route, 1,000 per request, the operator token from <data-dir>/operator.token or
 * EDGEFLEET_TOKEN), then connected, many per process (bench/sim/worker.js), each with its own
 * credential and MQTT connection: presence with a retained last will, telemetry at R samples
 * per second (QoS 1, in order, buffered while offline), answers to commands, real transfer
 * receivers that verify every hash (no inference). Prints one JSON line of counters every
 * 10 s. Ctrl-C (or SIGTERM): every device says goodbye, and the devices are removed from the
 * controller again unless --keep.
 */
import { readFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { provision, startFleet, unprovision } from './fleet.js';

const { values: a } = parseArgs({
  options: {
    devices: { type: 'string', default: '100' },
    'telemetry-hz': { type: 'string', default: '1' },
    models: { type: 'string', default: '1' },
    processes: { type: 'string' },
    'data-dir': { type: 'string', default: process.env.EDGEFLEET_DATA ?? join(homedir(), '.edgefleet') },
    api: { type: 'string' },
    broker: { type: 'string' },
    group: { type: 'string', default: 'sim' },
    prefix: { type: 'string' },
    'connect-per-s': { type: 'string', default: '500' },
    keep: { type: 'boolean', default: false },
  },
});

function die(message) {
  process.stderr.write(`simulate: ${message}\n`);
  process.exit(2);
}

const count = Number(a.devices);
const hz = Number(a['telemetry-hz']);
if (!Number.isInteger(count) || count < 1) die('--devices must be a whole number of at least 1');
if (!(hz >= 0 && hz <= 10)) die('--telemetry-hz must be between 0 and 10');
const controller = await readFile(join(a['data-dir'], 'controller.json'), 'utf8').then(JSON.parse, () => null);
const url = a.api ?? controller?.url ?? die(`no controller announced in ${a['data-dir']}/controller.json; start one (npm start) or give --api`);
const token = process.env.EDGEFLEET_TOKEN ?? (await readFile(join(a['data-dir'], 'operator.token'), 'utf8').then((t) => t.trim(), () => die(`no operator token: set EDGEFLEET_TOKEN or give --data-dir of the controller`)));
const prefix = a.prefix ?? `sim${Date.now().toString(36).slice(-4)}-`;

const t0 = Date.now();
const { creds, broker: advertised, fleetPublicKey } = await provision({ url, token, count, prefix, groups: [a.group] });
const provisionS = (Date.now() - t0) / 1000;
const broker = a.broker ?? controller?.broker ?? advertised;
const processes = Number(a.processes ?? Math.max(1, Math.ceil(count / 2500)));
const dataRoot = await mkdtemp(join(tmpdir(), 'edgefleet-sim-'));
const t1 = Date.now();
const fleet = await startFleet({ creds, broker, publicKeyPem: fleetPublicKey, processes, dataRoot, models: Number(a.models), connectPerS: Number(a['connect-per-s']) });
console.log(JSON.stringify({ simulate: 'ready', devices: count, prefix, group: a.group, broker, processes, provisionS, connectS: (Date.now() - t1) / 1000, telemetryHz: hz }));
fleet.telemetry(hz);

const timer = setInterval(async () => {
  const s = await fleet.stats();
  console.log(JSON.stringify({ simulate: 'stats', connected: s.connected, devices: s.devices, connects: s.connects, sampled: s.sampled, acknowledged: s.published, buffered: s.pending, rssMB: Math.round(s.rss / 2 ** 20) }));
}, 10_000);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  clearInterval(timer);
  await fleet.stop();
  if (!a.keep) await unprovision({ url, token, ids: creds.map((c) => c.id) }).catch((error) => process.stderr.write(`simulate: could not remove the devices: ${error.message}\n`));
  await rm(dataRoot, { recursive: true, force: true });
  console.log(JSON.stringify({ simulate: 'stopped', removed: a.keep ? 0 : count }));
  process.exit(0);
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
