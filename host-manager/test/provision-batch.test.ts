/**
 * Batch provisioning through the HTTP API (POST /api/devices/batch, POST /api/devices/batch-remove),
 * against a real controller with its embedded broker: all of a batch or none of it, tokens
 * that work at once on the broker, one durable write and one audit entry per batch, removal
 * that disconnects.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { createManager } from '../src/main.js';
import type { Manager } from '../src/main.js';

let dir: string;
let m: Manager;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'provision-batch-'));
  m = await createManager({ dataDir: dir, mqttHost: '127.0.0.1', mqttPort: 0, mqttWsPort: false, httpPort: 0, logger: pino({ level: 'silent' }) });
});

afterAll(async () => {
  await m?.close();
  await rm(dir, { recursive: true, force: true });
});

type Answer = { status: number; body: Record<string, unknown> & { error?: { code: string; message: string } } };
async function call(method: string, path: string, body?: unknown): Promise<Answer> {
  const res = await fetch(`${m.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${m.operator.token}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Answer['body'] };
}

const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const deviceIds = async () => ((await call('GET', '/api/devices')).body as unknown as { id: string }[]).map((d) => d.id).sort();

function connect(id: string, token: string): Promise<mqtt.MqttClient> {
  return mqtt.connectAsync(m.brokerUrl, { clientId: id, username: id, password: token, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 });
}

describe('batch provisioning', () => {
  it('provisions a thousand devices with one call; each token connects at once; one audit entry', async () => {
    const written = (await m.metrics.stateBytesWritten.get()).values[0]?.value ?? 0;
    const r = await call('POST', '/api/devices/batch', { devices: ids('b-', 1000).map((id) => ({ id })), groups: ['lab'] });
    expect(r.status).toBe(201);
    const devices = r.body['devices'] as { id: string; groups: string[]; token: string; httpPort: number }[];
    expect(devices).toHaveLength(1000);
    // each its own agent port (a batch is stored at once, so the ports are chosen within the batch too)
    expect(new Set(devices.map((d) => d.httpPort)).size).toBe(1000);
    expect(devices[0]!.httpPort).toBe(8470);
    expect(r.body).toMatchObject({ broker: m.advertisedBrokerUrl, fleetPublicKey: m.keys.publicKeyPem });
    expect(new Set(devices.map((d) => d.token)).size).toBe(1000);
    expect(devices[0]).toMatchObject({ id: 'b-0', groups: ['lab'] });
    // the tokens are stored only as hashes
    const file = await readFile(join(dir, 'state.json'), 'utf8');
    expect(file).not.toContain(devices[0]!.token);
    // one durable write for the batch (the file and its last-good copy), not one per device
    const after = (await m.metrics.stateBytesWritten.get()).values[0]?.value ?? 0;
    expect(after - written).toBeLessThan(4 * Buffer.byteLength(file));
    const audit = (await call('GET', '/api/audit?limit=10')).body as unknown as { action: string; target: string }[];
    expect(audit.filter((e) => e.action === 'device.add')).toEqual([expect.objectContaining({ target: '1000 devices' })]);
    for (const d of [devices[0]!, devices[999]!]) {
      const c = await connect(d.id, d.token);
      expect(c.connected).toBe(true);
      await c.endAsync();
    }
  });

  it('refuses the whole batch when one id is bad, taken or repeated, and stores none of it', async () => {
    const before = await deviceIds();
    const bad = await call('POST', '/api/devices/batch', { devices: [{ id: 'fresh-1' }, { id: 'no spaces' }, { id: 'fresh-2' }] });
    expect(bad).toMatchObject({ status: 400, body: { error: { code: 'invalid_params', message: expect.stringMatching(/1 of 3 devices refused, none provisioned: .*no spaces/) } } });
    const taken = await call('POST', '/api/devices/batch', { devices: [{ id: 'fresh-3' }, { id: 'b-7' }] });
    expect(taken).toMatchObject({ status: 409, body: { error: { code: 'conflict', message: expect.stringMatching(/device b-7 already exists; remove it first/) } } });
    const twice = await call('POST', '/api/devices/batch', { devices: [{ id: 'fresh-4' }, { id: 'fresh-4' }] });
    expect(twice).toMatchObject({ status: 409, body: { error: { message: expect.stringMatching(/fresh-4 is in the list twice/) } } });
    const reserved = await call('POST', '/api/devices/batch', { devices: [{ id: 'admin-cam' }] });
    expect(reserved.status).toBe(400);
    expect(await deviceIds()).toEqual(before);
  });

  it('refuses an empty batch and one over 1,000, saying to split it', async () => {
    expect((await call('POST', '/api/devices/batch', { devices: [] })).status).toBe(400);
    const big = await call('POST', '/api/devices/batch', { devices: ids('x-', 1001).map((id) => ({ id })) });
    expect(big).toMatchObject({ status: 400, body: { error: { message: expect.stringMatching(/at most 1000 devices per batch, got 1001; split the list/) } } });
  });

  it('removes a batch: the tokens stop working, connected devices are disconnected, unknown ids are listed', async () => {
    const added = (await call('POST', '/api/devices/batch', { devices: ids('rm-', 3).map((id) => ({ id })) })).body['devices'] as { id: string; token: string }[];
    const c = await connect(added[0]!.id, added[0]!.token);
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    const r = await call('POST', '/api/devices/batch-remove', { ids: ['rm-0', 'rm-1', 'rm-2', 'never-was'] });
    expect(r).toMatchObject({ status: 200, body: { removed: ['rm-0', 'rm-1', 'rm-2'], notFound: ['never-was'] } });
    await closed;
    c.end(true);
    await expect(connect(added[1]!.id, added[1]!.token)).rejects.toThrow(/Bad username or password|Not authorized/i);
    expect((await deviceIds()).filter((id) => id.startsWith('rm-'))).toEqual([]);
  });
});
