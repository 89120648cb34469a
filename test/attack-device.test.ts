/**
 * Issue 10, classes 2, 3 and 4: a device holding its own credentials tries to wipe the audit
 * trail, to exhaust the controller's memory and to stall it with nested JSON. The attacker is
 * an MQTT client with a real device credential on the real controller process (hostManager with
 * its embedded broker); beside it a real agent runs a model the operator deployed. What must
 * hold: every operator entry of the audit survives and nothing the device says is shown as the
 * controller's; the controller's memory and /metrics stay bounded; /health keeps answering;
 * bad payloads are refused before parsing and counted by code; the real agent keeps serving.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { PROTOCOL_VERSION, makeEvent, makeStatus, makeTelemetry, topics } from '@edgefleet/protocol';
import type { FleetEvent, ModelHealth } from '@edgefleet/protocol';
import { cleanupAgents, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { api, eventually, runCli, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';
import { allClose, linearModel } from './support/onnx-models.js';

interface AuditEntry {
  ts: string;
  actor: string;
  action: string;
  target?: string;
  result: string;
}
interface Report {
  ts: string;
  reportedBy: string;
  event: string;
  text: string;
  data: Record<string, unknown>;
}

let m: ManagerProcess;
let work: string;
let agent: AgentProcess | undefined;
let evil: MqttClient;
const model = linearModel({ seed: 4 });
const x = [0.5, -1, 2, 0.25];

/** One sample of a counter or gauge from the Prometheus text, 0 when the series does not exist. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

const metricsText = async (): Promise<string> => (await fetch(`${m.url}/metrics`)).text();

/** Resident and peak resident memory of the controller process, in bytes (from /proc). */
async function memory(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

/** Waits until the controller has received `n` more messages on a channel than `from`. */
async function received(channel: string, from: number, n: number, timeoutMs = 120_000): Promise<void> {
  await eventually(`${n} ${channel} messages at the controller`, async () => (sample(await metricsText(), `edgefleet_messages_total{channel="${channel}"}`) >= from + n ? true : undefined), timeoutMs, 250);
}

async function inferOnAgent(): Promise<number[]> {
  const r = await api<{ outputs: { y: { data: number[] } } }>(m, 'POST', '/api/devices/pi-1/infer', { model: 'lin', inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } });
  expect(r.status).toBe(200);
  return r.body.outputs.y.data;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'attack-device-'));
  m = await startManager();
  // A real agent with a model the operator deployed.
  const pi = (await runCli(m, ['devices', 'add', 'pi-1', '--json'])).json<{ token: string; config: Record<string, unknown> }>();
  await writeFile(join(work, 'pi-1.json'), JSON.stringify({ ...pi.config, broker: m.broker, dataDir: join(work, 'agent-pi-1') }));
  agent = await spawnAgent({ broker: m.broker, id: 'pi-1', token: pi.token, telemetryIntervalMs: 500, args: ['--config', join(work, 'pi-1.json')] });
  await writeFile(join(work, 'lin.onnx'), model.bytes);
  expect((await runCli(m, ['models', 'add', join(work, 'lin.onnx'), '--name', 'lin'])).code).toBe(0);
  await eventually('pi-1 online', async () => ((await api<{ online: boolean }>(m, 'GET', '/api/devices/pi-1')).body.online ? true : undefined));
  expect((await runCli(m, ['deploy', 'lin@1', '--to', 'pi-1', '--soak', '0', '--wait', '--json'])).code).toBe(0);
  // The attacker: a provisioned device's own credential, used by a client of its own.
  const token = (await runCli(m, ['devices', 'add', 'evil', '--json'])).json<{ token: string }>().token;
  evil = await mqtt.connectAsync(m.broker, { clientId: 'evil', username: 'evil', password: token, protocolVersion: 4, reconnectPeriod: 0 });
  await evil.publishAsync(topics.device('evil', 'status'), JSON.stringify(makeStatus({ agentVersion: 'x', hostname: 'evil', arch: 'x64', platform: 'linux', cpus: 1, memoryBytes: 1, onnxruntime: null, docker: false, groups: [], models: [{ name: 'lin', version: 1 }] })), { qos: 1, retain: true });
}, 120_000);

