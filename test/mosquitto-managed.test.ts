/**
 * Mosquitto managed for you, against a real Mosquitto 2 (Debian's, with its dynamic security
 * plugin): `hostManager broker setup mosquitto` writes the broker's config and initial accounts,
 * the controller finds the plugin and gives each device it provisions a client and a role with
 * exactly the protocol's ACL; a device connects with what `devices add` printed, a model is
 * deployed and answers; another device is held to its own topics; removing the device
 * disconnects it and it can no longer connect. Then the same without the plugin: a password
 * file (Mosquitto's own PBKDF2-SHA512 hash, made in node:crypto) and an ACL file generated from
 * the protocol's rules, which the real Mosquitto accepts and enforces.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { appendFile, chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { publishGrants, subscribeGrants, topics } from '@edgefleet/protocol';
import { cleanupAgents, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { MANAGER_BIN, api, eventually, freePort, runCli, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';
import { runMosquitto } from './support/mosquitto.js';
import { allClose, linearModel } from './support/onnx-models.js';

/** `hostManager broker setup mosquitto …` as a process (no controller needed). */
function setup(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MANAGER_BIN, 'broker', 'setup', 'mosquitto', ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** An MQTT 3.1.1 login; resolves with the client, or rejects with the broker's refusal. */
function login(url: string, username: string, password: string, clientId = username): Promise<MqttClient> {
  return mqtt.connectAsync(url, { username, password, clientId, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 });
}

/** The QoS the broker granted for each filter (128: refused; MQTT.js reports a refusal as an error of the SUBACK). */
async function granted(client: MqttClient, filters: string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const f of filters) {
    out[f] = await client.subscribeAsync(f, { qos: 0 }).then(
      (g) => g[0]!.qos,
      (error: Error) => {
        if (error.name !== 'ErrorWithSubackPacket') throw error;
        return 128;
      },
    );
  }
  return out;
}

/** One request to the dynamic security API, as the operator. */
async function dynsec(client: MqttClient, command: Record<string, unknown>): Promise<{ error?: string; data?: Record<string, unknown> }> {
  await client.subscribeAsync('$CONTROL/dynamic-security/v1/response');
  return new Promise((resolve) => {
    client.once('message', (_t, p) => resolve((JSON.parse(p.toString()) as { responses: { error?: string; data?: Record<string, unknown> }[] }).responses[0]!));
    client.publish('$CONTROL/dynamic-security/v1', JSON.stringify({ commands: [command] }));
  });
}

/** A work directory Mosquitto's own user can reach (it drops root), the controller's data dir in it, a free port. */
async function workspace(prefix: string): Promise<{ work: string; dataDir: string; port: number; url: string }> {
  const work = await mkdtemp(join(tmpdir(), prefix));
  await chmod(work, 0o755);
  const port = await freePort();
  return { work, dataDir: join(work, 'controller'), port, url: `mqtt://127.0.0.1:${port}` };
}

