/**
 * Enrolment (off by default): a new device exchanges the fleet provisioning key
 * for its own credential, then connects with it.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupAgents, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { api, eventually, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';

const enrol = (m: ManagerProcess, key: string, body: unknown): Promise<Response> =>
  fetch(`${m.url}/enrol`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

describe('enrolment with the fleet provisioning key', () => {
  const managers: ManagerProcess[] = [];
  let agent: AgentProcess | undefined;

  afterAll(async () => {
    await cleanupAgents(agent);
    for (const m of managers) await m.cleanup();
  });

  it('is off by default', async () => {
    const m = await startManager();
    managers.push(m);
    const r = await enrol(m, 'anything', { id: 'new-1' });
    expect(r.status).toBe(404);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('not_found');
    await expect(stat(join(m.dataDir, 'enrolment.key'))).rejects.toThrow(/ENOENT/);
  });

  it('gives a device that presents the key its own credential, once, in the configured group', async () => {
    const m = await startManager({ args: ['--enrolment', '--enrolment-group', 'field'] });
    managers.push(m);
    expect(m.stdout()).toMatch(/Fleet provisioning key \(shown once/);
    const key = (await readFile(join(m.dataDir, 'enrolment.key'), 'utf8')).trim();
    expect((await stat(join(m.dataDir, 'enrolment.key'))).mode & 0o777).toBe(0o600);

    expect((await enrol(m, 'wrong', { id: 'new-1' })).status).toBe(401);
    expect((await enrol(m, m.token, { id: 'new-1' })).status).toBe(401); // the operator token is not the provisioning key
    expect((await enrol(m, key, { id: '../x' })).status).toBe(400);
    expect((await enrol(m, key, { id: 'new-1', groups: ['admin'] })).status).toBe(400); // a device does not choose its groups

    const r = await enrol(m, key, { id: 'new-1' });
    expect(r.status).toBe(201);
    const body = (await r.json()) as { token: string; config: { groups: string[]; fleetPublicKey: string } };
    expect(body.config.groups).toEqual(['field']);
    expect((await enrol(m, key, { id: 'new-1' })).status).toBe(409); // no second credential for the same id

    agent = await spawnAgent({ broker: m.broker, id: 'new-1', token: body.token, groups: body.config.groups });
    const seen = await eventually('new-1 online', async () => {
      const d = await api<{ online: boolean; enrolled: boolean; groups: string[] }>(m, 'GET', '/api/devices/new-1');
      return d.body.online ? d.body : undefined;
    });
    expect(seen).toMatchObject({ enrolled: true, groups: ['field'] });
    // The enrolment is audited; the refused attempts are counted instead (anyone who reaches /enrol could otherwise fill the audit).
    const audit = (await api<{ action: string; result: string }[]>(m, 'GET', '/api/audit?limit=50')).body;
    expect(audit.filter((a) => a.action === 'device.enrol').map((a) => a.result)).toEqual(['ok']);
    expect(await (await fetch(`${m.url}/metrics`)).text()).toMatch(/edgefleet_enrolments_refused_total\{reason="wrong_key"\} 2/);
  });

  it('refuses a flood of enrolment attempts from one address with 429, without auditing them, and the operator keeps working', async () => {
    const m = await startManager({ args: ['--enrolment'] });
    managers.push(m);
    const answers: number[] = [];
    for (let i = 0; i < 15; i++) answers.push((await enrol(m, `wrong-${i}`, { id: `flood-${i}` })).status);
    expect(answers.slice(0, 10)).toEqual(Array(10).fill(401));
    expect(answers.slice(10)).toEqual(Array(5).fill(429));
    const limited = (await (await enrol(m, 'wrong', { id: 'flood-x' })).json()) as { error: { code: string; message: string } };
    expect(limited.error).toMatchObject({ code: 'rate_limited' });
    expect(limited.error.message).toMatch(/too many enrolment attempts from .* \(10 a minute\); retry in \d+ s/);
    const audit = (await api<{ action: string }[]>(m, 'GET', '/api/audit?limit=100')).body;
    expect(audit.filter((a) => a.action === 'device.enrol')).toEqual([]);
    expect((await api(m, 'GET', '/api/devices')).status).toBe(200);
  });
});
