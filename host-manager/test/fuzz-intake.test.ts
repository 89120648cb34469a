/**
 * The controller's message intake under random and mutated input for a bounded time (FUZZ_MS;
 * `npm run fuzz` for longer), with a real controller and its embedded broker: a provisioned
 * device publishes mutated status, telemetry, event and reply payloads on its own topics,
 * and the intake is also fed directly on random topics. Nothing may crash; bad messages are
 * counted and dropped; the device's record still matches the state schema, no device appears
 * that was never provisioned, no prototype is polluted, the state file still loads, and
 * memory stays bounded.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { errorReply, makeEvent, makeStatus, makeTelemetry, topics } from '@edgefleet/protocol';
import { createManager } from '../src/main.js';
import type { Manager } from '../src/main.js';
import { openState } from '../src/state/repository.js';
import { DeviceRecordSchema } from '../src/state/schema.js';
import { FUZZ_MS, fuzzFor, mutatePayload, random } from '../../test/support/fuzz.js';

let dir: string;
let m: Manager;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fuzz-intake-'));
  m = await createManager({ dataDir: dir, mqttHost: '127.0.0.1', mqttPort: 0, mqttWsPort: false, httpPort: 0, logger: pino({ level: 'silent' }) });
});
afterAll(async () => {
  await m?.close();
  await rm(dir, { recursive: true, force: true });
});

const info = { agentVersion: '1.0.0', hostname: 'fz', arch: 'arm64', platform: 'linux', cpus: 4, memoryBytes: 4e9, onnxruntime: { version: '1.30.0', executionProviders: ['cpu'] }, docker: false, groups: ['lab'], models: [{ name: 'm', version: 1 }] };
const sample = { ts: Date.now(), cpuPercent: 3, load: [0.1, 0.2, 0.3], memoryUsedBytes: 1e9, memoryTotalBytes: 4e9, diskFreeBytes: 1e10, temperatureC: 50, uptimeS: 100, models: { 'm@1': { requests: 5, errors: 0, p50Ms: 1, p95Ms: 2, p99Ms: 3 } } };

describe('the controller intake under fuzzed messages', () => {
  it(`survives ${FUZZ_MS} ms of mutated status, telemetry, events and replies`, async () => {
    const r = random();
    const added = await m.ops.addDevice({ id: 'fz', groups: ['lab'], actor: 'operator:test' });
    const device = await mqtt.connectAsync(m.brokerUrl, { clientId: 'fz', username: 'fz', password: added.token, protocolVersion: 4, reconnectPeriod: 0 });
    const valid = {
      status: () => makeStatus(info),
      telemetry: () => makeTelemetry(r.int(1000), r.int(3), { ...sample, ts: Date.now() }),
      events: () => makeEvent('model.activated', { model: 'm', version: 2, previous: 1 }),
      replies: () => errorReply('corr-1', { code: 'internal', message: 'x' }),
    };
    const channels = Object.keys(valid) as (keyof typeof valid)[];
    const heapBefore = process.memoryUsage().heapUsed;
    const bad = async () => (await m.metrics.badMessages.get()).values.reduce((n, v) => n + v.value, 0);
    const badBefore = await bad();

    const steps = await fuzzFor(FUZZ_MS, r, async () => {
      const channel = r.pick(channels);
      const payload = mutatePayload(valid[channel](), r);
      if (r.chance(0.7)) {
        await device.publishAsync(topics.device('fz', channel), payload, { qos: 1 });
      } else {
        // straight into the intake, on topics a broker would never route to it
        const topic = r.pick([topics.device('fz', channel), topics.device('ghost', channel), 'fleet/v1/devices//status', 'fleet/v1/devices/__proto__/telemetry', 'x/y', `fleet/v1/devices/fz/${'a/'.repeat(40)}`]);
        m.fleet.handle(topic, payload);
      }
    });
    // a valid status and sample still land
    await device.publishAsync(topics.device('fz', 'status'), JSON.stringify(makeStatus(info)), { qos: 1 });
    await device.publishAsync(topics.device('fz', 'telemetry'), JSON.stringify(makeTelemetry(5000, 0, { ...sample, ts: Date.now() })), { qos: 1 });
    await device.endAsync();

    expect(steps).toBeGreaterThan(0);
    expect(m.ops.health().ok).toBe(true);
    expect(await bad()).toBeGreaterThan(badBefore);
    const record = m.state.device('fz');
    expect(DeviceRecordSchema.safeParse(record).success).toBe(true);
    expect(record).toMatchObject({ info, telemetry: expect.objectContaining({ cpuPercent: 3 }) });
    expect(m.state.devices().map((d) => d.id)).toEqual(['fz']);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    await m.state.write();
    await expect(openState(join(dir, 'state.json'))).resolves.toBeDefined();
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(200 * 1024 * 1024);
  }, FUZZ_MS + 60_000);
});
