/**
 * Issue 10, class 5: a device id must never shadow the operator. Devices and operators
 * share one namespace of ids, and the ids the system uses are reserved: provisioning and
 * enrolment refuse a clash with 400 and a sentence, the operator still logs in (HTTP and
 * MQTT), and the controller restarts, even on a state file written before the rule that
 * already holds a device with the operator's id.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { api, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';

const OPERATOR = 'ops';

const enrol = (m: ManagerProcess, key: string, id: string): Promise<Response> =>
  fetch(`${m.url}/enrol`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ id }) });

/** The operator's own MQTT login on the embedded broker: resolves with the CONNACK return code. */
function operatorLogin(m: ManagerProcess, clientId = `${OPERATOR}-test`): Promise<number> {
  return new Promise((resolve) => {
    const c = mqtt.connect(m.broker, { clientId, username: OPERATOR, password: m.token, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 });
    c.once('connect', () => c.end(true, {}, () => resolve(0)));
    c.once('error', (err) => (c.end(true), resolve((err as { code?: number }).code ?? -1)));
  });
}

interface StateFile {
  devices: Record<string, { id: string } & Record<string, unknown>>;
  operators: Record<string, unknown>;
}

describe('one namespace of ids for devices and operators, on the real controller', () => {
  let m: ManagerProcess;
  let dataDir: string;
  let key: string;

  beforeAll(async () => {
    m = await startManager({ args: ['--operator', OPERATOR, '--enrolment'] });
    dataDir = m.dataDir;
    key = (await readFile(join(dataDir, 'enrolment.key'), 'utf8')).trim();
  });
  afterAll(async () => {
    await m?.cleanup();
  });

  it.each([
    [OPERATOR, /is the id of an operator; devices and operators share one namespace/],
    ['OPS', /is the id of an operator/],
    [`${OPERATOR}-controller-0a1b2c`, /falls in operator "ops"'s client ids/],
    [`${OPERATOR}-cli`, /falls in operator "ops"'s client ids/],
    ['admin', /is reserved/],
    ['controller', /is reserved/],
    ['enrolment', /is reserved/],
    ['anonymous', /is reserved/],
  ])('refuses a device named %s, by the operator and by enrolment, with 400 and the reason', async (id, reason) => {
    const added = await api<{ error: { code: string; message: string } }>(m, 'POST', '/api/devices', { id, groups: [] });
    expect([added.status, added.body.error.code]).toEqual([400, 'invalid_params']);
    expect(added.body.error.message).toMatch(reason);
    const enrolled = await enrol(m, key, id);
    expect(enrolled.status).toBe(400);
    expect(((await enrolled.json()) as { error: { message: string } }).error.message).toMatch(reason);
  });

  it('leaves the operator able to log in, nothing stored, and the controller restarts', async () => {
    expect(await operatorLogin(m)).toBe(0);
    expect((await api(m, 'GET', '/api/devices')).status).toBe(200);
    const state = JSON.parse(await readFile(join(dataDir, 'state.json'), 'utf8')) as StateFile;
    expect(Object.keys(state.devices)).toEqual([]);
    // a device with an ordinary id is still welcome
    expect((await api(m, 'POST', '/api/devices', { id: 'pi-1', groups: [] })).status).toBe(201);

    await m.kill('SIGTERM');
    m = await startManager({ dataDir, args: ['--operator', OPERATOR, '--enrolment'] });
    expect(await operatorLogin(m)).toBe(0);
    expect((await (await fetch(`${m.url}/health`)).json()) as { ok: boolean }).toMatchObject({ ok: true });
  });

  it('on a state file from before the rule, holding a device with the operator\'s id, the operator still logs in and the controller starts', async () => {
    await m.kill('SIGTERM');
    const file = join(dataDir, 'state.json');
    const state = JSON.parse(await readFile(file, 'utf8')) as StateFile;
    // what an older controller accepted: the device `ops`, with a credential of its own
    state.devices[OPERATOR] = { ...state.devices['pi-1']!, id: OPERATOR };
    await writeFile(file, JSON.stringify(state));
    m = await startManager({ dataDir, args: ['--operator', OPERATOR, '--enrolment'] });
    expect(await operatorLogin(m)).toBe(0); // the operator's credential is found first, so its token still opens it
    expect((await api(m, 'GET', '/api/devices/pi-1')).status).toBe(200);
  });
});
