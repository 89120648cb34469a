/**
 * Inference through a real agent process: the infer command over MQTT and the
 * local HTTP API give exactly what a bare onnxruntime session gives, on models
 * with dynamic dimensions, int64 inputs and a recurrent state. Model commands,
 * the legacy `update`, and SIGTERM under load.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import type { MqttClient } from 'mqtt';
import { ReplySchema, makeRequest, tensorMapResult, topics } from '@edgefleet/protocol';
import type { Reply, Tensor, TensorMapInferResult } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { createRequester } from '@edgefleet/host-manager';
import type { Requester } from '@edgefleet/host-manager';
import { encodeTensor, decodeInputs } from '../src/models/index.js';
import { startTestBroker } from '../../test/support/broker.js';
import { allClose, linearModel, multiInputModel, recurrentModel, slowModel } from '../../test/support/onnx-models.js';
import { cleanupAgents, connectOperator, preinstallModels, startAgent, watchStatus } from '../../test/support/agent-process.js';
import type { AgentProcess, StatusWatcher } from '../../test/support/agent-process.js';

const OPERATOR = { id: 'op', token: 'operator-token-i' };
const DEVICE = { id: 'pi-infer', token: 'device-token-i' };
const SLOW = { id: 'pi-slow', token: 'device-token-s' };

const linear = linearModel({ inFeatures: 4, outFeatures: 3, seed: 3 });
const linear2 = linearModel({ inFeatures: 4, outFeatures: 3, seed: 9 });
const multi = multiInputModel();
const recurrent = recurrentModel({ hidden: 4 });

let broker: RunningBroker;
let operator: MqttClient;
let watcher: StatusWatcher;
let requester: Requester;
let agent: AgentProcess | undefined;
let slowAgent: AgentProcess | undefined;
let dataDir: string;
let httpBase: string;

beforeAll(async () => {
  broker = await startTestBroker({ devices: [DEVICE, SLOW], operators: [OPERATOR] });
  operator = await connectOperator(broker.url, OPERATOR);
  watcher = await watchStatus(operator);
  requester = await createRequester(operator);
  dataDir = await mkdtemp(join(tmpdir(), 'agent-infer-'));
  await preinstallModels(dataDir, DEVICE.id, [
    { name: 'linear', version: 1, bytes: linear.bytes },
    { name: 'linear', version: 2, bytes: linear2.bytes, activate: false },
    { name: 'multi', version: 1, bytes: multi.bytes },
    { name: 'recurrent', version: 1, bytes: recurrent.bytes },
  ]);
  agent = await startAgent({ broker: broker.url, ...DEVICE, dataDir, http: true, telemetryIntervalMs: 300 }, watcher);
  httpBase = `http://127.0.0.1:${await agent.httpPort()}`;
}, 60_000);

afterAll(async () => {
  await cleanupAgents(agent, slowAgent);
  requester?.close();
  await operator?.endAsync();
  await broker?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

/** The same inputs through a bare onnxruntime session, encoded like the agent encodes outputs. */
async function bare(bytes: Uint8Array, inputs: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const specs = session.inputNames.map((name) => ({ name, dtype: String(inputs[name]?.dtype), shape: inputs[name]?.shape ?? [] }));
    const feeds = decodeInputs('bare', inputs, specs) as unknown as Record<string, ort.Tensor>;
    const out = await session.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, encodeTensor(v as never)]));
  } finally {
    await session.release();
  }
}