describe('Mosquitto with the dynamic security plugin, managed by the controller', () => {
  let work: string;
  let dataDir: string;
  let port: number;
  let url: string;
  let mosquitto: ChildProcess | undefined;
  let m: ManagerProcess;
  let agent: AgentProcess | undefined;
  let admin: MqttClient | undefined;
  const model = linearModel({ seed: 31 });

  beforeAll(async () => {
    ({ work, dataDir, port, url } = await workspace('mosq-dynsec-'));
    await writeFile(join(work, 'lin.onnx'), model.bytes);
  });

  afterAll(async () => {
    await admin?.endAsync().catch(() => undefined);
    await cleanupAgents(agent);
    await m?.cleanup({ keepDataDir: true });
    mosquitto?.kill('SIGKILL');
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("writes Mosquitto's config and initial accounts, and keeps the controller's password 0600", async () => {
    const r = setup(['--out', join(work, 'mosquitto'), '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`mosquitto -c ${join(work, 'mosquitto', 'mosquitto.conf')}`);
    const conf = await readFile(join(work, 'mosquitto', 'mosquitto.conf'), 'utf8');
    expect(conf).toMatch(/^plugin \/usr\/lib\/[a-z0-9_-]+\/mosquitto_dynamic_security\.so$/m);
    expect(conf).toContain(`listener ${port} 127.0.0.1`);
    expect(conf).toContain('allow_anonymous false');
    expect((await stat(join(work, 'mosquitto', 'dynamic-security.json'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(dataDir, 'broker.password'))).mode & 0o777).toBe(0o600);
    // nothing is overwritten without --force: the file holds the broker's live accounts
    const again = setup(['--out', join(work, 'mosquitto'), '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists .*--force/);
    mosquitto = await runMosquitto(join(work, 'mosquitto', 'mosquitto.conf'), port);
  });

  it('the controller finds the plugin and logs in with the stored password', async () => {
    m = await startManager({ dataDir, args: [url] });
    const health = (await (await fetch(`${m.url}/health`)).json()) as { ok: boolean; broker: { accounts: string } };
    expect(health).toMatchObject({ ok: true, broker: { accounts: 'mosquitto-dynsec' } });
    admin = await login(url, 'admin', (await readFile(join(dataDir, 'broker.password'), 'utf8')).trim(), 'admin-test');
    // the operator's own token is not the broker password, and nobody anonymous gets in
    await expect(login(url, 'admin', m.token, 'admin-test2')).rejects.toThrow(/Not authorized|Bad user name or password/);
    await expect(mqtt.connectAsync(url, { clientId: 'anon', protocolVersion: 4, reconnectPeriod: 0 })).rejects.toThrow();
  });

  it("provisions a device with exactly the protocol's ACL; it connects as printed, is deployed to and answers", async () => {
    const added = await runCli(m, ['devices', 'add', 'pi-1', '--group', 'lab', '--json']);
    expect(added.code).toBe(0);
    const r = added.json<{ token: string; config: { broker: string } }>();
    expect(r.config.broker).toBe(url);
    const role = await dynsec(admin!, { command: 'getRole', rolename: 'edgefleet-device-pi-1' });
    const acls = (role.data?.['role'] as { acls: { acltype: string; topic: string; allow: boolean }[] }).acls;
    const who = { role: 'device' as const, id: 'pi-1', groups: ['lab'] };
    const expected = [
      ...publishGrants(who, { legacyTopic: 'hello' }).map((t) => `publishClientSend ${t}`),
      ...subscribeGrants(who, { legacyTopic: 'hello' }).flatMap((t) => [`subscribePattern ${t}`, `publishClientReceive ${t}`]),
    ].sort();
    expect(acls.map((a) => `${a.acltype} ${a.topic}`).sort()).toEqual(expected);
    expect(acls.every((a) => a.allow)).toBe(true);

    agent = await spawnAgent({ broker: url, id: 'pi-1', token: r.token, groups: ['lab'], args: ['--fleet-public-key', m.publicKeyFile] });
    await eventually('pi-1 online', async () => ((await api<{ online: boolean }>(m, 'GET', '/api/devices/pi-1')).body.online ? true : undefined));
    expect((await runCli(m, ['models', 'add', join(work, 'lin.onnx'), '--name', 'lin'])).code).toBe(0);
    const deployed = await runCli(m, ['deploy', 'lin', '--to', 'group:lab', '--soak', '0', '--wait', '--json'], { timeoutMs: 60_000 });
    expect(deployed.json<{ status: string }>().status).toBe('succeeded');
    const x = [0.5, -1, 2, 0.25];
    const out = await api<{ outputs: { y: { data: number[] } } }>(m, 'POST', '/api/devices/pi-1/infer', { model: 'lin', inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } });
    expect(out.status).toBe(200);
    expect(allClose(out.body.outputs.y.data, model.expected(x))).toBe(true);
  }, 90_000);

  it('holds another device to its own topics and its own client id; a group change changes its role', async () => {
    const r = (await runCli(m, ['devices', 'add', 'pi-2', '--group', 'field', '--json'])).json<{ token: string }>();
    await expect(login(url, 'pi-2', r.token, 'not-pi-2')).rejects.toThrow(/Not authorized|Identifier rejected/);
    const pi2 = await login(url, 'pi-2', r.token);
    expect(await granted(pi2, [topics.device('pi-2', 'commands'), topics.group('field', 'commands'), topics.device('pi-1', 'commands'), topics.group('lab', 'commands'), '#', '$SYS/#', '$CONTROL/dynamic-security/v1/response'])).toEqual({
      [topics.device('pi-2', 'commands')]: 0,
      [topics.group('field', 'commands')]: 0,
      [topics.device('pi-1', 'commands')]: 128,
      [topics.group('lab', 'commands')]: 128,
      '#': 128,
      '$SYS/#': 128,
      '$CONTROL/dynamic-security/v1/response': 128,
    });
    // Mosquitto disconnects a client whose role changes (it logs in again under the new ACL; an agent reconnects by itself)
    const kicked = new Promise<void>((resolve) => pi2.once('close', () => resolve()));
    expect((await runCli(m, ['devices', 'set', 'pi-2', '--groups', 'field,lab'])).code).toBe(0);
    await kicked;
    const again = await login(url, 'pi-2', r.token);
    expect(await granted(again, [topics.group('lab', 'commands'), topics.group('field', 'commands'), topics.group('other', 'commands')])).toEqual({
      [topics.group('lab', 'commands')]: 0,
      [topics.group('field', 'commands')]: 0,
      [topics.group('other', 'commands')]: 128,
    });
    await again.endAsync();
    await pi2.endAsync();
  });

  it('a removed device is disconnected and can no longer connect', async () => {
    const token = (await runCli(m, ['devices', 'add', 'pi-3', '--json'])).json<{ token: string }>().token;
    const pi3 = await login(url, 'pi-3', token);
    const closed = new Promise<void>((resolve) => pi3.once('close', () => resolve()));
    expect((await runCli(m, ['devices', 'remove', 'pi-3'])).code).toBe(0);
    await closed;
    await expect(login(url, 'pi-3', token)).rejects.toThrow(/Not authorized/);
    // the agent of a removed device is cut off too
    expect((await runCli(m, ['devices', 'remove', 'pi-1'])).code).toBe(0);
    await agent!.waitForLog((l) => l.msg === 'disconnected from the broker', 15_000);
    await agent!.waitForLog((l) => l.msg === 'MQTT error' && /Not authorized/.test(JSON.stringify(l.err)), 15_000);
    const roles = await dynsec(admin!, { command: 'listRoles' });
    expect(roles.data?.['roles']).toEqual(expect.not.arrayContaining(['edgefleet-device-pi-1', 'edgefleet-device-pi-3']));
    expect(roles.data?.['roles']).toEqual(expect.arrayContaining(['edgefleet-device-pi-2']));
  });

  it('a batch of devices gets its accounts in Mosquitto too; a batch removal deletes them there', async () => {
    const r = await api<{ devices: { id: string; token: string }[] }>(m, 'POST', '/api/devices/batch', { devices: [{ id: 'bt-1' }, { id: 'bt-2' }], groups: ['lab'] });
    expect(r.status).toBe(201);
    for (const d of r.body.devices) await (await login(url, d.id, d.token)).endAsync();
    const gone = await api<{ removed: string[] }>(m, 'POST', '/api/devices/batch-remove', { ids: ['bt-1', 'bt-2'] });
    expect(gone.body.removed).toEqual(['bt-1', 'bt-2']);
    for (const d of r.body.devices) await expect(login(url, d.id, d.token)).rejects.toThrow(/Not authorized/);
    const clients = await dynsec(admin!, { command: 'listClients' });
    expect(clients.data?.['clients']).toEqual(expect.not.arrayContaining(['bt-1', 'bt-2']));
  });
});

describe('Mosquitto without the plugin: a password file and an ACL file from the protocol', () => {
  let work: string;
  let dataDir: string;
  let port: number;
  let url: string;
  let mosquitto: ChildProcess | undefined;
  let m: ManagerProcess;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    ({ work, dataDir, port, url } = await workspace('mosq-static-'));
  });

  afterAll(async () => {
    await cleanupAgents(agent);
    await m?.cleanup({ keepDataDir: true });
    mosquitto?.kill('SIGKILL');
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("accepts the controller's and a device's node:crypto hashes and enforces the generated ACL", async () => {
    const dir = join(work, 'mosquitto');
    expect(setup(['--static', '--out', dir, '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir]).code).toBe(0);
    expect(await readFile(join(dir, 'passwd'), 'utf8')).toMatch(/^admin:\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==\n$/);
    mosquitto = await runMosquitto(join(dir, 'mosquitto.conf'), port);
    m = await startManager({ dataDir, args: [url] });
    expect(((await (await fetch(`${m.url}/health`)).json()) as { broker: { accounts: string } }).broker.accounts).toBe('external');

    const added = (await runCli(m, ['devices', 'add', 'pi-9', '--group', 'lab', '--json'])).json<{ token: string; brokerCredential: { mosquittoPasswd: string } }>();
    expect(added.brokerCredential.mosquittoPasswd).toMatch(/^pi-9:\$7\$101\$/);
    await appendFile(join(dir, 'passwd'), `${added.brokerCredential.mosquittoPasswd}\n`);
    const acl = await runCli(m, ['broker', 'acl']);
    expect(acl.code).toBe(0);
    await writeFile(join(dir, 'acl'), `${acl.stdout}\n`);
    expect(acl.stdout).toContain('user pi-9');
    expect(acl.stdout).toContain(`topic read ${topics.group('lab', 'commands')}`);
    mosquitto.kill('SIGHUP'); // Mosquitto reads its password and ACL files again
    agent = await eventually('pi-9 connects after the reload', async () => {
      const a = await spawnAgent({ broker: url, id: 'pi-9', token: added.token, groups: ['lab'], args: ['--fleet-public-key', m.publicKeyFile] });
      const on = await eventually('pi-9 online', async () => ((await api<{ online: boolean }>(m, 'GET', '/api/devices/pi-9')).body.online ? true : undefined), 5000).catch(() => undefined);
      if (on) return a;
      await a.cleanup();
      return undefined;
    }, 30_000, 500);
    // the hash is checked, not just present
    await expect(login(url, 'pi-8', 'wrong-token')).rejects.toThrow(/Not authorized|Bad user name or password/);
    // a second device, held to its own topics by the generated ACL file
    const other = (await runCli(m, ['devices', 'add', 'pi-8', '--group', 'field', '--json'])).json<{ token: string; brokerCredential: { mosquittoPasswd: string } }>();
    await appendFile(join(dir, 'passwd'), `${other.brokerCredential.mosquittoPasswd}\n`);
    await writeFile(join(dir, 'acl'), `${(await runCli(m, ['broker', 'acl'])).stdout}\n`);
    mosquitto.kill('SIGHUP');
    const pi8 = await eventually('pi-8 logs in after the reload', () => login(url, 'pi-8', other.token).catch(() => undefined), 15_000, 300);
    // Mosquitto's ACL file grants every subscription in MQTT 3.1.1 and decides at delivery: what arrives is what counts
    const got: string[] = [];
    pi8.on('message', (topic) => got.push(topic));
    await pi8.subscribeAsync([topics.device('pi-8', 'commands'), topics.device('pi-9', 'commands')], { qos: 0 });
    await Promise.all([api(m, 'POST', '/api/exec', { to: 'pi-9', command: 'done' }), api(m, 'POST', '/api/exec', { to: 'pi-8', command: 'done' })]);
    await eventually('its own command delivered', async () => (got.includes(topics.device('pi-8', 'commands')) ? true : undefined));
    expect(got).not.toContain(topics.device('pi-9', 'commands'));
    // and it may publish only in its own subtree: a forged sample for pi-9 never reaches the controller, its own does
    const sample = (cpuPercent: number) => JSON.stringify({ v: 1, id: `t-${cpuPercent}`, ts: Date.now(), type: 'telemetry', seq: 1, dropped: 0, sample: { ts: Date.now(), cpuPercent, load: [0], memoryUsedBytes: 1, memoryTotalBytes: 2, diskFreeBytes: null, temperatureC: null, uptimeS: 1, models: {} } });
    await pi8.publishAsync(topics.device('pi-9', 'telemetry'), sample(4242), { qos: 1 });
    await pi8.publishAsync(topics.device('pi-8', 'telemetry'), sample(4343), { qos: 1 });
    await eventually("pi-8's own sample arrives", async () => ((await api<{ telemetry: { cpuPercent: number } | null }>(m, 'GET', '/api/devices/pi-8')).body.telemetry?.cpuPercent === 4343 ? true : undefined));
    expect((await api<{ telemetry: { cpuPercent: number } | null }>(m, 'GET', '/api/devices/pi-9')).body.telemetry?.cpuPercent).not.toBe(4242);
    await pi8.endAsync();
  }, 90_000);
});
