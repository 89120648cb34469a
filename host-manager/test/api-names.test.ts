/**
 * Names users choose are lookup keys: through the HTTP API, names that a plain object
 * answers from its prototype (constructor, toString, hasOwnProperty) work like any other,
 * and `__proto__` is refused as an invalid name; none of them gives a 500 or a false 200.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createManager } from '../src/main.js';
import type { Manager } from '../src/main.js';
import { linearModel } from '../../test/support/onnx-models.js';

const PROTOTYPE_NAMES = ['constructor', 'toString', 'hasOwnProperty', 'valueOf'];

let dir: string;
let m: Manager;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'api-names-'));
  m = await createManager({ dataDir: dir, mqttHost: '127.0.0.1', mqttPort: 0, mqttWsPort: false, httpPort: 0, logger: pino({ level: 'silent' }) });
});

afterAll(async () => {
  await m?.close();
  await rm(dir, { recursive: true, force: true });
});

async function call(method: string, path: string, body?: unknown, type = 'application/json'): Promise<{ status: number; body: { error?: { code: string; message: string } } & Record<string, unknown> }> {
  const res = await fetch(`${m.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${m.operator.token}`, ...(body === undefined ? {} : { 'content-type': type }) },
    ...(body === undefined ? {} : { body: body instanceof Uint8Array ? new Blob([body as Uint8Array<ArrayBuffer>]) : JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as { error?: { code: string; message: string } } & Record<string, unknown> };
}

describe('device names', () => {
  it.each(PROTOTYPE_NAMES)('"%s" is unknown until added, then shown and removed like any device', async (name) => {
    expect((await call('GET', `/api/devices/${name}`)).status).toBe(404);
    expect((await call('DELETE', `/api/devices/${name}`)).status).toBe(404);
    const added = await call('POST', '/api/devices', { id: name, groups: [name] });
    expect(added.status).toBe(201);
    expect(await call('GET', `/api/devices/${name}`)).toMatchObject({ status: 200, body: { id: name, groups: [name], provisioned: true } });
    expect((await call('GET', '/api/groups')).body).toEqual(expect.arrayContaining([{ name, devices: [name], online: 0 }]));
    expect((await call('POST', '/api/devices', { id: name })).status).toBe(409);
    expect(await call('DELETE', `/api/devices/${name}`)).toMatchObject({ status: 200, body: { removed: name } });
    expect((await call('GET', `/api/devices/${name}`)).status).toBe(404);
  });

  it('refuses __proto__ as a device id with 400 and stores nothing', async () => {
    const r = await call('POST', '/api/devices', { id: '__proto__' });
    expect(r).toMatchObject({ status: 400, body: { error: { code: 'invalid_params', message: expect.stringMatching(/invalid device id/) } } });
    expect((await call('GET', '/api/devices/__proto__')).status).toBe(404);
    expect((await call('GET', '/api/devices')).body).toEqual([]);
  });
});

describe('model names', () => {
  const bytes = linearModel({ seed: 3 }).bytes;

  it.each(PROTOTYPE_NAMES)('"%s" is unknown until added, then versioned, shown and removed like any model', async (name) => {
    expect((await call('GET', `/api/models/${name}`)).status).toBe(404);
    expect((await call('DELETE', `/api/models/${name}/1`)).status).toBe(404);
    const added = await call('POST', `/api/models?name=${name}`, new Uint8Array(bytes) as Uint8Array<ArrayBuffer>, 'application/octet-stream');
    expect(added).toMatchObject({ status: 201, body: { name, version: 1, created: true } });
    expect(await call('GET', `/api/models/${name}`)).toMatchObject({ status: 200, body: { name, version: 1, versions: [1], activeOn: [] } });
    expect((await call('GET', `/api/models?name=${name}`)).body).toHaveLength(1);
    expect(await call('DELETE', `/api/models/${name}/1`)).toMatchObject({ status: 200, body: { removed: true } });
    expect((await call('GET', `/api/models/${name}`)).status).toBe(404);
    // the removed number is not given again, under this name either
    expect(await call('POST', `/api/models?name=${name}`, new Uint8Array(bytes) as Uint8Array<ArrayBuffer>, 'application/octet-stream')).toMatchObject({ status: 201, body: { version: 2 } });
  });

  it('refuses __proto__ as a model name with 400', async () => {
    expect(await call('POST', '/api/models?name=__proto__', new Uint8Array(bytes) as Uint8Array<ArrayBuffer>, 'application/octet-stream')).toMatchObject({ status: 400, body: { error: { code: 'invalid_params' } } });
    expect((await call('GET', '/api/models/__proto__')).status).toBe(400);
  });
});

describe('rollout ids', () => {
  it.each(['constructor', 'toString'])('"%s" is no rollout: 404', async (name) => {
    expect((await call('GET', `/api/rollouts/${name}`)).status).toBe(404);
    expect((await call('POST', `/api/rollouts/${name}/abort`)).status).toBe(404);
  });
});