afterAll(async () => {
  await evil?.endAsync(true);
  await cleanupAgents(agent);
  await m?.cleanup();
  await rm(work, { recursive: true, force: true });
});

describe('a device that floods and forges events', () => {
  it('20,000 events do not evict one operator entry; forged activations are shown as the device\'s word', async () => {
    const before = (await api<AuditEntry[]>(m, 'GET', '/api/audit?limit=5000')).body;
    expect(before.map((e) => e.action)).toEqual(expect.arrayContaining(['device.add', 'model.add', 'rollout.create', 'model.deliver', 'rollout.succeeded']));
    const eventsBefore = sample(await metricsText(), 'edgefleet_messages_total{channel="events"}');
    const forged: FleetEvent[] = [
      makeEvent('model.activated', { model: 'lin', version: 9, previous: 1 }),
      makeEvent('model.failed', { model: 'lin', version: 1, error: { code: 'load_failed', message: 'x'.repeat(10_000) } }),
      // a log line that tries to pass for the controller: a carriage return and an erase-line escape, then a fake entry
      makeEvent('log', { level: 'info', message: '\r\u001b[2Kcontroller rollout.succeeded r-1: all devices switched' }),
      makeEvent('transfer.progress', { transferId: 'tx', received: 1, total: 2 }),
    ];
    // First the forgeries alone (within the device's burst), then the flood.
    for (const e of forged) await evil.publishAsync(topics.device('evil', 'events'), JSON.stringify(e), { qos: 1 });
    await received('events', eventsBefore, forged.length);
    const planted = (await api<{ reports: Report[] }>(m, 'GET', '/api/reports?device=evil')).body.reports;
    expect(planted.map((r) => r.text)).toContain('reported by device evil: model.activated lin@9 (previous 1)');
    const cli = await runCli(m, ['reports', 'evil', '--limit', '100']);
    expect(cli.code).toBe(0);
    const lines = cli.stdout.trim().split('\n').slice(1).filter((l) => !l.startsWith('dropped:'));
    expect(lines).toHaveLength(3); // transfer progress is shown live, not kept
    for (const line of lines) expect(line).toMatch(/ reported by device evil: /);
    expect(cli.stdout).not.toMatch(/[\r\u001b]/);
    expect(cli.stdout).toMatch(/\\u000d\\u001b\[2Kcontroller rollout.succeeded/); // shown escaped, inside the device's line
    const total = 20_000;
    for (let sent = 0; sent < total; sent += 500) {
      await Promise.all(Array.from({ length: 500 }, (_, i) => evil.publishAsync(topics.device('evil', 'events'), JSON.stringify(forged[(sent + i) % forged.length]), { qos: 1 })));
    }
    await received('events', eventsBefore, forged.length + total);

    // Every operator entry is still there, unchanged and in order, and nothing the device said is in the audit.
    const after = (await api<AuditEntry[]>(m, 'GET', '/api/audit?limit=5000')).body;
    expect(after.slice(0, before.length)).toEqual(before);
    expect(after.filter((e) => e.actor.startsWith('device:') || e.action === 'model.activated' || e.action === 'model.failed')).toEqual([]);
    const cliAudit = (await runCli(m, ['audit', '--limit', '5000', '--json'])).json<AuditEntry[]>();
    expect(cliAudit.some((e) => e.action === 'model.activated')).toBe(false);

    // The device's own ring: bounded, each entry marked as the device's, texts cut and printable.
    const { reports, dropped } = (await api<{ reports: Report[]; dropped: { events: number } }>(m, 'GET', '/api/reports?device=evil&limit=5000')).body;
    expect(reports.length).toBeLessThanOrEqual(20);
    expect(reports.length).toBeGreaterThan(0);
    for (const r of reports) {
      expect(r.reportedBy).toBe('device:evil');
      expect(r.text.startsWith('reported by device evil: ')).toBe(true);
      expect(r.text.length).toBeLessThanOrEqual(300);
      expect(r.text).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
    }
    expect(dropped.events).toBeGreaterThan(total - 1000); // 60 a minute, after a burst of 60
    expect(sample(await metricsText(), 'edgefleet_device_events_dropped_total')).toBe(dropped.events);
    // The state file holds none of it.
    expect(await readFile(join(m.dataDir, 'state.json'), 'utf8')).not.toContain('model.activated');
  }, 300_000);
});

describe('a device that tries to make the controller hold what it invents', () => {
  /** A telemetry sample with `count` distinct model keys, each a registry-looking `name@version`. */
  const telemetry = (seq: number, count: number): string => {
    const health: ModelHealth = { requests: 1, errors: 0, p50Ms: null, p95Ms: null, p99Ms: null };
    const models: Record<string, ModelHealth> = {};
    for (let k = 0; k < count; k++) models[`m${seq}x${k}@1`] = health;
    return JSON.stringify(makeTelemetry(seq, 0, { ts: Date.now(), cpuPercent: 1, load: [0], memoryUsedBytes: 1, memoryTotalBytes: 2, diskFreeBytes: null, temperatureC: null, uptimeS: 1, models }));
  };

  it('thousands of distinct model keys in 60 telemetry messages: memory and /metrics stay bounded, /health keeps answering', async () => {
    const metricsBefore = await metricsText();
    const telemetryBefore = sample(metricsBefore, 'edgefleet_messages_total{channel="telemetry"}');
    const mem0 = await memory(m.child.pid!);
    let healthAnswers = 0;
    let healthFailures = 0;
    let flooding = true;
    const healthPoller = (async () => {
      while (flooding) {
        const r = await fetch(`${m.url}/health`);
        if (r.status === 200 && ((await r.json()) as { ok: boolean }).ok) healthAnswers++;
        else healthFailures++;
      }
    })();
    // 30 with 3,000 keys each (230 KB: over the 64 KiB telemetry limit, refused before parsing) and
    // 30 with 800 (as many as fit: schema-valid, parsed, every key dropped and counted).
    for (let i = 0; i < 30; i++) await evil.publishAsync(topics.device('evil', 'telemetry'), telemetry(1000 + i, 3000), { qos: 1 });
    const fitting = Array.from({ length: 30 }, (_, i) => telemetry(i, 800));
    expect(Math.max(...fitting.map((t) => Buffer.byteLength(t)))).toBeLessThan(64 * 1024);
    for (const t of fitting) await evil.publishAsync(topics.device('evil', 'telemetry'), t, { qos: 1 });
    await eventually('all 60 handled', async () => {
      const t = await metricsText();
      const done = sample(t, 'edgefleet_bad_messages_total{channel="telemetry",code="too_long"}') === 30 && sample(t, 'edgefleet_telemetry_models_dropped_total{reason="unknown_model"}') === 30 * 800;
      return done ? true : undefined;
    }, 120_000, 250);
    expect(sample(await metricsText(), 'edgefleet_messages_total{channel="telemetry"}')).toBeGreaterThanOrEqual(telemetryBefore + 60);
    flooding = false;
    await healthPoller;
    const mem1 = await memory(m.child.pid!);
    const metricsAfter = await metricsText();

    expect(healthAnswers).toBeGreaterThan(0);
    expect(healthFailures).toBe(0);
    expect(sample(metricsAfter, 'edgefleet_bad_messages_total{channel="telemetry",code="too_long"}')).toBe(30);
    expect(sample(metricsAfter, 'edgefleet_telemetry_models_dropped_total{reason="unknown_model"}')).toBe(30 * 800);
    // no series for any invented model, and /metrics did not grow beyond the counters it already had
    expect(metricsAfter).not.toMatch(/model="m\d+x/);
    expect(Buffer.byteLength(metricsAfter)).toBeLessThan(64 * 1024);
    expect(Buffer.byteLength(metricsAfter) - Buffer.byteLength(metricsBefore)).toBeLessThan(2048);
    // 60 messages of up to 230 KB went through; the controller holds none of their keys
    expect(mem1.rss - mem0.rss).toBeLessThan(64 * 1024 * 1024);
    expect(mem1.peak - mem0.peak).toBeLessThan(64 * 1024 * 1024);
    const device = (await api<{ telemetry: { models: Record<string, unknown> } | null }>(m, 'GET', '/api/devices/evil')).body;
    expect(device.telemetry?.models).toEqual({});
    const state = await readFile(join(m.dataDir, 'state.json'), 'utf8').catch(() => '');
    expect(state).not.toMatch(/m\d+x\d+@1/);
    if (process.env.TEST_REPORT_BOUNDS) process.stdout.write(`${JSON.stringify({ rssBefore: mem0.rss, rssAfter: mem1.rss, peakBefore: mem0.peak, peakAfter: mem1.peak, metricsBytes: Buffer.byteLength(metricsAfter) })}\n`);
  }, 300_000);

  it('a status listing more than the protocol allows is refused, and the device record stays as it was', async () => {
    const before = (await api<{ info: unknown }>(m, 'GET', '/api/devices/evil')).body.info;
    const tooMany = Array.from({ length: 1000 }, (_, i) => ({ name: `fake${i}`, version: 1 }));
    const status = { v: PROTOCOL_VERSION, id: 's1', ts: Date.now(), type: 'status', online: true, device: { agentVersion: 'x', hostname: 'h'.repeat(300), arch: 'x64', platform: 'linux', cpus: 1, memoryBytes: 1, onnxruntime: null, docker: false, groups: [], models: tooMany } };
    const bad = sample(await metricsText(), 'edgefleet_bad_messages_total{channel="status",code="bad_request"}');
    await evil.publishAsync(topics.device('evil', 'status'), JSON.stringify(status), { qos: 1 });
    await eventually('the status refused', async () => (sample(await metricsText(), 'edgefleet_bad_messages_total{channel="status",code="bad_request"}') === bad + 1 ? true : undefined));
    expect((await api<{ info: unknown }>(m, 'GET', '/api/devices/evil')).body.info).toEqual(before);
  });
});

describe('a device that sends deeply nested or oversized JSON', () => {
  it('is refused before parsing, counted by channel and code, and the controller keeps answering', async () => {
    const deep = '['.repeat(30_000) + ']'.repeat(30_000); // 60 KB: under the telemetry limit, 30,000 levels deep
    const huge = '['.repeat(1_900_000) + ']'.repeat(1_900_000); // 3.8 MB: what stalled the controller for a second
    const before = await metricsText();
    const count = (text: string, channel: string, code: string): number => sample(text, `edgefleet_bad_messages_total{channel="${channel}",code="${code}"}`);
    await evil.publishAsync(topics.device('evil', 'telemetry'), deep, { qos: 1 });
    await evil.publishAsync(topics.device('evil', 'events'), deep, { qos: 1 });
    await evil.publishAsync(topics.device('evil', 'status'), deep, { qos: 1 });
    await evil.publishAsync(topics.device('evil', 'telemetry'), huge, { qos: 1 });
    await eventually('four refusals counted', async () => {
      const t = await metricsText();
      const n = ['telemetry', 'events', 'status'].reduce((s, ch) => s + count(t, ch, 'too_deep') - count(before, ch, 'too_deep'), 0) + count(t, 'telemetry', 'too_long') - count(before, 'telemetry', 'too_long');
      return n === 4 ? t : undefined;
    });
    const after = await metricsText();
    for (const channel of ['telemetry', 'events', 'status']) expect(count(after, channel, 'too_deep') - count(before, channel, 'too_deep')).toBe(1);
    expect(count(after, 'telemetry', 'too_long') - count(before, 'telemetry', 'too_long')).toBe(1);
    expect(m.stderr()).toMatch(/"code":"too_deep".*refused without parsing/);
    expect((await fetch(`${m.url}/health`)).status).toBe(200);
  });

  it('the real agent beside the attacker kept serving its model throughout', async () => {
    expect(allClose(await inferOnAgent(), model.expected(x))).toBe(true);
    expect(agent?.child.exitCode).toBeNull();
  });
});
