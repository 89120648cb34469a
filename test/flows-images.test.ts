/**
 * Docker images through the fleet, over real processes: the controller (embedded broker), agents, the CLI,
 * the real Docker engine, a real sshd. `hostManager image push` streams each image out of the engine
 * (`docker save` through dockerode) into the registry and rolls it out; every device here shares this
 * machine's one engine (each agent owns its containers by its own device label).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { topics } from '@edgefleet/protocol';
import { cleanupAgents, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { openBrowser, signIn } from './support/browser.js';
import { oipImage, tinyImage } from './support/container-images.js';
import type { ImageArchive } from './support/container-images.js';
import { cleanupDevice, docker, imageExists, inspect, requireEngine } from './support/docker.js';
import { api, eventually, runCli, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';
import { startSshd } from './support/sshd.js';
import type { TestSshd } from './support/sshd.js';

const DEVICES = ['img-1', 'img-2'];
const GROUP = 'imgs';
const REPO = 'edgefleet-test/flows-web';

interface RolloutView {
  id: string;
  kind?: string;
  status: string;
  reason?: string;
  version: number;
  waves: { label: string; devices: string[]; gate?: { pass: boolean; reasons: string[]; containers?: { healthy: number; unhealthy: number }; after: { requests: number; errors: number } } }[];
  devices: Record<string, { state: string; previous: number | null; error?: { code: string; message: string } }>;
}
interface DeviceView {
  online: boolean;
  info: { containers?: { app: string; version: number; role: string; running: boolean; id: string; image: string }[] } | null;
}

let work: string;
let m: ManagerProcess;
const agents = new Map<string, AgentProcess>();
const tokens: Record<string, string> = {};
const archives: Record<string, ImageArchive> = {};
let specFile: string;
let foreign: { id: string; startedAt: string };

/** Loads a test archive into the engine as the operator's image `REPO:tag`. */
function operatorImage(tag: string, archive: ImageArchive): void {
  execFileSync('docker', ['load', '-q', '-i', archive.path], { stdio: 'ignore' });
  docker('tag', archive.id, `${REPO}:${tag}`);
}

async function start(id: string): Promise<AgentProcess> {
  const a = await spawnAgent({ broker: m.broker, id, token: tokens[id]!, groups: [GROUP], telemetryIntervalMs: 300, http: true, args: ['--fleet-public-key', m.publicKeyFile] });
  agents.set(id, a);
  await eventually(`${id} online`, async () => ((await api<DeviceView>(m, 'GET', `/api/devices/${id}`)).body.online ? true : undefined), 20_000);
  return a;
}

/** The device's running app container of `web`, as its status reports it. */
async function running(id: string): Promise<{ version: number; id: string; image: string } | undefined> {
  const info = (await api<DeviceView>(m, 'GET', `/api/devices/${id}`)).body.info;
  return info?.containers?.find((c) => c.app === 'web' && c.role === 'app' && c.running);
}

const X = [1, 2, 3, 4];
async function infer(id: string): Promise<{ status: number; y?: number[] }> {
  const r = await api<{ outputs?: { y: { data: number[] } } }>(m, 'POST', `/api/devices/${id}/infer`, { model: 'web', inputs: { x: { dtype: 'float32', shape: [1, 4], data: X } } });
  return { status: r.status, ...(r.body.outputs ? { y: r.body.outputs.y.data } : {}) };
}

/** Concurrent inference through the controller on every device; counts answers by factor (y = factor · x) and failures. */
function traffic(ids: string[], perDevice = 3) {
  const seen = { ok: 0, failed: [] as string[], wrong: 0, byFactor: new Map<number, number>() };
  let on = true;
  const loops = ids.flatMap((id) =>
    Array.from({ length: perDevice }, async () => {
      while (on) {
        const r = await infer(id).catch((e: Error) => ({ status: 0, error: e.message }));
        if (r.status !== 200 || !('y' in r) || !r.y) {
          seen.failed.push(`${id}: ${r.status}`);
          continue;
        }
        const factor = r.y[0]! / X[0]!;
        if (!r.y.every((v, i) => v === factor * X[i]!)) seen.wrong++;
        seen.ok++;
        seen.byFactor.set(factor, (seen.byFactor.get(factor) ?? 0) + 1);
      }
    }),
  );
  return { seen, stop: async () => ((on = false), await Promise.all(loops)) };
}

