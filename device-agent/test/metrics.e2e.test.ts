/**
 * The agent's /metrics beside its inference API, on a real agent process: inferences over MQTT
 * and HTTP (good and bad) are counted per model with their error codes and timed in a histogram,
 * an activation and a refused one are counted by result, and the active version is reported.
 * (Transfer bytes are checked end to end, through a real rollout, in test/prometheus.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import type { RunningBroker } from '@edgefleet/broker';
import { createRequester } from '@edgefleet/host-manager';
import type { Requester } from '@edgefleet/host-manager';
import { startTestBroker } from '../../test/support/broker.js';
import { linearModel } from '../../test/support/onnx-models.js';
import { cleanupAgents, connectOperator, preinstallModels, startAgent, watchStatus } from '../../test/support/agent-process.js';
import type { AgentProcess } from '../../test/support/agent-process.js';

const OPERATOR = { id: 'op', token: 'operator-token-m' };
const DEVICE = { id: 'pi-metrics', token: 'device-token-m' };

/** `name{labels} value` lines → value of the series whose labels include all of `want`. */
function value(text: string, name: string, want: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(want).every(([k, v]) => labels[k] === v)) return Number(m[3]);
  }
  return undefined;
}

describe("the agent's /metrics", () => {
  let broker: RunningBroker;
  let operator: MqttClient;
  let requester: Requester;
  let agent: AgentProcess | undefined;
  let dataDir: string;
  let base: string;
  const x = { x: { dtype: 'float32' as const, shape: [1, 4], data: [1, 2, 3, 4] } };

  beforeAll(async () => {
    broker = await startTestBroker({ devices: [DEVICE], operators: [OPERATOR] });
    operator = await connectOperator(broker.url, OPERATOR);
    const watcher = await watchStatus(operator);
    requester = await createRequester(operator);
    dataDir = await mkdtemp(join(tmpdir(), 'agent-metrics-'));
    await preinstallModels(dataDir, DEVICE.id, [
      { name: 'linear', version: 1, bytes: linearModel({ seed: 4 }).bytes },
      { name: 'linear', version: 2, bytes: linearModel({ seed: 5 }).bytes, activate: false },
    ]);
    agent = await startAgent({ broker: broker.url, ...DEVICE, dataDir, http: true }, watcher);
    base = `http://127.0.0.1:${await agent.httpPort()}`;
  }, 60_000);

  afterAll(async () => {
    await cleanupAgents(agent);
    requester?.close();
    await operator?.endAsync();
    await broker?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('counts and times inferences per model, with the error codes of the failed ones', async () => {
    for (let i = 0; i < 3; i++) await requester.request(DEVICE.id, 'infer', { model: 'linear', inputs: x });
    const ok = await fetch(`${base}/models/linear`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: x }) });
    expect(ok.status).toBe(200);
    const bad = await fetch(`${base}/models/linear`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: { x: { dtype: 'float32', shape: [1, 3], data: [1, 2, 3] } } }) });
    expect(bad.status).toBe(400);
    await expect(requester.request(DEVICE.id, 'infer', { model: 'nope', inputs: x })).rejects.toThrow();

    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(value(text, 'edgefleet_agent_inference_requests_total', { model: 'linear', device: DEVICE.id })).toBe(5);
    expect(value(text, 'edgefleet_agent_inference_errors_total', { model: 'linear', code: 'invalid_input' })).toBe(1);
    expect(value(text, 'edgefleet_agent_inference_errors_total', { model: 'nope', code: 'not_found' })).toBe(1);
    expect(value(text, 'edgefleet_agent_inference_duration_seconds_count', { model: 'linear' })).toBe(5);
    expect(value(text, 'edgefleet_agent_inference_duration_seconds_bucket', { model: 'linear', le: '+Inf' })).toBe(5);
    expect(value(text, 'edgefleet_agent_model_active_version', { model: 'linear' })).toBe(1);
    expect(value(text, 'edgefleet_agent_process_cpu_seconds_total')).toBeGreaterThan(0);
  });

  it('counts activations by result and reports the version served', async () => {
    await requester.request(DEVICE.id, 'models.activate', { model: 'linear', version: 2 });
    await expect(requester.request(DEVICE.id, 'models.activate', { model: 'linear', version: 9 })).rejects.toThrow();
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(value(text, 'edgefleet_agent_activations_total', { model: 'linear', result: 'ok' })).toBe(1);
    expect(value(text, 'edgefleet_agent_activations_total', { model: 'linear', result: 'failed' })).toBe(1);
    expect(value(text, 'edgefleet_agent_model_active_version', { model: 'linear' })).toBe(2);
    // only GET and HEAD; the inference routes are untouched
    expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(404);
    expect((await fetch(`${base}/models`)).status).toBe(200);
  });
});
