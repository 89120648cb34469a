/**
 * Containers through a real agent process and a real broker: an app deployed earlier (through the module,
 * as the transfer commit will in phase 2) is reported in `info` and telemetry and answers the
 * `containers.*` commands; a model whose manifest names a container runtime is activated and served over
 * MQTT through its container; SIGTERM stops the runtime container and leaves the app running; an agent
 * whose engine socket does not exist reports the engine as absent and carries on.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import { ManifestSchema, TelemetryMessageSchema, tensorMapResult, topics } from '@edgefleet/protocol';
import type { TelemetryMessage } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { createRequester } from '@edgefleet/host-manager';
import type { Requester } from '@edgefleet/host-manager';
import { createContainerService } from '../src/containers/index.js';
import { createModelService } from '../src/models/index.js';
import { startTestBroker } from '../../test/support/broker.js';
import { cleanupAgents, connectOperator, startAgent, watchStatus } from '../../test/support/agent-process.js';
import type { AgentProcess, StatusWatcher } from '../../test/support/agent-process.js';
import { imageManifest, oipImage } from '../../test/support/container-images.js';
import { cleanupDevice, docker, getJson, inspect, requireEngine } from '../../test/support/docker.js';
import { linearModel, stageFile, testManifest } from '../../test/support/onnx-models.js';
import { refusal } from '../../test/support/refusal.js';

const OPERATOR = { id: 'op', token: 'operator-token-1' };
const D = { id: `ce-${process.pid}`, token: 'device-token-ce' };
const NO_ENGINE = { id: `ce-none-${process.pid}`, token: 'device-token-none' };
const logger = pino({ level: 'silent' });

let broker: RunningBroker;
let operator: MqttClient;
let watcher: StatusWatcher;
let requester: Requester;
let agent: AgentProcess | undefined;
let dir: string;
const telemetry: TelemetryMessage[] = [];

/** What phase 2's transfer commit will do: install the images, deploy the app, store the model (not active). */
async function prepare(dataDir: string): Promise<void> {
  const images = join(dir, 'images');
  const app = await oipImage(images, 'e2e-app');
  const runtime = await oipImage(images, 'e2e-runtime');
  const containers = await createContainerService({ device: D.id, dataDir, logger });
  await containers.start();
  await containers.installImage(imageManifest('web', 1, app, { container: { ports: [{ container: 8000 }], health: { kind: 'http', port: 8000, path: '/health' } } }), app.path);
  await containers.deploy('web', 1);
  await containers.installImage(imageManifest('oip-runtime', 1, runtime), runtime.path);
  await containers.close();
  const models = await createModelService({ dataDir, logger, threads: 1 });
  const bytes = linearModel().bytes;
  const manifest = ManifestSchema.parse({
    ...testManifest('x', 1, bytes, { target: { devices: [D.id] } }),
    image: { reference: 'oip:runtime', digest: runtime.id },
    container: { inference: { protocol: 'oip-http', port: 8000 }, health: { kind: 'image', settleMs: 0 } },
  });
  await models.install(manifest, await stageFile(join(dataDir, 'staging'), bytes));
  await models.close();
}

beforeAll(async () => {
  requireEngine();
  dir = await mkdtemp(join(tmpdir(), 'edgefleet-containers-e2e-'));
  const dataDir = join(dir, 'data');
  await prepare(dataDir);
  broker = await startTestBroker({ devices: [D, NO_ENGINE], operators: [OPERATOR] });
  operator = await connectOperator(broker.url, OPERATOR);
  watcher = await watchStatus(operator);
  requester = await createRequester(operator);
  await operator.subscribeAsync(topics.device(D.id, 'telemetry'), { qos: 1 });
  operator.on('message', (topic, payload) => {
    if (topic === topics.device(D.id, 'telemetry')) telemetry.push(TelemetryMessageSchema.parse(JSON.parse(payload.toString())));
  });
  agent = await startAgent({ broker: broker.url, ...D, dataDir, telemetryIntervalMs: 300 }, watcher);
}, 120_000);

afterAll(async () => {
  await cleanupAgents(agent);
  requester?.close();
  await operator?.endAsync();
  await broker?.close();
  cleanupDevice(D.id);
  await rm(dir, { recursive: true, force: true });
});

