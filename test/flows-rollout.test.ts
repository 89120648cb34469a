/**
 * Rollouts over real processes: a model that fails under real traffic stops
 * at the canary and is rolled back; a controller killed with SIGKILL in the
 * middle of a rollout is restarted and finishes it.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupAgents, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { api, eventually, freePort, runCli, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';
import { dataDependentFailingModel, linearModel, slowModel } from './support/onnx-models.js';

interface DeviceView {
  id: string;
  online: boolean;
  info: { models: { name: string; version: number }[] } | null;
}
interface RolloutView {
  id: string;
  status: string;
  reason?: string;
  waves: { label: string; state: string; devices: string[]; gate?: { pass: boolean; reasons: string[]; after: { requests: number; errors: number } } }[];
  devices: Record<string, { state: string; previous: number | null }>;
}

const tokens: Record<string, string> = {};

async function provision(m: ManagerProcess, ids: string[], group: string, dataDirs?: Record<string, string>): Promise<AgentProcess[]> {
  const agents: AgentProcess[] = [];
  for (const id of ids) {
    const r = await api<{ token: string }>(m, 'POST', '/api/devices', { id, groups: [group] });
    expect(r.status).toBe(201);
    tokens[id] = r.body.token;
    agents.push(
      await spawnAgent({
        broker: m.broker,
        id,
        token: r.body.token,
        groups: [group],
        telemetryIntervalMs: 200,
        args: ['--fleet-public-key', m.publicKeyFile],
        ...(dataDirs?.[id] ? { dataDir: dataDirs[id] } : {}),
      }),
    );
  }
  await eventually('every agent online', async () => {
    const list = (await api<DeviceView[]>(m, 'GET', '/api/devices')).body;
    return ids.every((id) => list.find((d) => d.id === id)?.online) ? true : undefined;
  });
  return agents;
}

async function versionOn(m: ManagerProcess, id: string, model: string): Promise<number | undefined> {
  return (await api<DeviceView>(m, 'GET', `/api/devices/${id}`)).body.info?.models.find((x) => x.name === model)?.version;
}

describe('a model that fails under real traffic', () => {
  let m: ManagerProcess;
  let agents: AgentProcess[] = [];
  let work: string;
  let traffic = true;
  let loops: Promise<void>[] = [];
  const answered: Record<string, { ok: number; failed: number }> = {};

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'rollout-'));
    await writeFile(join(work, 'good.onnx'), linearModel({ seed: 3 }).bytes);
    await writeFile(join(work, 'bad.onnx'), dataDependentFailingModel().bytes);
    m = await startManager();
    agents = await provision(m, ['cam-1', 'cam-2', 'cam-3'], 'cams');
  }, 90_000); // a controller and three agent processes: slow on a loaded 2-core machine

  afterAll(async () => {
    traffic = false;
    await Promise.all(loops);
    await cleanupAgents(...agents);
    await m?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it('stops at the canary, rolls the canary back and leaves the rest of the fleet untouched', async () => {
    expect((await runCli(m, ['models', 'add', join(work, 'good.onnx'), '--name', 'det'])).code).toBe(0);
    expect((await runCli(m, ['models', 'add', join(work, 'bad.onnx'), '--name', 'det'])).code).toBe(0);
    const first = await runCli(m, ['deploy', 'det@1', '--to', 'group:cams', '--canary', '1', '--waves', '100', '--soak', '0', '--wait', '--json']);
    expect(first.json<RolloutView>().status).toBe('succeeded');
    for (const a of agents) await eventually(`${a.id} reports det@1`, async () => ((await versionOn(m, a.id, 'det')) === 1 ? true : undefined));

    // Real traffic on every device, through the controller (MQTT infer). Values outside [-4, 4) make v2 fail.
    loops = agents.map(async (a) => {
      answered[a.id] = { ok: 0, failed: 0 };
      while (traffic) {
        const r = await api(m, 'POST', `/api/devices/${a.id}/infer`, { model: 'det', inputs: { x: { dtype: 'float32', shape: [1, 4], data: [5, 6, 7, 8] } } }).catch(() => ({ status: 0 }));
        if (r.status === 200) answered[a.id]!.ok++;
        else answered[a.id]!.failed++;
      }
    });
    await eventually('baseline traffic on v1', async () => (agents.every((a) => (answered[a.id]?.ok ?? 0) >= 20) ? true : undefined));

    const bad = await runCli(m, ['deploy', 'det@2', '--to', 'group:cams', '--canary', '1', '--waves', '100', '--soak', '2', '--min-requests', '5', '--wait', '--json'], { timeoutMs: 60_000 });
    expect(bad.code).toBe(1);
    const r = bad.json<RolloutView>();
    expect(r.status).toBe('failed');
    expect(r.reason).toMatch(/wave 0 \(canary\) failed its gate: .*error rate/);
    const canary = r.waves[0]!.devices[0]!;
    expect(r.waves[0]!.gate).toMatchObject({ pass: false });
    expect(r.waves[0]!.gate!.after.errors).toBeGreaterThan(0);
    expect(r.waves[1]!.state).toBe('pending');
    expect(r.devices[canary]).toMatchObject({ state: 'rolled-back', previous: 1 });
    for (const id of r.waves[1]!.devices) expect(r.devices[id]!.state).toBe('pending');

    // Every device serves v1 again, and answers.
    for (const a of agents) await eventually(`${a.id} back on det@1`, async () => ((await versionOn(m, a.id, 'det')) === 1 ? true : undefined));
    const before = answered[canary]!.ok;
    await eventually('the canary answers again', async () => (answered[canary]!.ok > before + 5 ? true : undefined));
    const audit = (await runCli(m, ['audit', '--limit', '500', '--json'])).json<{ action: string; result: string; target?: string }[]>();
    expect(audit.some((e) => e.action === 'rollout.gate' && e.result === 'error')).toBe(true);
    expect(audit.some((e) => e.action === 'model.rollback' && e.result === 'ok' && e.target?.startsWith(canary))).toBe(true);
  });
});

describe('a model that answers, but slowly', () => {
  let m: ManagerProcess;
  let agents: AgentProcess[] = [];
  let work: string;
  let traffic = true;
  let loops: Promise<void>[] = [];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'slow-'));
    await writeFile(join(work, 'fast.onnx'), slowModel({ matmuls: 1, size: 256 }).bytes);
    // 1,500 chained MatMuls: slow enough that a loaded machine's noise in the baseline cannot mask it (400 could)
    await writeFile(join(work, 'slow.onnx'), slowModel({ matmuls: 1500, size: 256 }).bytes);
    m = await startManager();
    agents = await provision(m, ['lat-1', 'lat-2'], 'lat');
  });

  afterAll(async () => {
    traffic = false;
    await Promise.all(loops);
    await cleanupAgents(...agents);
    await m?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it('fails the canary gate on p95 latency against the same device before the switch', async () => {
    expect((await runCli(m, ['models', 'add', join(work, 'fast.onnx'), '--name', 'enc'])).code).toBe(0);
    expect((await runCli(m, ['models', 'add', join(work, 'slow.onnx'), '--name', 'enc'])).code).toBe(0);
    expect((await runCli(m, ['deploy', 'enc@1', '--to', 'group:lat', '--canary', '1', '--soak', '0', '--wait'])).code).toBe(0);
    const served: Record<string, number> = {};
    const input = { x: { dtype: 'float32', shape: [1, 256], data: Array.from({ length: 256 }, (_, i) => i / 256) } };
    loops = agents.map(async (a) => {
      served[a.id] = 0;
      while (traffic) {
        const r = await api(m, 'POST', `/api/devices/${a.id}/infer`, { model: 'enc', inputs: input }).catch(() => ({ status: 0 }));
        if (r.status === 200) served[a.id]!++;
      }
    });
    await eventually('baseline traffic', async () => (agents.every((a) => (served[a.id] ?? 0) >= 30) ? true : undefined));
    const r = await runCli(m, ['deploy', 'enc@2', '--to', 'group:lat', '--canary', '1', '--soak', '3', '--min-requests', '5', '--max-latency-ratio', '2', '--wait', '--json'], { timeoutMs: 60_000 });
    expect(r.code).toBe(1);
    const view = r.json<RolloutView & { waves: { gate?: { before: { p95Ms: number }; after: { p95Ms: number } } }[] }>();
    expect(view.status).toBe('failed');
    expect(view.reason).toMatch(/p95 latency rose from/);
    const gate = view.waves[0]!.gate!;
    expect(gate.after.p95Ms).toBeGreaterThan(2 * gate.before.p95Ms);
    const canary = view.waves[0]!.devices[0]!;
    expect(view.devices[canary]!.state).toBe('rolled-back');
    await eventually('the canary is back on enc@1', async () => ((await versionOn(m, canary, 'enc')) === 1 ? true : undefined));
  });
});

describe('the controller killed with SIGKILL in the middle of a rollout', () => {
  let m: ManagerProcess | undefined;
  let agents: AgentProcess[] = [];
  let work: string;
  let dataDir: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'restart-'));
    dataDir = join(work, 'controller');
    await writeFile(join(work, 'm.onnx'), linearModel({ seed: 9 }).bytes);
  });

  afterAll(async () => {
    await cleanupAgents(...agents);
    await m?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it('continues the rollout from its persisted state after a restart and finishes it', async () => {
    const port = await freePort();
    m = await startManager({ dataDir, mqttPort: port });
    agents = await provision(m, ['edge-1', 'edge-2', 'edge-3'], 'edges');
    expect((await runCli(m, ['models', 'add', join(work, 'm.onnx'), '--name', 'seg'])).code).toBe(0);
    const started = await runCli(m, ['deploy', 'seg', '--to', 'group:edges', '--canary', '1', '--waves', '100', '--soak', '3', '--json']);
    expect(started.code).toBe(0);
    const id = started.json<RolloutView>().id;
    const first = m;
    await eventually('the canary is switched and soaking', async () => {
      const r = (await api<RolloutView>(first, 'GET', `/api/rollouts/${id}`)).body;
      return r.waves[0]?.state === 'soaking' ? r : undefined;
    });
    // Every step is written once it is taken: the file shows the soak (the in-memory view may be a write ahead).
    await eventually('the soak step on disk', async () => {
      const text = await readFile(join(dataDir, 'state.json'), 'utf8');
      return (JSON.parse(text) as { rollouts: Record<string, RolloutView> }).rollouts[id]?.waves[0]?.state === 'soaking' ? true : undefined;
    }, 5000, 10);
    await m.kill('SIGKILL');

    // What the killed controller wrote is on disk, whole.
    const onDisk = JSON.parse(await readFile(join(dataDir, 'state.json'), 'utf8')) as { rollouts: Record<string, RolloutView> };
    expect(onDisk.rollouts[id]).toMatchObject({ status: 'running' });
    expect(onDisk.rollouts[id]!.waves[0]!.state).toBe('soaking');
    expect(Object.values(onDisk.rollouts[id]!.devices).filter((d) => d.state === 'switched')).toHaveLength(1);

    m = await startManager({ dataDir, mqttPort: port });
    const done = await runCli(m, ['rollouts', 'show', id, '--wait', '--json'], { timeoutMs: 60_000 });
    const r = done.json<RolloutView>();
    expect(r.status).toBe('succeeded');
    expect(Object.values(r.devices).map((d) => d.state)).toEqual(['switched', 'switched', 'switched']);
    for (const a of agents) await eventually(`${a.id} runs seg@1`, async () => ((await versionOn(m!, a.id, 'seg')) === 1 ? true : undefined));
    const list = (await runCli(m, ['rollouts', 'list', '--json'])).json<{ id: string; status: string }[]>();
    expect(list).toEqual([expect.objectContaining({ id, status: 'succeeded' })]);
  });

  it('aborts a rollout at any point and resumes it where it stopped', async () => {
    await writeFile(join(work, 'm2.onnx'), linearModel({ seed: 10 }).bytes);
    expect((await runCli(m!, ['models', 'add', join(work, 'm2.onnx'), '--name', 'seg'])).code).toBe(0);
    const started = await runCli(m!, ['deploy', 'seg@2', '--to', 'group:edges', '--canary', '1', '--waves', '100', '--soak', '2', '--json']);
    const id = started.json<RolloutView>().id;
    await eventually('the canary soaking', async () => ((await api<RolloutView>(m!, 'GET', `/api/rollouts/${id}`)).body.waves[0]?.state === 'soaking' ? true : undefined));
    const aborted = await runCli(m!, ['rollouts', 'abort', id, '--json']);
    expect(aborted.code).toBe(0);
    expect(aborted.json<RolloutView>().status).toBe('aborted');
    // Aborting twice is a conflict; nothing moves while aborted, even after the soak would have ended.
    expect((await runCli(m!, ['rollouts', 'abort', id])).code).toBe(1);
    const canary = (await api<RolloutView>(m!, 'GET', `/api/rollouts/${id}`)).body.waves[0]!.devices[0]!;
    const others = ['edge-1', 'edge-2', 'edge-3'].filter((d) => d !== canary);
    await new Promise((r) => setTimeout(r, 2500)); // longer than the soak: an aborted rollout must not advance
    const still = (await api<RolloutView>(m!, 'GET', `/api/rollouts/${id}`)).body;
    expect(still.status).toBe('aborted');
    for (const d of others) expect(still.devices[d]!.state).toBe('pending');
    expect(await versionOn(m!, canary, 'seg')).toBe(2);
    expect(await versionOn(m!, others[0]!, 'seg')).toBe(1);

    const resumed = await runCli(m!, ['rollouts', 'resume', id, '--wait', '--json'], { timeoutMs: 60_000 });
    expect(resumed.code).toBe(0);
    expect(resumed.json<RolloutView>().status).toBe('succeeded');
    for (const d of others) await eventually(`${d} runs seg@2`, async () => ((await versionOn(m!, d, 'seg')) === 2 ? true : undefined));
  });
  it('parks a device that is offline during its wave and delivers when it returns', async () => {
    const gone = agents.find((a) => a.id === 'edge-3')!;
    await gone.kill('SIGTERM');
    await eventually('edge-3 offline', async () => ((await api<DeviceView>(m!, 'GET', '/api/devices/edge-3')).body.online ? undefined : true));
    await writeFile(join(work, 'm3.onnx'), linearModel({ seed: 11 }).bytes);
    expect((await runCli(m!, ['models', 'add', join(work, 'm3.onnx'), '--name', 'seg'])).code).toBe(0);
    const id = (await runCli(m!, ['deploy', 'seg@3', '--to', 'group:edges', '--canary', '1', '--waves', '100', '--soak', '0', '--json'])).json<RolloutView>().id;
    const waiting = await eventually('edge-3 parked', async () => {
      const r = (await api<RolloutView>(m!, 'GET', `/api/rollouts/${id}`)).body;
      return r.devices['edge-3']?.state === 'waiting' && r.waves.every((w) => w.state === 'passed') ? r : undefined;
    }, 30_000);
    expect(waiting.status).toBe('running');
    expect(waiting.devices['edge-1']!.state).toBe('switched');

    const back = await spawnAgent({ broker: m!.broker, id: 'edge-3', token: tokens['edge-3']!, groups: ['edges'], telemetryIntervalMs: 200, dataDir: gone.dataDir, args: ['--fleet-public-key', m!.publicKeyFile] });
    agents.push(back);
    const done = (await runCli(m!, ['rollouts', 'show', id, '--wait', '--json'], { timeoutMs: 60_000 })).json<RolloutView>();
    expect(done.status).toBe('succeeded');
    expect(done.devices['edge-3']!.state).toBe('switched');
    await eventually('edge-3 runs seg@3', async () => ((await versionOn(m!, 'edge-3', 'seg')) === 3 ? true : undefined));
  });
});
