/**
 * Whole flows over real processes: the controller (hostManager with its
 * embedded broker), device agents, the CLI as a separate process, real
 * onnxruntime on models built here.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_BIN, cleanupAgents, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { MANAGER_BIN, api, eventually, runCli, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';
import { allClose, linearModel } from './support/onnx-models.js';

interface DeviceView {
  id: string;
  online: boolean;
  info: { models: { name: string; version: number }[] } | null;
}

async function online(m: ManagerProcess, id: string): Promise<DeviceView> {
  return eventually(`${id} online`, async () => {
    const r = await api<DeviceView>(m, 'GET', `/api/devices/${id}`);
    return r.status === 200 && r.body.online ? r.body : undefined;
  });
}

async function activeVersion(m: ManagerProcess, id: string, model: string): Promise<number | undefined> {
  const r = await api<DeviceView>(m, 'GET', `/api/devices/${id}`);
  return r.body.info?.models.find((x) => x.name === model)?.version;
}

describe('provision → connect → deploy → infer → roll back', () => {
  let m: ManagerProcess;
  let agent: AgentProcess | undefined;
  let work: string;
  const v1 = linearModel({ seed: 1 });
  const v2 = linearModel({ seed: 2 });
  const x = [0.5, -1, 2, 0.25];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'flows-'));
    await writeFile(join(work, 'lin-v1.onnx'), v1.bytes);
    await writeFile(join(work, 'lin-v2.onnx'), v2.bytes);
    await writeFile(join(work, 'input.json'), JSON.stringify({ inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } }));
    m = await startManager();
  });

  afterAll(async () => {
    await cleanupAgents(agent);
    await m?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it('provisions a device that then connects with what it was given', async () => {
    const added = await runCli(m, ['devices', 'add', 'pi-1', '--group', 'lab', '--json']);
    expect(added.code).toBe(0);
    const r = added.json<{ token: string; config: { broker: string; device: string; token: string; fleetPublicKey: string; groups: string[] }; commandInline: string }>();
    expect(r.config).toMatchObject({ device: 'pi-1', groups: ['lab'], token: r.token });
    expect(r.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(r.commandInline).toContain('--device pi-1');
    // The token is shown once and stored only hashed.
    const listed = await runCli(m, ['devices', 'show', 'pi-1', '--json']);
    expect(listed.stdout).not.toContain(r.token);
    expect(listed.stdout).not.toContain('tokenHash');

    // A second add of the same id is refused: a token is never re-issued silently.
    const again = await runCli(m, ['devices', 'add', 'pi-1', '--json']);
    expect(again.code).toBe(1);
    expect(again.json<{ error: { code: string } }>().error.code).toBe('conflict');

    // The agent connects to the embedded broker with exactly that config (written as its config file).
    const configFile = join(work, 'pi-1.json');
    await writeFile(configFile, JSON.stringify({ ...r.config, broker: m.broker, dataDir: join(work, 'agent-pi-1') }));
    agent = await spawnAgent({ broker: m.broker, id: 'pi-1', token: r.token, telemetryIntervalMs: 200, args: ['--config', configFile] });
    const seen = await online(m, 'pi-1');
    expect(seen.info).not.toBeNull();
  });

  it('deploys v1 with one command, infers through the controller, swaps to v2, rolls back to v1', async () => {
    expect((await runCli(m, ['models', 'add', join(work, 'lin-v1.onnx'), '--name', 'lin'])).code).toBe(0);
    const add2 = await runCli(m, ['models', 'add', join(work, 'lin-v2.onnx'), '--name', 'lin', '--json']);
    expect(add2.json<{ version: number }>().version).toBe(2);
    // Same bytes again: one version, nothing new.
    const same = await runCli(m, ['models', 'add', join(work, 'lin-v2.onnx'), '--name', 'lin', '--json']);
    expect(same.json<{ version: number; created: boolean }>()).toMatchObject({ version: 2, created: false });

    const d1 = await runCli(m, ['deploy', 'lin@1', '--to', 'pi-1', '--soak', '0', '--wait', '--json']);
    expect(d1.code).toBe(0);
    expect(d1.json<{ status: string }>().status).toBe('succeeded');

    const inferV1 = await runCli(m, ['infer', 'pi-1', 'lin', '--input', join(work, 'input.json'), '--json']);
    expect(inferV1.code).toBe(0);
    const out1 = inferV1.json<{ version: number; outputs: { y: { data: number[] } } }>();
    expect(out1.version).toBe(1);
    expect(allClose(out1.outputs.y.data, v1.expected(x))).toBe(true);

    // The script that swaps a model with one command.
    const swap = await runCli(m, ['deploy', 'lin@2', '--to', 'pi-1', '--soak', '0', '--wait', '--json']);
    expect(swap.code).toBe(0);
    const rollout = swap.json<{ id: string; status: string; devices: Record<string, { state: string; previous: number | null }> }>();
    expect(rollout.status).toBe('succeeded');
    expect(rollout.devices['pi-1']).toMatchObject({ state: 'switched', previous: 1 });
    const out2 = (await runCli(m, ['infer', 'pi-1', 'lin', '--input', join(work, 'input.json'), '--json'])).json<{ version: number; outputs: { y: { data: number[] } } }>();
    expect(out2.version).toBe(2);
    expect(allClose(out2.outputs.y.data, v2.expected(x))).toBe(true);

    const back = await runCli(m, ['rollback', rollout.id, '--json']);
    expect(back.code).toBe(0);
    expect(back.json<{ status: string; devices: Record<string, { state: string }> }>()).toMatchObject({ status: 'rolled-back', devices: { 'pi-1': { state: 'rolled-back' } } });
    const out3 = (await runCli(m, ['infer', 'pi-1', 'lin', '--input', join(work, 'input.json'), '--json'])).json<{ version: number; outputs: { y: { data: number[] } } }>();
    expect(out3.version).toBe(1);
    expect(allClose(out3.outputs.y.data, v1.expected(x))).toBe(true);
    await eventually('presence shows lin@1 again', async () => ((await activeVersion(m, 'pi-1', 'lin')) === 1 ? true : undefined));

    // Every operator action and device result is in the audit log.
    const audit = (await runCli(m, ['audit', '--limit', '200', '--json'])).json<{ action: string; result: string }[]>();
    const actions = audit.map((a) => a.action);
    for (const a of ['device.add', 'model.add', 'rollout.create', 'model.deliver', 'rollout.succeeded', 'model.rollback', 'rollout.rollback']) expect(actions).toContain(a);
  });

  it('watch: a new model file in a directory becomes a new version and is rolled out', async () => {
    const dir = join(work, 'incoming');
    await mkdir(dir);
    const v3 = linearModel({ seed: 33 });
    const watcher = spawn(process.execPath, [MANAGER_BIN, 'watch', dir, '--to', 'pi-1', '--soak', '0', '--json'], {
      env: { ...process.env, EDGEFLEET_URL: m.url, EDGEFLEET_OPERATOR_TOKEN: m.token },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    watcher.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((resolve) => watcher.on('exit', (code) => resolve(code)));
    try {
      await eventually('the watcher is ready', async () => (out.includes('"watching"') ? true : undefined));
      await writeFile(join(dir, 'lin.onnx'), v3.bytes);
      const event = await eventually('the rollout of the new file', async () => {
        const line = out.split('\n').find((l) => l.includes('"rollout"'));
        return line ? (JSON.parse(line) as { model?: string; status: string; file: string }) : undefined;
      }, 30_000);
      expect(event.status).toBe('succeeded');
      expect(out).toContain('"model":"lin@3"');
      const r = (await runCli(m, ['infer', 'pi-1', 'lin', '--input', join(work, 'input.json'), '--json'])).json<{ version: number; outputs: { y: { data: number[] } } }>();
      expect(r.version).toBe(3);
      expect(allClose(r.outputs.y.data, v3.expected(x))).toBe(true);
    } finally {
      watcher.kill('SIGINT');
    }
    expect(await exited).toBe(0);
    // Back to v1 for the rest of the suite.
    expect((await runCli(m, ['rollback', '--json'])).code).toBe(0);
  });

  it('answers bad input with clear errors and exit codes, and keeps its state', async () => {
    const bad = await fetch(`${m.url}/api/devices`, { headers: { authorization: 'Bearer wrong' } });
    expect(bad.status).toBe(401);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    const none = await fetch(`${m.url}/api/devices`);
    expect(none.status).toBe(401);
    // The token never works in the URL.
    expect((await fetch(`${m.url}/api/devices?token=${m.token}`)).status).toBe(401);

    expect((await api(m, 'GET', '/api/devices/nope')).status).toBe(404);
    const badJson = await fetch(`${m.url}/api/devices`, { method: 'POST', headers: { authorization: `Bearer ${m.token}`, 'content-type': 'application/json' }, body: '{"id": ' });
    expect(badJson.status).toBe(400);
    expect(((await badJson.json()) as { error: { code: string } }).error.code).toBe('bad_request');
    const badName = await api<{ error: { code: string; message: string } }>(m, 'POST', '/api/devices', { id: '../etc' });
    expect(badName.status).toBe(400);
    expect(badName.body.error.message).toMatch(/invalid device id/);
    const badDeploy = await api<{ error: { code: string } }>(m, 'POST', '/api/rollouts', { model: 'lin', to: 'pi-1', policy: { canary: -1 } });
    expect(badDeploy.status).toBe(400);
    expect((await api(m, 'POST', '/api/rollouts', { model: 'nope', to: 'pi-1' })).status).toBe(404);
    expect((await api(m, 'POST', '/api/exec', { to: 'pi-1', command: 'rm -rf /' })).status).toBe(400);

    expect((await runCli(m, ['devices', 'show', 'ghost'])).code).toBe(5);
    expect((await runCli(m, ['devices', 'list'], { env: { EDGEFLEET_OPERATOR_TOKEN: 'wrong' } })).code).toBe(4);
    expect((await runCli(m, ['devices', 'list'], { env: { EDGEFLEET_URL: 'http://127.0.0.1:1' } })).code).toBe(3);
    expect((await runCli(m, ['deploy', 'lin'])).code).toBe(2); // --to missing
    expect((await runCli(m, ['devices', 'frobnicate'])).code).toBe(2);

    // Nothing was lost or added by any of that.
    const devices = (await runCli(m, ['devices', 'list', '--json'])).json<{ id: string }[]>();
    expect(devices.map((d) => d.id)).toEqual(['pi-1']);
    const models = (await runCli(m, ['models', 'list', '--json'])).json<{ version: number }[]>();
    expect(models.map((v) => v.version)).toEqual([1, 2, 3]);

    // A model can also be added from a path on the controller's host (JSON); a missing file is a 404.
    expect((await api(m, 'POST', '/api/models', { path: join(work, 'nope.onnx'), name: 'byPath' })).status).toBe(404);
    const notOnnx = await api<{ error: { code: string } }>(m, 'POST', '/api/models', { path: join(work, 'input.json'), name: 'byPath' });
    expect(notOnnx.status).toBe(400);
    const byPath = await api<{ name: string; version: number; sha256: string }>(m, 'POST', '/api/models', { path: join(work, 'lin-v1.onnx'), name: 'byPath', lineage: { notes: 'from a path' } });
    expect(byPath.status).toBe(201);
    expect(byPath.body).toMatchObject({ name: 'byPath', version: 1 });
    const shown = await api<{ lineage: { notes: string }; versions: number[] }>(m, 'GET', '/api/models/byPath');
    expect(shown.body).toMatchObject({ lineage: { notes: 'from a path' }, versions: [1] });
    expect((await runCli(m, ['models', 'remove', 'byPath@1'])).code).toBe(0);
    expect((await api(m, 'GET', '/api/models/byPath')).status).toBe(404);
  });

  it('serves health, Prometheus metrics, the dashboard and the live feed', async () => {
    const health = (await (await fetch(`${m.url}/health`)).json()) as { ok: boolean; devices: { online: number } };
    expect(health).toMatchObject({ ok: true, devices: { online: 1 } });
    const metrics = await (await fetch(`${m.url}/metrics`)).text();
    expect(metrics).toMatch(/edgefleet_devices\{state="online"\} 1/);
    expect(metrics).toMatch(/edgefleet_messages_total\{channel="telemetry"\} \d+/);
    const res = await fetch(`${m.url}/`);
    const page = await res.text();
    expect(page).toContain('<title>edgefleet</title>');
    expect(page).not.toContain(m.token);
    // its own modules only (the browser test, dashboard.test.ts, runs them), and uPlot from node_modules
    expect(res.headers.get('content-security-policy')).toMatch(/script-src 'self';/);
    expect(page).toContain('src="/dashboard/main.js"');
    for (const asset of ['/dashboard/main.js', '/dashboard/uplot.js']) {
      const a = await fetch(`${m.url}${asset}`);
      expect([asset, a.status, a.headers.get('content-type')]).toEqual([asset, 200, 'text/javascript; charset=utf-8']);
    }
    // nothing outside the list is served, however the path is spelled
    for (const probe of ['/dashboard/../state.json', '/dashboard/%2e%2e/state.json', '/dashboard/main.js.map', '/dashboard/nope.js']) expect((await fetch(`${m.url}${probe}`)).status).not.toBe(200);

    const { WebSocket } = await import('ws');
    const ws = new WebSocket(`${m.url.replace('http', 'ws')}/ws`);
    const events: { type: string; device?: string }[] = [];
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve, reject) => {
      ws.on('open', () => ws.send(JSON.stringify({ token: m.token })));
      ws.on('message', (d) => {
        const e = JSON.parse(String(d)) as { type: string; events?: { type: string }[] };
        events.push(...(e.type === 'batch' ? e.events! : [e])); // events of one moment come as one batch
        if (events.some((e) => e.type === 'snapshot') && events.some((e) => e.type === 'telemetry' && e.device === 'pi-1')) resolve();
      });
      ws.on('error', reject);
      timer = setTimeout(() => reject(new Error(`no snapshot + telemetry on the feed: ${JSON.stringify(events.map((e) => e.type))}`)), 10_000);
    }).finally(() => clearTimeout(timer));
    ws.close();
    const intruder = new WebSocket(`${m.url.replace('http', 'ws')}/ws`);
    const closed = await new Promise<number>((resolve) => {
      intruder.on('open', () => intruder.send(JSON.stringify({ token: 'wrong' })));
      intruder.on('close', (code) => resolve(code));
    });
    expect(closed).toBe(4401);
  });
  it('reads a device log, and sends a bare legacy word on the legacy topic to third-party clients', async () => {
    const logs = await runCli(m, ['logs', 'pi-1', '--lines', '5', '--json']);
    expect(logs.code).toBe(0);
    const lines = logs.json<{ lines: string[] }>().lines;
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThanOrEqual(5);

    const port = new URL(m.broker).port;
    const sub = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', port, '-u', 'admin', '-P', m.token, '-i', 'admin-legacy-sub', '-t', 'hello', '-C', '1', '-W', '20'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let got = '';
    sub.stdout.setEncoding('utf8').on('data', (d: string) => (got += d));
    const subExit = new Promise<number | null>((resolve) => sub.on('exit', (code) => resolve(code)));
    // mosquitto_sub prints nothing when subscribed: publish until it has seen one.
    await eventually('mosquitto_sub receives the bare word', async () => {
      const r = await runCli(m, ['exec', 'all', 'done', '--via', 'topic', '--json']);
      expect(r.code).toBe(0);
      return got.trim() === 'done' ? true : undefined;
    }, 20_000, 200);
    expect(await subExit).toBe(0);
  });

  it('prints a one-line start command that works as printed, and a removed device is cut off', async () => {
    const added = (await runCli(m, ['devices', 'add', 'pi-2', '--json'])).json<{ token: string; commandInline: string }>();
    expect(added.commandInline).toMatch(/^EDGEFLEET_DEVICE_TOKEN=\S+ deviceAgent --broker mqtt:\/\/\S+ --device pi-2 --fleet-public-key=\$'-----BEGIN PUBLIC KEY-----\\n/);
    expect(added.commandInline).not.toContain('--token');
    // Run it through a real shell, only pointing "deviceAgent" at the built bin and the broker at loopback.
    const line = added.commandInline
      .replace('deviceAgent', `'${process.execPath}' '${AGENT_BIN}' --no-http`)
      .replace(/--data-dir \S+/, `--data-dir '${join(work, 'agent-pi-2')}'`)
      .replace(/--broker \S+/, `--broker ${m.broker}`);
    const shell = spawn('bash', ['-c', line], { stdio: ['ignore', 'pipe', 'pipe'] });
    const shellExit = new Promise<number | null>((resolve) => shell.on('exit', (code) => resolve(code)));
    try {
      await eventually('pi-2 online', async () => ((await api<{ online: boolean }>(m, 'GET', '/api/devices/pi-2')).body.online ? true : undefined));
      expect((await runCli(m, ['devices', 'remove', 'pi-2'])).code).toBe(0);
      expect((await api(m, 'GET', '/api/devices/pi-2')).status).toBe(404);
      // Its credential is gone: the broker dropped it and will not let it back in.
      const status = await eventually('pi-2 stays out', async () => {
        const list = (await api<{ id: string }[]>(m, 'GET', '/api/devices')).body;
        return list.some((d) => d.id === 'pi-2') ? undefined : true;
      });
      expect(status).toBe(true);
    } finally {
      shell.kill('SIGKILL');
      await shellExit;
    }
  });

  it('stops cleanly on SIGTERM and withdraws its announcement', async () => {
    const exit = await m.kill('SIGTERM');
    expect(exit.code).toBe(0);
    await expect(stat(join(m.dataDir, 'controller.json'))).rejects.toThrow(/ENOENT/);
  });
});