beforeAll(async () => {
  requireEngine();
  work = await mkdtemp(join(tmpdir(), 'flows-images-'));
  // FACTOR says which version answered: v1 doubles, v2 triples
  archives.v1 = await oipImage(work, 'flows-1', { env: { FACTOR: '2' } });
  archives.v2 = await oipImage(work, 'flows-2', { env: { FACTOR: '3' } });
  archives.exit = await oipImage(work, 'flows-exit', { env: { MODE: 'exit' } });
  archives.bad = await oipImage(work, 'flows-bad', { env: { MODE: 'infer-errors', FACTOR: '5' } });
  for (const [tag, a] of Object.entries(archives)) operatorImage(tag, a);
  specFile = join(work, 'web.json');
  await writeFile(specFile, JSON.stringify({ health: { kind: 'http', port: 8000, path: '/health' }, healthyWithinMs: 20_000, inference: { protocol: 'oip-http', port: 8000, model: 'x' } }));
  m = await startManager();
  for (const id of DEVICES) {
    const r = await api<{ token: string }>(m, 'POST', '/api/devices', { id, groups: [GROUP] });
    tokens[id] = r.body.token;
  }
  // not the fleet's: the app and device labels without io.edgefleet.owned, and a name in the fleet's pattern
  const fid = docker('run', '-d', '--name', 'edgefleet.img-1.web.v1.foreign', '--label', 'io.edgefleet.app=web', '--label', 'io.edgefleet.device=img-1', `${REPO}:v1`);
  foreign = { id: fid, startedAt: inspect(fid)!.State.StartedAt };
  await start('img-1'); // img-2 stays offline for the first push
}, 180_000);

afterAll(async () => {
  await cleanupAgents(...agents.values());
  await m?.cleanup();
  for (const id of DEVICES) cleanupDevice(id);
  if (foreign) spawnSync('docker', ['rm', '-f', foreign.id]);
  for (const tag of Object.keys(archives)) spawnSync('docker', ['rmi', `${REPO}:${tag}`]);
  await rm(work, { recursive: true, force: true });
});