async function viaHttp(path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${httpBase}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe('inference through the agent', () => {
  it('announces onnxruntime and the active models in its status', async () => {
    const status = await watcher.waitFor(DEVICE.id, true);
    if (!status.online) throw new Error('not online');
    expect(status.device.onnxruntime?.version).toMatch(/^\d+\.\d+/);
    expect(status.device.onnxruntime?.executionProviders).toContain('cpu');
    expect(status.device.models).toEqual(
      expect.arrayContaining([
        { name: 'linear', version: 1 },
        { name: 'multi', version: 1 },
        { name: 'recurrent', version: 1 },
      ]),
    );
  });

  it('MQTT, HTTP and a bare session agree exactly (dynamic batch, float32)', async () => {
    const x = [0.5, -1, 2, 0.25, 1, 1, 1, 1, -3, 0, 0.125, 7];
    const inputs: Record<string, Tensor> = { x: { dtype: 'float32', shape: [3, 4], data: x } };
    const mqttResult = tensorMapResult(await requester.request(DEVICE.id, 'infer', { model: 'linear', inputs }));
    const http = await viaHttp('/models/linear', { inputs });
    const reference = await bare(linear.bytes, inputs);
    expect(http.status).toBe(200);
    expect(mqttResult.outputs).toEqual(reference);
    expect(http.json.outputs).toEqual(reference);
    expect(mqttResult).toMatchObject({ model: 'linear', version: 1 });
    expect(allClose(mqttResult.outputs.y!.data as number[], linear.expected(x))).toBe(true);
  });

  it('several inputs including int64 agree exactly', async () => {
    const inputs: Record<string, Tensor> = {
      ids: { dtype: 'int64', shape: [2, 3], data: [1, 2, 3, '9007199254740993', -5, 0] },
      scale: { dtype: 'float32', shape: [2, 3], data: [0.5, 1, 2, 1e-9, 3, 4] },
    };
    const mqttResult = tensorMapResult(await requester.request(DEVICE.id, 'infer', { model: 'multi', inputs }));
    const http = await viaHttp('/models/multi/v1', { inputs });
    const reference = await bare(multi.bytes, inputs);
    expect(mqttResult.outputs).toEqual(reference);
    expect(http.json.outputs).toEqual(reference);
    expect(mqttResult.outputs.next_ids!.data.map(String)).toEqual(['2', '3', '4', '9007199254740994', '-4', '1']);
  });

  it('carries a recurrent state across requests', async () => {
    let state = [0, 0, 0, 0];
    let expected = [0, 0, 0, 0];
    for (const step of [[1, 0, -1, 0.5], [0.2, 0.2, 0.2, 0.2], [-2, 3, 0, 1]]) {
      const inputs: Record<string, Tensor> = {
        x: { dtype: 'float32', shape: [1, 4], data: step },
        state_in: { dtype: 'float32', shape: [1, 4], data: state },
      };
      const r = tensorMapResult(await requester.request(DEVICE.id, 'infer', { model: 'recurrent', inputs }));
      expect(r.outputs).toEqual(await bare(recurrent.bytes, inputs));
      expected = recurrent.step(step, expected);
      state = r.outputs.state_out!.data as number[];
      expect(allClose(state, expected)).toBe(true);
    }
  });

  it('bad tensors and unknown models get clear errors on both paths', async () => {
    const wrongDtype = { x: { dtype: 'int32' as const, shape: [1, 4], data: [1, 2, 3, 4] } };
    await expect(requester.request(DEVICE.id, 'infer', { model: 'linear', inputs: wrongDtype })).rejects.toMatchObject({ code: 'invalid_input' });
    const http = await viaHttp('/models/linear', { inputs: wrongDtype });
    expect(http.status).toBe(400);
    const wrongShape = { x: { dtype: 'float32' as const, shape: [1, 5], data: [1, 2, 3, 4, 5] } };
    await expect(requester.request(DEVICE.id, 'infer', { model: 'linear', inputs: wrongShape })).rejects.toMatchObject({ code: 'invalid_input' });
    await expect(requester.request(DEVICE.id, 'infer', { model: 'nope', inputs: wrongShape })).rejects.toMatchObject({ code: 'not_found' });
    await expect(requester.request(DEVICE.id, 'models.activate', { model: 'linear', version: 99 })).rejects.toMatchObject({ code: 'not_found' });
  });

  it('lists, activates, rolls back; legacy `update` activates the newest version', async () => {
    const list = await requester.request(DEVICE.id, 'models.list', {});
    expect(list.models.find((m) => m.name === 'linear')).toMatchObject({ active: 1, versions: [1, 2] });
    const updated = await requester.request(DEVICE.id, 'legacy', { command: 'update' });
    expect(updated.message).toBe('Model updated: linear@2');
    const x = [1, 2, 3, 4];
    const r2 = tensorMapResult(await requester.request(DEVICE.id, 'infer', { model: 'linear', inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } }));
    expect(r2.version).toBe(2);
    expect(allClose(r2.outputs.y!.data as number[], linear2.expected(x))).toBe(true);
    // the status follows the switch
    const status = await watcher.waitFor(DEVICE.id, true, 5000, (watcher.history.get(DEVICE.id)?.length ?? 1) - 1);
    expect(status.online).toBe(true);
    const again = await requester.request(DEVICE.id, 'legacy', { command: 'update' });
    expect(again.message).toMatch(/^Model already up to date: /);
    // going below the highest accepted version needs an operator-signed rollback manifest
    await expect(requester.request(DEVICE.id, 'models.rollback', { model: 'linear' })).rejects.toMatchObject({
      message: expect.stringMatching(/signed/),
    });
    const info = await requester.request(DEVICE.id, 'info', {});
    expect(info.models).toContainEqual({ name: 'linear', version: 2 });
    // remove the inactive version; the active one keeps serving
    expect(await requester.request(DEVICE.id, 'models.remove', { model: 'linear', version: 1 })).toEqual({ removed: true });
    const after = await requester.request(DEVICE.id, 'models.list', {});
    expect(after.models.find((m) => m.name === 'linear')).toMatchObject({ active: 2, versions: [2] });
    await expect(requester.request(DEVICE.id, 'models.remove', { model: '../../etc', version: 1 })).rejects.toMatchObject({ code: 'invalid_params' });
  });

  it('reports per-model health in telemetry', async () => {
    // the earlier requests were counted; the next sample carries them
    const seen: Record<string, unknown>[] = [];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no telemetry with model health')), 15_000);
      const onMessage = (topic: string, payload: Buffer) => {
        if (topic !== topics.device(DEVICE.id, 'telemetry')) return;
        const m = JSON.parse(payload.toString()) as { sample: { models: Record<string, unknown> } };
        seen.push(m.sample.models);
        if (Object.keys(m.sample.models).length > 0) {
          clearTimeout(timer);
          operator.off('message', onMessage);
          resolve();
        }
      };
      operator.on('message', onMessage);
      void operator.subscribeAsync(topics.device(DEVICE.id, 'telemetry'), { qos: 1 }).then(() =>
        // nudge: one more request so a sample after the subscription has something to report
        requester.request(DEVICE.id, 'infer', { model: 'multi', inputs: { ids: { dtype: 'int64', shape: [1, 3], data: [1, 2, 3] }, scale: { dtype: 'float32', shape: [1, 3], data: [1, 1, 1] } } }),
      );
    });
    const health = Object.values(seen[seen.length - 1]!)[0] as { requests: number; errors: number; p50Ms: number | null };
    expect(health.requests).toBeGreaterThan(0);
    expect(health.p50Ms).not.toBeNull();
  });
});

