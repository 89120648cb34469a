/**
 * A cluster of two broker processes sharing one Redis, the controller on one instance, the
 * agents (given both URLs) on the other. That instance is killed (-9) while the chunks of a
 * group rollout are on their way: the agents fail over to the surviving instance with their
 * jittered backoff, and the rollout finishes, every device serving the new model.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { brokerOrder } from '@edgefleet/device-agent';
import { topics } from '@edgefleet/protocol';
import { cleanupAgents, spawnAgent, type AgentProcess } from './support/agent-process.js';
import { startBrokerProcess, startRedis, writeCredentials, type BrokerProcess, type RedisProcess } from './support/cluster.js';
import { api, eventually, freePort, runCli, startManager, type ManagerProcess } from './support/manager-process.js';
import { allClose, largeModel } from './support/onnx-models.js';

const OPS = { id: 'ops', token: 'ops-token-0123456789abcdef0123' };
const GROUP = 'fo';
const tokenOf = (id: string) => `token-${id}-0123456789abcdef`;

describe('broker instances clustered through Redis: one killed mid-transfer', () => {
  let work: string;
  let redis: RedisProcess | undefined;
  let a: BrokerProcess | undefined;
  let b: BrokerProcess | undefined;
  let m: ManagerProcess | undefined;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'failover-'));
    redis = await startRedis();
  });
  afterAll(async () => {
    await cleanupAgents(...agents);
    await m?.cleanup();
    await Promise.all([a?.kill('SIGKILL'), b?.kill('SIGKILL')]);
    await redis?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('the devices on the killed instance fail over to the other one and the rollout finishes: every device verified and serves the model', async () => {
    const candidates = Array.from({ length: 40 }, (_, i) => `fo-${i}`);
    const credentials = await writeCredentials(work, { devices: candidates.map((id) => ({ id, token: tokenOf(id), groups: [GROUP] })), operators: [OPS] });
    const args = ['--redis', redis!.url, '--heartbeat-ms', '500'];
    [a, b] = [await startBrokerProcess({ credentials, args }), await startBrokerProcess({ credentials, args })];
    const list = [a.url, b.url];
    // three devices whose own order of the list starts at A (the instance that will be killed)
    const ids = candidates.filter((id) => brokerOrder(list, id)[0] === a!.url).slice(0, 3);
    expect(ids).toHaveLength(3);

    // the controller prefers B (the first of its list)
    m = await startManager({ args: [`${b.url},${a.url}`, '--broker-username', OPS.id], env: { EDGEFLEET_BROKER_PASSWORD: OPS.token } });
    for (const id of ids) {
      agents.push(await spawnAgent({ broker: list.join(','), id, token: tokenOf(id), groups: [GROUP], telemetryIntervalMs: 500, args: ['--fleet-public-key', m.publicKeyFile] }));
    }
    for (const agent of agents) {
      const line = await agent.waitForLog((l) => l.msg === 'connected', 20_000);
      expect(line.broker).toBe(a.url);
    }
    await eventually('all three online at the controller', async () => {
      for (const id of ids) {
        const r = await api<{ online: boolean }>(m!, 'GET', `/api/devices/${id}`);
        if (r.status !== 200 || !r.body.online) return undefined;
      }
      return true;
    }, 30_000);

    const model = largeModel({ inFeatures: 2048, outFeatures: 4096, seed: 11 }); // 32 MiB: 33 chunks of 1 MiB
    await writeFile(join(work, 'big.onnx'), model.bytes);
    expect((await runCli(m, ['models', 'add', join(work, 'big.onnx')], { timeoutMs: 60_000 })).code).toBe(0);

    // kill A as soon as the first chunk of the group transfer goes by
    const watcher = await mqtt.connectAsync(b.url, { clientId: 'ops-watch', username: OPS.id, password: OPS.token, protocolVersion: 4, reconnectPeriod: 0 });
    // (the whole group in one wave goes out on the group's topic; a wave of some devices on theirs)
    await watcher.subscribeAsync([topics.transferFilter({ kind: 'group', name: GROUP }), 'fleet/v1/devices/+/transfers/+/+'], { qos: 0 });
    let chunksAtKill = -1;
    let seen = 0;
    const killed = new Promise<void>((resolve) => {
      watcher.on('message', () => {
        seen++;
        if (chunksAtKill >= 0) return;
        chunksAtKill = seen;
        void a!.kill('SIGKILL').then(() => resolve());
      });
    });
    const deploy = runCli(m, ['deploy', 'big', '--to', `group:${GROUP}`, '--canary', String(ids.length), '--soak', '0', '--wait', '--json'], { timeoutMs: 150_000 });
    const result = await deploy;
    await Promise.race([killed, new Promise((resolve) => setTimeout(resolve, 10_000).unref())]); // the kill, if a chunk went by at all (asserted below)
    await watcher.endAsync();
    expect(chunksAtKill).toBeGreaterThan(0);
    expect(chunksAtKill).toBeLessThan(33); // it died with the transfer under way (33 chunks)
    expect({ code: result.code, stderr: result.stderr }).toMatchObject({ code: 0 });
    expect(result.json<{ status: string }>().status).toBe('succeeded');

    for (const agent of agents) {
      // lost A, came back on B after its backoff, with its persistent session (kept in Redis)
      expect(agent.logs.some((l) => l.msg === 'disconnected from the broker')).toBe(true);
      expect(agent.logs.filter((l) => l.msg === 'connected').at(-1)).toMatchObject({ broker: b.url, sessionPresent: true });
      expect(agent.logs.some((l) => l.msg === 'reconnecting after backoff')).toBe(true);
    }
    const x = Array.from({ length: 2048 }, (_, i) => ((i % 17) - 8) / 8);
    for (const id of ids) {
      const r = await api<{ version: number; outputs: { y: { data: number[] } } }>(m, 'POST', `/api/devices/${id}/infer`, { model: 'big', inputs: { x: { dtype: 'float32', shape: [1, 2048], data: x } } });
      expect(r.status).toBe(200);
      expect(r.body.version).toBe(1);
      expect(allClose(r.body.outputs.y.data, model.expected(x), 1e-3)).toBe(true);
    }
  }, 240_000);

  it('a controller given a list whose first instance is down connects to the next one', async () => {
    await m?.cleanup();
    const down = `mqtt://127.0.0.1:${await freePort()}`;
    m = await startManager({ args: [`${down},${b!.url}`, '--broker-username', OPS.id], env: { EDGEFLEET_BROKER_PASSWORD: OPS.token } });
    const health = (await (await fetch(`${m.url}/health`)).json()) as { broker: { embedded: boolean; connected: boolean; url: string } };
    expect(health.broker).toMatchObject({ embedded: false, connected: true, url: `${down},${b!.url}` });
  }, 60_000);
});