describe('containers through the agent process', () => {
  it('reports the app in info and containers.list, and its output through containers.logs', async () => {
    const info = await requester.request(D.id, 'info', {});
    expect(info.docker).toBe(true);
    expect(info.containers).toEqual([expect.objectContaining({ app: 'web', version: 1, role: 'app', running: true })]);
    const list = await requester.request(D.id, 'containers.list', {});
    expect(list.engine).toMatchObject({ available: true, version: expect.any(String) });
    expect(list.apps.map((a) => [a.app, a.active])).toEqual([['oip-runtime', null], ['web', 1]]);
    const logs = await requester.request(D.id, 'containers.logs', { app: 'web', lines: 10 });
    expect(logs.lines.join('\n')).toContain('oip-server e2e-app mode=ok');
  });

  it('stops and starts the app on request; rollback without a kept version is refused with the reason', async () => {
    expect(await requester.request(D.id, 'containers.stop', { app: 'web' })).toEqual({ app: 'web', version: 1, stopped: true });
    expect(inspect(`edgefleet.${D.id}.web.v1`)?.State.Running).toBe(false);
    expect(await requester.request(D.id, 'containers.start', { app: 'web' }, 30_000)).toEqual({ app: 'web', version: 1, started: true });
    expect(inspect(`edgefleet.${D.id}.web.v1`)?.State.Running).toBe(true);
    const e = await refusal(requester.request(D.id, 'containers.rollback', { app: 'web' }));
    expect(e).toMatchObject({ code: 'not_found' });
    expect(e.message).toMatch(/no previous version whose image is kept/);
  });

  it('activates a model served by a container and answers infer over MQTT through it; telemetry carries both', async () => {
    expect(await requester.request(D.id, 'models.activate', { model: 'x', version: 1 }, 30_000)).toMatchObject({ model: 'x', version: 1 });
    const r = tensorMapResult(await requester.request(D.id, 'infer', { model: 'x', inputs: { x: { dtype: 'float32', shape: [1, 4], data: [1, 2, 3, -4] } } }));
    expect(r.outputs.y).toEqual({ dtype: 'float32', shape: [1, 4], data: [2, 4, 6, -8] });
    const from = telemetry.length;
    const deadline = Date.now() + 10_000;
    let sample: TelemetryMessage | undefined;
    while (!sample) {
      if (Date.now() > deadline) throw new Error('no telemetry with both containers and x@1 requests');
      await new Promise((resolve) => operator.once('message', resolve));
      sample = telemetry.slice(from).find((t) => t.sample.containers?.some((c) => c.role === 'inference') && (t.sample.models['x@1']?.requests ?? 0) > 0);
    }
    expect(sample.sample.containers?.map((c) => `${c.app}@${c.version}:${c.role}`).sort()).toEqual(['web@1:app', 'x@1:inference']);
  });

  it('on SIGTERM stops its runtime container and leaves the app running', async () => {
    const runtime = (await requester.request(D.id, 'containers.list', {})).containers.find((c) => c.role === 'inference')!;
    const app = inspect(`edgefleet.${D.id}.web.v1`)!;
    expect(await agent!.kill('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(inspect(runtime.id)).toBeUndefined();
    expect(inspect(app.Id)?.State.StartedAt).toBe(app.State.StartedAt);
    expect(inspect(app.Id)?.State.Running).toBe(true);
    const port = Number(docker('port', app.Id, '8000/tcp').split('\n')[0]!.split(':').at(-1));
    expect((await getJson(port, '/version')).body).toMatchObject({ version: 'e2e-app' });
  });

  it('an agent whose engine socket does not exist reports it and carries on', async () => {
    const none = await startAgent({ broker: broker.url, ...NO_ENGINE, args: ['--docker-socket', '/nonexistent/docker.sock'] }, watcher);
    try {
      const list = await requester.request(NO_ENGINE.id, 'containers.list', {});
      expect(list.engine.available).toBe(false);
      expect(list.engine.reason).toMatch(/no Docker engine answers at \/nonexistent\/docker\.sock/);
      expect(await requester.request(NO_ENGINE.id, 'ping', {})).toMatchObject({ pong: true });
    } finally {
      await cleanupAgents(none);
    }
  });
});
