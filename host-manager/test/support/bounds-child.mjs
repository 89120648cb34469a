// Run by test/bounds.test.ts as `node --expose-gc bounds-child.mjs <devices> <worst|typical>` against the
// built controller. worst: every device of a fleet pushed to what the protocol lets it make the controller
// hold (a status at the schema's limits, telemetry for more models than it may keep, twice a full ring of
// long reports); typical: a device running one model that reports a few events. Prints the memory per
// device, after a full collection, as one JSON line.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { makeEvent, makeStatus, makeTelemetry, topics } from '@edgefleet/protocol';
import { Fleet } from '../../dist/src/devices/presence.js';
import { openState } from '../../dist/src/state/repository.js';
import { SLOTS } from '../../dist/src/devices/telemetry-history.js';
import { REPORT_LIMITS } from '../../dist/src/devices/reports.js';

const devices = Number(process.argv[2] ?? 1000);
const worst = (process.argv[3] ?? 'worst') === 'worst';
const dir = await mkdtemp(join(tmpdir(), 'bounds-'));
const state = await openState(join(dir, 'state.json'));
const fleet = new Fleet({ mqtt: null, state, logger: pino({ level: 'silent' }), flushMs: 3_600_000, knownModel: () => true });
const ids = Array.from({ length: devices }, (_, i) => `device-${String(i).padStart(6, '0')}`);
for (const id of ids) state.putDevice({ id, groups: ['g'], tokenHash: 'x', createdAt: new Date().toISOString(), online: false, lastSeen: null, info: null, telemetry: null, provisioned: true });

const used = () => {
  global.gc();
  global.gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
};
const long = (n, c) => c.repeat(n);
const typicalInfo = (i) => ({
  agentVersion: '0.1.0',
  hostname: `pi-${i}`,
  arch: 'arm64',
  platform: 'linux',
  cpus: 4,
  memoryBytes: 4e9,
  onnxruntime: { version: '1.22.0', executionProviders: ['cpu'] },
  docker: false,
  groups: ['kitchen'],
  models: [{ name: `model-${long(50, 'm')}-0`, version: 1 }],
});
const info = (i) => (!worst ? typicalInfo(i) : {
  agentVersion: long(256, 'a'),
  hostname: long(250, 'h') + i,
  arch: long(256, 'r'),
  platform: long(256, 'p'),
  cpus: 4,
  memoryBytes: 1e9,
  onnxruntime: { version: long(256, 'v'), executionProviders: Array.from({ length: 32 }, (_, k) => long(250, 'e') + k) },
  docker: true,
  groups: Array.from({ length: 32 }, (_, k) => `group-${long(50, 'g')}-${k}`),
  models: Array.from({ length: 32 }, (_, k) => ({ name: `model-${long(50, 'm')}-${k}`, version: 1 })),
});
const health = { requests: 10, errors: 1, p50Ms: 1.5, p95Ms: 2.5, p99Ms: 3.5 };
const base = used();
for (const [i, id] of ids.entries()) fleet.handle(topics.device(id, 'status'), Buffer.from(JSON.stringify(makeStatus(info(i)))));
const afterStatus = used();
for (let s = 0; s < SLOTS; s++) {
  for (const id of ids) {
    const models = Object.fromEntries(Array.from({ length: worst ? 32 : 1 }, (_, k) => [`model-${long(50, 'm')}-${k}@1`, health]));
    const sample = { ts: Date.now(), cpuPercent: 1, load: [1, 1, 1], memoryUsedBytes: 1, memoryTotalBytes: 2, diskFreeBytes: 1, temperatureC: 40, uptimeS: 1, models };
    fleet.handle(topics.device(id, 'telemetry'), Buffer.from(JSON.stringify(makeTelemetry(s, 0, sample))));
  }
}
const afterTelemetry = used();
for (let e = 0; e < (worst ? REPORT_LIMITS.perDevice * 2 : 4); e++) {
  for (const id of ids) {
    const event = worst
      ? makeEvent('model.failed', { model: long(64, 'm'), version: 9, error: { code: 'load_failed', message: long(20_000, 'é') } })
      : makeEvent('model.activated', { model: 'm', version: e + 1, previous: e || null });
    fleet.handle(topics.device(id, 'events'), Buffer.from(JSON.stringify(event)));
  }
}
const afterEvents = used();
const check = [fleet.history.health(ids[0], `model-${long(50, 'm')}-0@1`, 0).length, fleet.reports.list(ids[0]).reports.length, state.device(ids[0]).info.models.length];
const per = (a, b) => Math.round((b - a) / devices);
process.stdout.write(`${JSON.stringify({ devices, mode: worst ? 'worst' : 'typical', check, statusAndRecord: per(base, afterStatus), telemetry: per(afterStatus, afterTelemetry), reports: per(afterTelemetry, afterEvents), total: per(base, afterEvents) })}\n`);
await rm(dir, { recursive: true, force: true });
