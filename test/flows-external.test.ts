/**
 * `hostManager <broker>` against a broker that is not ours (Mosquitto 2):
 * nothing in the controller or the agent depends on the embedded broker.
 * The controller learns an agent it never provisioned from its presence, and
 * a rollout through Mosquitto delivers, activates and serves the model.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupAgents, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { api, eventually, runCli, startManager } from './support/manager-process.js';
import { startMosquitto } from './support/mosquitto.js';
import type { MosquittoProcess } from './support/mosquitto.js';
import type { ManagerProcess } from './support/manager-process.js';
import { allClose, linearModel } from './support/onnx-models.js';

describe('the controller on an external broker (Mosquitto)', () => {
  let work: string;
  let mosquitto: MosquittoProcess | undefined;
  let m: ManagerProcess | undefined;
  let agent: AgentProcess | undefined;
  let broker: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'external-'));
    mosquitto = await startMosquitto(['allow_anonymous true', 'persistence false', 'message_size_limit 0']);
    broker = mosquitto.url;
  });

  afterAll(async () => {
    await cleanupAgents(agent);
    await m?.cleanup();
    await mosquitto?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('learns an agent from its presence and rolls a model out through Mosquitto', async () => {
    m = await startManager({ args: [broker] });
    const health = (await (await fetch(`${m.url}/health`)).json()) as { broker: { embedded: boolean; connected: boolean } };
    expect(health.broker).toMatchObject({ embedded: false, connected: true });

    agent = await spawnAgent({ broker, id: 'ext-1', token: 'mosquitto-ignores-it', groups: ['ext'], telemetryIntervalMs: 200, args: ['--fleet-public-key', m.publicKeyFile] });
    const seen = await eventually('ext-1 discovered', async () => {
      const r = await api<{ online: boolean; provisioned: boolean; groups: string[] }>(m!, 'GET', '/api/devices/ext-1');
      return r.status === 200 && r.body.online ? r.body : undefined;
    });
    expect(seen).toMatchObject({ provisioned: false, groups: ['ext'] });

    const model = linearModel({ seed: 5 });
    await writeFile(join(work, 'ext.onnx'), model.bytes);
    expect((await runCli(m, ['models', 'add', join(work, 'ext.onnx')])).code).toBe(0);
    const d = await runCli(m, ['deploy', 'ext', '--to', 'group:ext', '--soak', '0', '--wait', '--json']);
    expect(d.code).toBe(0);
    expect(d.json<{ status: string }>().status).toBe('succeeded');
    const x = [1, 2, 3, 4];
    const r = await api<{ version: number; outputs: { y: { data: number[] } } }>(m, 'POST', '/api/devices/ext-1/infer', { model: 'ext', inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } });
    expect(r.status).toBe(200);
    expect(r.body.version).toBe(1);
    expect(allClose(r.body.outputs.y.data, model.expected(x))).toBe(true);
  });
});
