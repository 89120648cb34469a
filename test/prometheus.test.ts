/**
 * The shipped Prometheus configuration, alert rules and Grafana dashboard against a real fleet:
 * Debian's `prometheus` (2.42) runs deploy/prometheus/prometheus.yml (only its targets, its
 * intervals and the rules' `for:` durations rewritten for this test) and scrapes the real
 * controller and two real agents while a model is rolled out and served. Through Prometheus's
 * query API: every series the dashboard and the rules name is scraped, every dashboard query
 * answers with data, every rule evaluates without error, and an agent that stops fires the
 * offline alerts. The names are read from the shipped files, so a renamed series fails here.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { topics } from '@edgefleet/protocol';
import { cleanupAgents, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { api, eventually, freePort, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';
import { linearModel } from './support/onnx-models.js';

const DEPLOY = fileURLToPath(new URL('../deploy/', import.meta.url));

interface PromResult<T> {
  status: string;
  data: T;
  error?: string;
}

/** Every metric name a PromQL text uses: edgefleet_* and `up`. */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\b(edgefleet_[a-z0-9_]+|up)\b(?=\s*[{[)\s]|$)/g)].map((m) => m[1]!);
}

describe('Prometheus with the shipped config, rules and dashboard', () => {
  let m: ManagerProcess;
  const agents: AgentProcess[] = [];
  let prom: ChildProcess | undefined;
  let promUrl: string;
  let work: string;
  let traffic: ReturnType<typeof setInterval> | undefined;
  const dashboardExprs: string[] = [];
  const ruleExprs: string[] = [];

  const query = async <T>(path: string): Promise<T> => {
    const body = (await (await fetch(`${promUrl}${path}`)).json()) as PromResult<T>;
    if (body.status !== 'success') throw new Error(`${path}: ${body.error}`);
    return body.data;
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'prometheus-'));
    m = await startManager();
    await writeFile(join(work, 'lin.onnx'), linearModel({ seed: 21 }).bytes);
    expect((await api(m, 'POST', '/api/models', { path: join(work, 'lin.onnx'), name: 'lin' })).status).toBe(201);
    const ports: Record<string, number> = {};
    for (const id of ['cam-1', 'cam-2']) {
      const added = await api<{ token: string }>(m, 'POST', '/api/devices', { id, groups: ['lab'] });
      const agent = await spawnAgent({ broker: m.broker, id, token: added.body.token, groups: ['lab'], telemetryIntervalMs: 500, http: true, args: ['--fleet-public-key', m.publicKeyFile] });
      agents.push(agent);
      ports[id] = await agent.httpPort();
    }
    await eventually('agents online', async () => ((await api<{ online: boolean }[]>(m, 'GET', '/api/devices')).body.every((d) => d.online) ? true : undefined));
    const r = await api<{ id: string }>(m, 'POST', '/api/rollouts', { model: 'lin', to: 'group:lab', policy: { soakS: 0 } });
    await eventually('lin@1 rolled out', async () => ((await api<{ status: string }>(m, 'GET', `/api/rollouts/${r.body.id}`)).body.status === 'succeeded' ? true : undefined), 30_000);
    // inference traffic through the controller (and one failing request), so rates, errors and histograms have data
    const x = { x: { dtype: 'float32', shape: [1, 4], data: [1, 2, 3, 4] } };
    traffic = setInterval(() => {
      for (const id of ['cam-1', 'cam-2']) void api(m, 'POST', `/api/devices/${id}/infer`, { model: 'lin', inputs: x }).catch(() => undefined); // one refused mid-shutdown changes nothing here
    }, 100);
    expect((await api(m, 'POST', '/api/devices/cam-1/infer', { model: 'lin', inputs: { x: { dtype: 'float32', shape: [1, 2], data: [1, 2] } } })).status).toBe(400);
    await malformedTelemetry(m);

    // the shipped files, with this test's targets, 1 s intervals and 1 s `for:`
    const shipped = await readFile(join(DEPLOY, 'prometheus', 'prometheus.yml'), 'utf8');
    const config = shipped
      .replace("targets: ['127.0.0.1:7420']", `targets: ['${new URL(m.url).host}']`)
      .replace('scrape_interval: 15s', 'scrape_interval: 1s')
      .replace('evaluation_interval: 15s', 'evaluation_interval: 1s');
    expect(config).toContain(new URL(m.url).host);
    expect(config).toContain('scrape_interval: 1s');
    const rules = await readFile(join(DEPLOY, 'prometheus', 'rules', 'edgefleet.rules.yml'), 'utf8');
    await mkdir(join(work, 'rules'));
    await mkdir(join(work, 'targets'));
    await writeFile(join(work, 'prometheus.yml'), config);
    await writeFile(join(work, 'rules', 'edgefleet.rules.yml'), rules.replace(/for: \d+m/g, 'for: 1s'));
    await writeFile(join(work, 'targets', 'agents.yml'), Object.entries(ports).map(([id, port]) => `- targets: ['127.0.0.1:${port}']\n  labels:\n    device: ${id}\n`).join(''));
    for (const line of rules.split('\n')) if (/^\s+expr:/.test(line) || /^\s{12}\S/.test(line)) ruleExprs.push(line.replace(/^\s+expr:\s*\|?/, '').trim());
    const dashboard = JSON.parse(await readFile(join(DEPLOY, 'grafana', 'edgefleet-dashboard.json'), 'utf8')) as { panels: { targets?: { expr: string }[] }[] };
    for (const p of dashboard.panels) for (const t of p.targets ?? []) dashboardExprs.push(t.expr);

    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    prom = spawn('prometheus', [`--config.file=${join(work, 'prometheus.yml')}`, `--storage.tsdb.path=${join(work, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: 'ignore' });
    await eventually('prometheus ready', async () => ((await fetch(`${promUrl}/-/ready`)).ok ? true : undefined), 30_000, 200);
  }, 120_000);

  afterAll(async () => {
    clearInterval(traffic);
    prom?.kill('SIGKILL');
    await cleanupAgents(...agents);
    await m?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('the shipped config and rules pass promtool, and Prometheus is the 2.x the rules are written for', () => {
    const version = spawnSync('prometheus', ['--version'], { encoding: 'utf8' });
    expect(`${version.stdout}${version.stderr}`).toMatch(/version 2\.\d+/);
    const check = spawnSync('promtool', ['check', 'config', join(DEPLOY, 'prometheus', 'prometheus.yml')], { encoding: 'utf8' });
    expect(check.status).toBe(0);
    expect(check.stdout).toMatch(/SUCCESS: 9 rules found/);
  });

  it('scrapes the controller and every agent', async () => {
    const targets = await eventually('every target up', async () => {
      const t = await query<{ activeTargets: { labels: { job: string }; health: string }[] }>('/api/v1/targets');
      return t.activeTargets.length === 3 && t.activeTargets.every((x) => x.health === 'up') ? t.activeTargets : undefined;
    }, 30_000, 500);
    expect(targets.map((t) => t.labels.job).sort()).toEqual(['edgefleet-agents', 'edgefleet-agents', 'edgefleet-controller']);
  });

  it('has every series the dashboard and the rules use, and every dashboard query answers with data', async () => {
    const names = [...new Set([...dashboardExprs, ...ruleExprs].flatMap(metricNames))].sort();
    expect(names.length).toBeGreaterThan(15);
    for (const name of names) {
      await eventually(`a series named ${name}`, async () => {
        const series = await query<unknown[]>(`/api/v1/series?match[]=${encodeURIComponent(`{__name__="${name}"}`)}`);
        return series.length > 0 ? true : undefined;
      }, 30_000, 500);
    }
    for (const expr of dashboardExprs) {
      await eventually(`data for ${expr}`, async () => {
        const r = await query<{ result: unknown[] }>(`/api/v1/query?query=${encodeURIComponent(expr)}`);
        return r.result.length > 0 ? true : undefined;
      }, 30_000, 500);
    }
  }, 120_000);

  it('evaluates every rule without error', async () => {
    const groups = await eventually('every rule evaluated', async () => {
      const g = await query<{ groups: { rules: { name: string; health: string; lastError?: string; lastEvaluation: string }[] }[] }>('/api/v1/rules');
      const all = g.groups.flatMap((x) => x.rules);
      return all.length === 9 && all.every((r) => !r.lastEvaluation.startsWith('0001')) ? all : undefined;
    }, 30_000, 500);
    for (const rule of groups) expect([rule.name, rule.health, rule.lastError ?? '']).toEqual([rule.name, 'ok', '']);
  });

  it('fires the offline alerts when an agent stops', async () => {
    const firing = async (name: string): Promise<{ labels: Record<string, string> }[]> => {
      const a = await query<{ alerts: { labels: Record<string, string>; state: string }[] }>('/api/v1/alerts');
      return a.alerts.filter((x) => x.labels['alertname'] === name && x.state === 'firing');
    };
    expect(await firing('EdgefleetDeviceOffline')).toEqual([]);
    expect((await agents[1]!.kill('SIGTERM')).code).toBe(0);
    const device = await eventually('EdgefleetDeviceOffline firing', async () => ((await firing('EdgefleetDeviceOffline')).length ? firing('EdgefleetDeviceOffline') : undefined), 30_000, 500);
    expect(device.map((a) => a.labels['device'])).toEqual(['cam-2']);
    await eventually('EdgefleetDevicesOffline firing', async () => ((await firing('EdgefleetDevicesOffline')).length ? true : undefined), 30_000, 500);
    expect(await firing('EdgefleetControllerDown')).toEqual([]);
  });
});

/**
 * A device of its own (provisioned for this, then removed) sends one telemetry message that is
 * not JSON, so the controller's bad-message counter has a series to find.
 */
async function malformedTelemetry(m: ManagerProcess): Promise<void> {
  const added = await api<{ token: string }>(m, 'POST', '/api/devices', { id: 'bad-1' });
  const client = await mqtt.connectAsync(m.broker, { clientId: 'bad-1', username: 'bad-1', password: added.body.token, protocolVersion: 4, reconnectPeriod: 0 });
  await client.publishAsync(topics.device('bad-1', 'telemetry'), 'not json', { qos: 1 });
  await eventually('the bad message counted', async () => (/edgefleet_bad_messages_total\{[^}]*channel="telemetry"[^}]*\} [1-9]/.test(await (await fetch(`${m.url}/metrics`)).text()) ? true : undefined));
  await client.endAsync();
  expect((await api(m, 'DELETE', '/api/devices/bad-1')).status).toBe(200);
}