describe('SIGTERM under load', () => {
  it('every request the agent accepted gets an ok reply before it exits', async () => {
    const slow = slowModel({ matmuls: 40, size: 192 });
    const dir = await mkdtemp(join(tmpdir(), 'agent-slow-'));
    await preinstallModels(dir, SLOW.id, [{ name: 'slow', version: 1, bytes: slow.bytes }]);
    slowAgent = await startAgent({ broker: broker.url, ...SLOW, dataDir: dir }, watcher);
    const replies: Reply[] = [];
    const onMessage = (topic: string, payload: Buffer) => {
      if (topic === topics.device(SLOW.id, 'replies')) replies.push(ReplySchema.parse(JSON.parse(payload.toString())));
    };
    operator.on('message', onMessage);
    try {
      const x = Array.from({ length: 192 }, (_, i) => i / 192);
      const burst = Array.from({ length: 40 }, () => makeRequest('infer', { model: 'slow', inputs: { x: { dtype: 'float32', shape: [1, 192], data: x } } }, 30_000));
      for (const r of burst) operator.publish(topics.device(SLOW.id, 'commands'), JSON.stringify(r), { qos: 1 });
      // SIGTERM once the agent is busy with the burst
      await slowAgent.waitForLog((l) => l.msg === 'request handled');
      const exit = await slowAgent.kill('SIGTERM', 30_000);
      expect(exit.code).toBe(0);
      const finished = slowAgent.logs.find((l) => l.msg === 'requests finished')!;
      expect(finished.drained).toBe(true);
      const accepted = Number(finished.accepted);
      expect(accepted).toBeGreaterThan(0);
      // wait for the replies to reach us: the agent published them (PUBACKed) before exiting
      const ids = new Set(burst.map((r) => r.id));
      const deadline = Date.now() + 5000;
      while (replies.filter((r) => r.status === 'ok').length < accepted && Date.now() < deadline) {
        await new Promise((r) => {
          const timer = setTimeout(r, deadline - Date.now());
          operator.once('message', () => {
            clearTimeout(timer);
            r(undefined);
          });
        });
      }
      const ok = replies.filter((r) => r.status === 'ok' && ids.has(r.corr));
      const refused = replies.filter((r) => r.status === 'error');
      expect(ok).toHaveLength(accepted);
      for (const r of refused) expect(r.status === 'error' && r.error.code).toBe('unavailable');
      for (const r of ok) {
        const data = (r as Extract<Reply, { status: 'ok' }>).data as TensorMapInferResult;
        expect(allClose(data.outputs.y!.data as number[], x)).toBe(true);
      }
      expect(new Set(replies.map((r) => r.corr)).size).toBe(replies.length); // never two replies to one request
    } finally {
      operator.off('message', onMessage);
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
