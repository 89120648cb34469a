import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { pino } from 'pino';
import { makeOffline, makeStatus, makeTelemetry, topics } from '@edgefleet/protocol';
import { deviceInfo as info } from './support/device-info.js';
import { createManager } from '../src/main.js';
import type { Manager } from '../src/main.js';
import { openState } from '../src/state/repository.js';
import { DurableJsonFile } from '../src/state/store.js';
import { linearModel } from '../../test/support/onnx-models.js';

async function until<T>(what: string, check: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('DurableJsonFile', () => {
  it('coalesces concurrent writes, resolves each once on disk, and leaves whole JSON with mode 0600', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'durable-'));
    try {
      const file = join(dir, 's.json');
      const adapter = new DurableJsonFile<{ n: number }>(file);
      await Promise.all(Array.from({ length: 50 }, (_, i) => adapter.write({ n: i })));
      expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ n: 49 });
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect(await new DurableJsonFile(join(dir, 'missing.json')).read()).toBeNull();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the controller in-process', () => {
  let dir: string;
  let m: Manager;
  let token: string;
  const clients: MqttClient[] = [];

  const connectDevice = (id: string, password: string): Promise<MqttClient> =>
    new Promise((resolve, reject) => {
      const c = mqtt.connect(m.brokerUrl, {
        clientId: id,
        username: id,
        password,
        protocolVersion: 4,
        reconnectPeriod: 0,
        will: { topic: topics.device(id, 'status'), payload: Buffer.from(JSON.stringify(makeOffline('connection lost'))), qos: 1, retain: true },
      });
      clients.push(c);
      c.once('connect', () => resolve(c));
      c.once('error', reject);
    });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'manager-'));
    m = await createManager({ dataDir: dir, mqttHost: '127.0.0.1', mqttPort: 0, mqttWsPort: false, httpPort: 0, logger: pino({ level: 'silent' }) });
    token = (await m.ops.addDevice({ id: 'dev-1', groups: ['g'], actor: 'operator:test' })).token;
    for (const name of ['m', 'other']) {
      await writeFile(join(dir, `${name}.onnx`), linearModel({ seed: name.length }).bytes);
      await m.registry.add(join(dir, `${name}.onnx`), { name });
    }
  });

  afterAll(async () => {
    for (const c of clients) c.end(true);
    await m?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a device with a wrong token', async () => {
    await expect(connectDevice('dev-1', 'not-the-token')).rejects.toThrow(/Not authorized|Bad username or password/i);
  });

  it('learns presence and telemetry, and drops malformed messages with a count', async () => {
    const c = await connectDevice('dev-1', token);
    const bad = async (): Promise<number> => (await m.metrics.badMessages.get()).values.reduce((n, v) => n + v.value, 0);
    await c.publishAsync(topics.device('dev-1', 'telemetry'), 'not json', { qos: 1 });
    await c.publishAsync(topics.device('dev-1', 'status'), JSON.stringify({ v: 1, type: 'status', online: true }), { qos: 1 });
    await c.publishAsync(topics.device('dev-1', 'events'), JSON.stringify({ v: 1, id: 'x', ts: 1, type: 'event', event: 'nope', data: {} }), { qos: 1 });
    await c.publishAsync(topics.device('dev-1', 'status'), JSON.stringify(makeStatus(info)), { qos: 1, retain: true });
    await until('online', () => (m.fleet.isOnline('dev-1') ? true : undefined));
    expect(await bad()).toBe(3);
    const byCode = (await m.metrics.badMessages.get()).values.map((v) => [v.labels.channel, v.labels.code, v.value]);
    expect(byCode).toEqual(expect.arrayContaining([['telemetry', 'bad_request', 1], ['status', 'bad_request', 1], ['events', 'bad_request', 1]]));
    expect(m.state.device('dev-1')!.info?.hostname).toBe('h');

    const health = { requests: 10, errors: 1, p50Ms: 1, p95Ms: 2, p99Ms: 3 };
    // m@1 is in the registry and active on the device; other@1 is in the registry but not running there; ghost@1 is not known at all
    const models = { 'm@1': health, 'other@1': health, 'ghost@1': health };
    const sample = { ts: Date.now(), cpuPercent: 12, load: [0.1], memoryUsedBytes: 1, memoryTotalBytes: 2, diskFreeBytes: null, temperatureC: 41.5, uptimeS: 3, models };
    await c.publishAsync(topics.device('dev-1', 'telemetry'), JSON.stringify(makeTelemetry(1, 0, sample)), { qos: 1 });
    await until('telemetry', () => m.state.device('dev-1')!.telemetry ?? undefined);
    expect(m.fleet.history.health('dev-1', 'm@1', 0)).toEqual([{ requests: 10, errors: 1, p95Ms: 2 }]);
    expect(Object.keys(m.state.device('dev-1')!.telemetry!.models)).toEqual(['m@1']);
    expect(m.fleet.history.health('dev-1', 'other@1', 0)).toEqual([]);
    const dropped = (await m.metrics.telemetryModelsDropped.get()).values.map((v) => [v.labels.reason, v.value]);
    expect(dropped).toEqual(expect.arrayContaining([['unknown_model', 1], ['not_running', 1]]));
    expect(m.ops.deviceReports({ device: 'dev-1' }).dropped).toEqual({ events: 0, telemetryModels: 2 });

    // The last will marks it offline when the connection drops without a goodbye.
    c.stream.destroy();
    await until('offline', () => (m.fleet.isOnline('dev-1') ? undefined : true));
    expect(m.state.device('dev-1')!.offlineReason).toBe('connection lost');
  });

  it('keeps acknowledged state across a restart, never the token itself', async () => {
    await m.close();
    const text = await readFile(join(dir, 'state.json'), 'utf8');
    expect(text).not.toContain(token);
    const db = await openState(join(dir, 'state.json'));
    expect(db.device('dev-1')).toMatchObject({ id: 'dev-1', groups: ['g'], provisioned: true });
    expect(db.device('dev-1')!.tokenHash).toMatch(/^sha256\$/); // a random 256-bit token: one salted SHA-256 (node-io hashRandomToken)
    expect(db.auditTail(5000).map((a) => a.action)).toContain('device.add');
    // The same data directory starts again with the same operator and keys.
    const again = await createManager({ dataDir: dir, mqttHost: '127.0.0.1', mqttPort: 0, mqttWsPort: false, httpPort: 0, logger: pino({ level: 'silent' }) });
    expect(again.operator.created).toBe(false);
    expect(again.keys.keyId).toBe(m.keys.keyId);
    expect(again.state.device('dev-1')!.online).toBe(false);
    m = again;
  });
});