describe('image push through the fleet', () => {
  it('reaches a group with one device offline; that device gets the image when it returns', async () => {
    const pushed = await runCli(m, ['image', 'push', `${REPO}:v1`, '--name', 'web', '--spec', specFile, '--to', `group:${GROUP}`, '--canary', '1', '--waves', '100', '--soak', '0', '--offline-deadline', '300', '--json'], { timeoutMs: 120_000 });
    expect(pushed.code).toBe(0);
    const { id } = pushed.json<RolloutView>();
    const partway = await eventually('img-1 switched, img-2 waiting', async () => {
      const r = (await api<RolloutView>(m, 'GET', `/api/rollouts/${id}`)).body;
      return r.devices['img-1']?.state === 'switched' && r.devices['img-2']?.state === 'waiting' ? r : undefined;
    }, 90_000);
    expect(partway.status).toBe('running');
    expect(partway.kind).toBe('image');
    await start('img-2');
    const done = await eventually('the rollout finished', async () => {
      const r = (await api<RolloutView>(m, 'GET', `/api/rollouts/${id}`)).body;
      return r.status !== 'running' ? r : undefined;
    }, 90_000);
    expect(done.status).toBe('succeeded');
    for (const d of DEVICES) {
      const c = await eventually(`${d} runs web@1`, async () => ((await running(d))?.version === 1 ? running(d) : undefined));
      expect(c!.image).toBe(archives.v1!.id); // the pinned image ID, on every device
      expect(await infer(d)).toEqual({ status: 200, y: X.map((v) => 2 * v) });
    }
    // the Open Inference Protocol form goes through the app's container the same way
    const oip = await api<{ model_name: string; outputs: { name: string; datatype: string; data: number[] }[] }>(m, 'POST', '/api/devices/img-1/infer', { model: 'web', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: X }] });
    expect(oip.status).toBe(200);
    expect(oip.body).toMatchObject({ model_name: 'web', model_version: '1', outputs: [{ name: 'y', datatype: 'FP32', shape: [1, 4], data: X.map((v) => 2 * v) }] });
    // and so does the device's own HTTP API, on both route families
    const port = await agents.get('img-1')!.httpPort();
    const local = async (path: string, body: unknown) => {
      const r = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };
    const v2 = await local('/v2/models/web/infer', { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: X }] });
    expect(v2).toMatchObject({ status: 200, body: { model_name: 'web', outputs: [{ name: 'y', data: X.map((v) => 2 * v) }] } });
    const original = await local('/models/web', { inputs: { x: { dtype: 'float32', shape: [1, 4], data: X } } });
    expect(original).toMatchObject({ status: 200, body: { outputs: { y: { data: X.map((v) => 2 * v) } } } });
    expect((await local('/v2/models/nothing-here/infer', { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: X }] })).status).toBe(404); // neither a model nor an app
    const ls = await runCli(m, ['image', 'ls', '--json']);
    expect(ls.json<{ name: string; version: number; image: { digest: string } }[]>()).toEqual([expect.objectContaining({ name: 'web', version: 1, image: expect.objectContaining({ digest: archives.v1!.id }) })]);
  }, 240_000);

  it("the dashboard shows the device's containers: the app's version, role, state and container name", async () => {
    const context = await openBrowser(join(work, 'profile'));
    try {
      const page = await signIn(context, `${m.url}#/device/img-1`, m.token);
      await page.waitForFunction(() => /web@1/.test(document.getElementById('device-containers')?.textContent ?? ''), null, { timeout: 15_000 });
      const row = await page.locator('#device-containers tr', { hasText: 'web@1' }).first().innerText();
      expect(row).toMatch(/^web@1\s+app\s+running\s+none\s+\d+\s+.*edgefleet\.img-1\.web\.v1$/); // health: the engine's own HEALTHCHECK (this image has none; the agent's check gated the switch)
      expect(await page.locator('#device-containers').innerText()).not.toMatch(/foreign/); // not the fleet's: not shown
    } finally {
      await context.close();
    }
  }, 60_000);

  it('replaces blue/green under inference load through the fleet with no failed request, gated on the same health figures as models', async () => {
    const before = await Promise.all(DEVICES.map((d) => running(d)));
    const load = traffic(DEVICES, 2);
    await eventually('traffic on v1', async () => ((load.seen.byFactor.get(2) ?? 0) > 30 ? true : undefined), 30_000);
    const r = await runCli(m, ['image', 'push', `${REPO}:v2`, '--name', 'web', '--spec', specFile, '--to', `group:${GROUP}`, '--canary', '1', '--waves', '100', '--soak', '2', '--min-requests', '5', '--wait', '--json'], { timeoutMs: 180_000 });
    const after3 = (load.seen.byFactor.get(3) ?? 0) + 30;
    await eventually('traffic on v2', async () => ((load.seen.byFactor.get(3) ?? 0) > after3 ? true : undefined), 30_000);
    await load.stop();
    const rollout = r.json<RolloutView>();
    expect(rollout.status).toBe('succeeded');
    expect(load.seen.failed).toEqual([]);
    expect(load.seen.wrong).toBe(0);
    for (const wave of rollout.waves) {
      expect(wave.gate?.pass).toBe(true);
      expect(wave.gate?.containers).toEqual({ healthy: wave.devices.length, unhealthy: 0 });
      expect(wave.gate!.after.requests).toBeGreaterThan(0); // the app's inference figures, from telemetry
    }
    for (const [i, d] of DEVICES.entries()) {
      const now = await eventually(`${d} reports web@2`, async () => ((await running(d))?.version === 2 ? running(d) : undefined));
      expect(now?.version).toBe(2);
      expect(now?.image).toBe(archives.v2!.id);
      expect(inspect(before[i]!.id)).toBeUndefined(); // the old container was stopped and removed after the switch
    }
  }, 240_000);

  it('a version that exits at once is rolled back on the canary and fails the rollout; the others are never touched', async () => {
    const before = await Promise.all(DEVICES.map((d) => running(d)));
    const r = await runCli(m, ['image', 'push', `${REPO}:exit`, '--name', 'web', '--spec', specFile, '--to', `group:${GROUP}`, '--canary', '1', '--waves', '100', '--soak', '0', '--wait', '--json'], { timeoutMs: 180_000 });
    expect(r.code).toBe(1);
    const rollout = r.json<RolloutView>();
    expect(rollout.status).toBe('failed');
    const canary = rollout.waves[0]!.devices[0]!;
    expect(rollout.devices[canary]).toMatchObject({ state: 'failed', error: { code: 'smoke_test_failed' } });
    expect(rollout.devices[canary]!.error!.message).toMatch(/did not become healthy: it (exited with code 3|keeps exiting).*version 2 was restored/);
    expect(rollout.reason).toMatch(/wave 0 \(canary\) failed its gate: 1 of 1 devices failed to install/);
    for (const d of rollout.waves[1]!.devices) expect(rollout.devices[d]!.state).toBe('pending');
    for (const [i, d] of DEVICES.entries()) {
      expect((await running(d))?.id).toBe(before[i]!.id); // the same v2 container, never stopped
      expect(inspect(before[i]!.id)!.State.StartedAt).toBeDefined();
      expect(await infer(d)).toEqual({ status: 200, y: X.map((v) => 3 * v) });
    }
  }, 240_000);

  it('a version that fails under real traffic fails its gate on the error rate and is rolled back to the previous version', async () => {
    const load = traffic(DEVICES, 2);
    await eventually('traffic on v2', async () => ((load.seen.byFactor.get(3) ?? 0) > 20 ? true : undefined), 30_000);
    const r = await runCli(m, ['image', 'push', `${REPO}:bad`, '--name', 'web', '--spec', specFile, '--to', `group:${GROUP}`, '--canary', '1', '--waves', '100', '--soak', '3', '--min-requests', '5', '--wait', '--json'], { timeoutMs: 180_000 });
    const rollout = r.json<RolloutView>();
    const canary = rollout.waves[0]!.devices[0]!;
    const back = (load.seen.byFactor.get(3) ?? 0) + 20;
    await eventually('v2 answering again everywhere', async () => ((load.seen.byFactor.get(3) ?? 0) > back ? true : undefined), 30_000);
    await load.stop();
    expect(r.code).toBe(1);
    expect(rollout.status).toBe('failed');
    expect(rollout.waves[0]!.gate).toMatchObject({ pass: false, containers: { healthy: 1, unhealthy: 0 } });
    expect(rollout.reason).toMatch(/error rate/);
    expect(rollout.devices[canary]).toMatchObject({ state: 'rolled-back', previous: 2 });
    expect(load.seen.failed.every((f) => f.startsWith(`${canary}:`))).toBe(true); // only the canary saw the bad build
    for (const d of DEVICES) await eventually(`${d} back on web@2`, async () => ((await running(d))?.version === 2 ? true : undefined));
    const audit = (await runCli(m, ['audit', '--limit', '200', '--json'])).json<{ action: string; result: string; target?: string }[]>();
    expect(audit.some((e) => e.action === 'image.rollback' && e.result === 'ok' && e.target?.startsWith(`${canary}: web@4 → 2`))).toBe(true);
  }, 240_000);

  it('refuses an older version without a signed rollback (the highest version accepted per app is durable)', async () => {
    const r = await runCli(m, ['image', 'push', 'web@1', '--to', 'img-1', '--soak', '0', '--wait', '--json'], { timeoutMs: 60_000 });
    expect(r.code).toBe(1);
    expect(r.json<RolloutView>().devices['img-1']!.error).toMatchObject({ code: 'lower_version' });
    expect((await running('img-1'))?.version).toBe(2);
  }, 60_000);

  it('stops, runs and removes the app on devices; a container the fleet does not own is never touched', async () => {
    expect((await runCli(m, ['image', 'stop', 'web', '--to', 'img-2'])).code).toBe(0);
    await eventually('img-2 stopped', async () => ((await running('img-2')) === undefined ? true : undefined));
    expect((await infer('img-2')).status).toBe(503);
    const run = await runCli(m, ['image', 'run', 'web@2', '--to', 'img-2', '--json']);
    expect(run.json<{ results: { ok: boolean }[] }>().results).toEqual([expect.objectContaining({ device: 'img-2', ok: true })]);
    expect(await infer('img-2')).toEqual({ status: 200, y: X.map((v) => 3 * v) });
    const rm1 = await runCli(m, ['image', 'rm', 'web', '--from', 'img-1', '--json']);
    expect(rm1.code).toBe(0);
    await eventually('img-1 runs no web container', async () => (docker('ps', '-aq', '--filter', 'label=io.edgefleet.device=img-1', '--filter', 'label=io.edgefleet.owned=true') === '' ? true : undefined));
    const still = inspect(foreign.id);
    expect(still?.State.Running).toBe(true);
    expect(still?.State.StartedAt).toBe(foreign.startedAt);
    expect((await running('img-2'))?.version).toBe(2); // other devices keep theirs
  }, 120_000);

  it('a push to every online device of the group at once sends offer, status and commit once, on the group topic', async () => {
    archives.v5 = await oipImage(work, 'flows-5', { env: { FACTOR: '6' } });
    operatorImage('v5', archives.v5);
    // an operator's MQTT client sees what the controller publishes (the controller itself is inside the broker)
    const watch = await mqtt.connectAsync(m.broker, { clientId: 'admin-watch', username: 'admin', password: m.token, protocolVersion: 4, reconnectPeriod: 0 });
    const seen: { topic: string; command: string }[] = [];
    watch.on('message', (topic, payload) => {
      const command = (JSON.parse(payload.toString()) as { command?: string }).command;
      if (command?.startsWith('transfer.')) seen.push({ topic, command });
    });
    await watch.subscribeAsync([topics.group(GROUP, 'commands'), ...DEVICES.map((d) => topics.device(d, 'commands'))], { qos: 1 });
    try {
      const r = await runCli(m, ['image', 'push', `${REPO}:v5`, '--name', 'web', '--spec', specFile, '--to', `group:${GROUP}`, '--canary', '0', '--waves', '100', '--soak', '0', '--wait', '--json'], { timeoutMs: 180_000 });
      expect(r.code).toBe(0);
      expect(r.json<RolloutView>().status).toBe('succeeded');
    } finally {
      await watch.endAsync();
    }
    const onGroup = seen.filter((e) => e.topic === topics.group(GROUP, 'commands')).map((e) => e.command);
    expect(onGroup.filter((c) => c === 'transfer.offer')).toHaveLength(1);
    expect(onGroup.filter((c) => c === 'transfer.commit')).toHaveLength(1);
    expect(seen.filter((e) => e.topic !== topics.group(GROUP, 'commands'))).toEqual([]); // nothing device by device
    for (const d of DEVICES) {
      const c = await eventually(`${d} runs web@5`, async () => ((await running(d))?.version === 5 ? running(d) : undefined));
      expect(c!.image).toBe(archives.v5!.id);
      expect(await infer(d)).toEqual({ status: 200, y: X.map((v) => 6 * v) });
    }
  }, 240_000);
});

describe('image push --via ssh (a device without an agent)', () => {
  let sshd: TestSshd;
  let ssh: ImageArchive;
  const tag = `${REPO}:ssh`;

  beforeAll(async () => {
    ssh = await tinyImage(work, { repoTags: [] }); // loaded, never run: the path of the bytes is what is tested
    operatorImage('ssh', ssh);
    archives.ssh = ssh;
    sshd = await startSshd();
  }, 120_000);

  afterAll(async () => {
    await sshd?.close();
  });

  const via = (ref: string) => ['image', 'push', ref, '--via', 'ssh', '--to', `${sshd.username}@127.0.0.1:${sshd.port}`, '--ssh-key', sshd.privateKeyPath, '--host-key', sshd.hostKeyFingerprint, '--json'];

  it('streams the archive into docker load on the device and verifies the image ID there; a rotted archive is refused with nothing kept', async () => {
    const first = await runCli(m, [...via(tag), '--name', 'sshapp'], { timeoutMs: 120_000 });
    expect(first.code).toBe(0);
    expect(first.json<{ delivery: { image: string; loaded: boolean } }>().delivery).toMatchObject({ image: ssh.id, loaded: false }); // the same engine had it

    execFileSync('docker', ['rmi', '-f', ssh.id], { stdio: 'ignore' });
    expect(imageExists(ssh.id)).toBe(false);
    const second = await runCli(m, via('sshapp@1'), { timeoutMs: 120_000 });
    expect(second.stdout).not.toMatch(/"error"/);
    expect(second.code).toBe(0);
    const delivery = second.json<{ length: number; delivery: { image: string; loaded: boolean; bytes: number; tag: string } }>();
    expect(delivery.delivery).toMatchObject({ image: ssh.id, loaded: true, bytes: delivery.length, tag });
    expect(docker('image', 'inspect', '-f', '{{.Id}}', tag)).toBe(ssh.id);

    // a byte of the registry's copy flipped in the middle of the layer: refused, nothing left on the device
    const rec = (await api<{ sha256: string; blob: string }>(m, 'GET', '/api/images/sshapp/1')).body;
    const blob = await open(join(m.dataDir, rec.blob), 'r+');
    const middle = Math.floor(delivery.length / 2);
    const byte = Buffer.alloc(1);
    await blob.read(byte, 0, 1, middle);
    await blob.write(Buffer.from([byte[0]! ^ 0xff]), 0, 1, middle);
    await blob.close();
    execFileSync('docker', ['rmi', '-f', ssh.id], { stdio: 'ignore' });
    const rotted = await runCli(m, via('sshapp@1'), { timeoutMs: 120_000 });
    expect(rotted.code).toBe(1);
    expect(rotted.json<{ error: { code: string; message: string } }>().error.message).toMatch(/rotted|refused the archive/);
    expect(imageExists(ssh.id)).toBe(false);
    const audit = (await runCli(m, ['audit', '--limit', '50', '--json'])).json<{ action: string; result: string }[]>();
    expect(audit.filter((e) => e.action === 'image.deliver.ssh').map((e) => e.result)).toEqual(['ok', 'ok', 'error']);
  }, 240_000);
});
