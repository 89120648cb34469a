/**
 * The containers half against the real Docker engine, through its API (createContainerService): install
 * from a `docker save` archive; refusals (digest mismatch, truncated archive, wrong architecture, full
 * disk), each while the running container keeps running and with nothing left loaded; blue/green and
 * stop-then-start replacement; automatic rollback of a container that exits at once or never becomes
 * healthy; pruning; stop/start/logs/rollback; and containers the fleet does not own, never touched.
 * Images are assembled by the test (test/support/container-images.ts); no registry is involved.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { ContainerSpecInput, FleetEvent } from '@edgefleet/protocol';
import { untaggedArchive } from '@edgefleet/node-io';
import { boardPlatform, createContainerService, verifyLoaded } from '../src/containers/index.js';
import type { ContainerService } from '../src/containers/index.js';
import { imageManifest, oipImage, tinyImage } from '../../test/support/container-images.js';
import type { ImageArchive } from '../../test/support/container-images.js';
import { cleanupDevice, docker, getJson, imageExists, inspect, requireEngine } from '../../test/support/docker.js';
import { freePort } from '../../test/support/manager-process.js';
import { refusal } from '../../test/support/refusal.js';

const DEVICE = `ct-${process.pid}`;
const logger = pino({ level: process.env.TEST_AGENT_LOGS ? 'debug' : 'silent' });
const events: FleetEvent[] = [];
let dir: string;
let service: ContainerService;
const images: Record<string, ImageArchive> = {};
const foreign: string[] = [];

/** An HTTP health check on the test server, quick enough for tests (the default waits 60 s). */
const web = (extra: ContainerSpecInput = {}): ContainerSpecInput => ({
  ports: [{ container: 8000 }],
  health: { kind: 'http', port: 8000, path: '/health', intervalMs: 100 },
  healthyWithinMs: 15_000,
  ...extra,
});

async function hostPortOf(app: string, version: number): Promise<number> {
  const c = (await service.engine.listOwned(app)).find((o) => o.version === version && o.running);
  if (!c) throw new Error(`${app}@${version} is not running`);
  return c.ports['8000/tcp']!;
}

async function install(app: string, version: number, archive: ImageArchive, spec?: ContainerSpecInput): Promise<void> {
  await service.installImage(imageManifest(app, version, archive, spec ? { container: spec } : {}), archive.path);
}

/** The running container of app@version, to prove later that a refusal left it alone. */
function snapshot(app: string, version: number): { id: string; startedAt: string } {
  const c = inspect(`edgefleet.${DEVICE}.${app}.v${version}`);
  if (!c?.State.Running) throw new Error(`${app}@${version} is not running`);
  return { id: c.Id, startedAt: c.State.StartedAt };
}

function stillRunning(before: { id: string; startedAt: string }): void {
  const c = inspect(before.id);
  expect(c?.State.Running).toBe(true);
  expect(c?.State.StartedAt).toBe(before.startedAt);
}

beforeAll(async () => {
  requireEngine();
  dir = await mkdtemp(join(tmpdir(), 'edgefleet-containers-'));
  service = await createContainerService({ device: DEVICE, dataDir: join(dir, 'data'), logger, publishEvent: (e) => events.push(e) });
  await service.start();
  for (const v of ['v1', 'v2', 'v3']) images[v] = await oipImage(join(dir, 'images'), v);
  // Containers the fleet does not own: one with app labels but no owned label, one owned by another device.
  const image = `edgefleet-test-foreign:${process.pid}`;
  execFileSync('docker', ['load', '-i', images.v1!.path], { stdio: 'ignore' });
  docker('tag', images.v1!.id, image);
  foreign.push(docker('run', '-d', '--name', `foreign-${process.pid}`, '-l', 'io.edgefleet.app=web', '-l', 'io.edgefleet.version=1', image, '/usr/bin/node', '/srv/oip-server.cjs'));
  foreign.push(docker('run', '-d', '--name', `other-device-${process.pid}`, '-l', 'io.edgefleet.owned=true', '-l', 'io.edgefleet.device=another', '-l', 'io.edgefleet.app=web', '-l', 'io.edgefleet.version=1', '-l', 'io.edgefleet.role=app', image, '/usr/bin/node', '/srv/oip-server.cjs'));
}, 120_000);

afterAll(async () => {
  await service?.close();
  cleanupDevice(DEVICE);
  if (foreign.length) execFileSync('docker', ['rm', '-f', ...foreign], { stdio: 'ignore' });
  execFileSync('docker', ['rmi', `edgefleet-test-foreign:${process.pid}`], { stdio: 'ignore' });
  await rm(dir, { recursive: true, force: true });
});

describe('image install and first deploy', () => {
  it('installs from an archive: loaded, tagged for the device, recorded; a second install loads nothing', async () => {
    const first = await service.installImage(imageManifest('web', 1, images.v1!, { container: web() }), images.v1!.path);
    // the test loaded v1 itself for its foreign containers: the agent finds it present and does not load it again
    expect(first).toEqual({ app: 'web', version: 1, image: images.v1!.id, loaded: false });
    const second = await service.installImage(imageManifest('web', 2, images.v2!, { container: web() }), images.v2!.path);
    expect(second.loaded).toBe(true);
    expect(docker('image', 'inspect', '-f', '{{.Id}}', `edgefleet/${DEVICE}:web.v2`)).toBe(images.v2!.id);
    expect(JSON.parse(docker('image', 'inspect', '-f', '{{json .RepoTags}}', images.v2!.id))).toEqual([`edgefleet/${DEVICE}:web.v2`]);
    expect((await service.list()).apps).toEqual([expect.objectContaining({ app: 'web', active: null, images: [{ version: 1, image: images.v1!.id }, { version: 2, image: images.v2!.id }] })]);
  });

  it('deploys: the container runs with the fleet labels, answers on its published loopback port', async () => {
    const r = await service.deploy('web', 1);
    expect(r).toEqual({ app: 'web', version: 1, previous: null, strategy: 'start' });
    expect((await getJson(await hostPortOf('web', 1), '/version')).body).toMatchObject({ version: 'v1' });
    const [state] = await service.states();
    expect(state).toMatchObject({ app: 'web', version: 1, role: 'app', state: 'running', running: true, image: images.v1!.id, restarts: 0 });
    expect(events.at(-1)).toMatchObject({ event: 'container.activated', data: { app: 'web', version: 1, previous: null, strategy: 'start' } });
  });
});

describe('refused images, while web@1 keeps running', () => {
  it('a digest mismatch: refused before anything is loaded', async () => {
    const before = snapshot('web', 1);
    const a = await tinyImage(join(dir, 'images'));
    const b = await tinyImage(join(dir, 'images'));
    const manifest = imageManifest('tiny', 1, a, { image: { reference: 'tiny:1', digest: b.id } });
    const e = await refusal(service.installImage(manifest, a.path));
    expect(e.code).toBe('digest_mismatch');
    expect(e.message).toContain(`holds image ${a.id}, but the signed manifest pins ${b.id}`);
    expect(imageExists(a.id) || imageExists(b.id)).toBe(false);
    stillRunning(before);
  });

  it("the engine's word after a load: an image it yields that is not the pin is removed, unless it was there before", async () => {
    const before = snapshot('web', 1);
    const fresh = await tinyImage(join(dir, 'images'));
    const board = boardPlatform();
    const idsBefore = new Set(docker('images', '-aq', '--no-trunc').split('\n'));
    const loaded = await service.engine.load(untaggedArchive(fresh.path));
    expect(loaded).toEqual([fresh.id]);
    expect(imageExists(fresh.id)).toBe(true);
    const e = await refusal(verifyLoaded(service.engine, loaded, images.v3!.id, board, idsBefore, 'tiny@1'));
    expect(e.code).toBe('digest_mismatch');
    expect(e.message).toContain(`removed what the load added (${fresh.id})`);
    expect(imageExists(fresh.id)).toBe(false);
    // the same load of an image that was on the engine already: refused, and the image stays
    const kept = await refusal(verifyLoaded(service.engine, [images.v1!.id], images.v3!.id, board, new Set([images.v1!.id]), 'web@9'));
    expect(kept.message).toContain('the load added nothing');
    expect(imageExists(images.v1!.id)).toBe(true);
    stillRunning(before);
  });

  it('a truncated archive: refused by its length, and by its structure when the manifest was made for the cut file', async () => {
    const before = snapshot('web', 1);
    const cutPath = join(dir, 'images', 'cut.tar');
    execFileSync('cp', [images.v3!.path, cutPath]);
    await truncate(cutPath, Math.floor(images.v3!.length / 2));
    const byLength = await refusal(service.installImage(imageManifest('web', 3, images.v3!, { container: web() }), cutPath));
    expect(byLength.code).toBe('truncated');
    expect(byLength.message).toMatch(/is \d+ bytes, the manifest says \d+; resume the transfer/);
    const cut = { ...images.v3!, path: cutPath, length: Math.floor(images.v3!.length / 2), sha256: execFileSync('sha256sum', [cutPath], { encoding: 'utf8' }).split(' ')[0]! };
    const byStructure = await refusal(service.installImage(imageManifest('web', 3, cut, { container: web() }), cutPath));
    expect(byStructure.code).toBe('truncated');
    expect(byStructure.message).toMatch(/ends inside an entry/);
    expect(imageExists(images.v3!.id)).toBe(false);
    stillRunning(before);
  });

  it('an image for another architecture: refused from the manifest, and from the archive when the manifest does not say', async () => {
    const before = snapshot('web', 1);
    const arm = await tinyImage(join(dir, 'images'), { platform: { architecture: 'arm64', variant: 'v8' } });
    const declared = await refusal(service.installImage(imageManifest('tiny', 2, arm, { image: { reference: 'tiny:2', digest: arm.id, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } } }), arm.path));
    expect(declared.code).toBe('incompatible');
    expect(declared.message).toMatch(/built for linux\/arm64\/v8, this device is linux\/amd64/);
    const undeclared = await refusal(service.installImage(imageManifest('tiny', 2, arm), arm.path));
    expect(undeclared.code).toBe('incompatible');
    expect(undeclared.message).toMatch(/nothing was loaded/);
    expect(imageExists(arm.id)).toBe(false);
    stillRunning(before);
  });

  it("a full disk: refused when the engine's data root cannot hold the archive and its layers (a real 64 MiB filesystem)", async () => {
    const before = snapshot('web', 1);
    const small = join(dir, 'small-root');
    await mkdir(small, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', small]);
    const cramped = await createContainerService({ device: `${DEVICE}-disk`, dataDir: join(dir, 'data-disk'), logger, engineRoot: small });
    try {
      const e = await refusal(cramped.installImage(imageManifest('web', 3, images.v3!, { container: web() }), images.v3!.path));
      expect(e.code).toBe('disk_full');
      expect(e.message).toMatch(new RegExp(`needs about \\d+ MiB free under ${small} .* 64 MiB are free`));
    } finally {
      await cramped.close();
      execFileSync('umount', [small]);
    }
    expect(imageExists(images.v3!.id)).toBe(false);
    stillRunning(before);
  });
});

describe('replace, roll back, prune', () => {
  it('blue/green: web@2 starts beside web@1, and web@1 goes once web@2 is healthy', async () => {
    const r = await service.deploy('web', 2);
    expect(r).toEqual({ app: 'web', version: 2, previous: 1, strategy: 'blue-green' });
    expect((await getJson(await hostPortOf('web', 2), '/version')).body).toMatchObject({ version: 'v2' });
    expect(inspect(`edgefleet.${DEVICE}.web.v1`)).toBeUndefined();
  });

  it('a version that exits at once is stopped and web@2 keeps serving (automatic rollback, with the reason)', async () => {
    const before = snapshot('web', 2);
    await install('web', 3, images.v3!, web({ env: { MODE: 'exit' } }));
    const e = await refusal(service.deploy('web', 3));
    expect(e.code).toBe('smoke_test_failed');
    expect(e.message).toMatch(/web\.v3 did not become healthy: it (exited with code 3|keeps exiting).*oip-server v3 mode=exit.*version 2 was restored/);
    expect(inspect(`edgefleet.${DEVICE}.web.v3`)).toBeUndefined();
    stillRunning(before);
    expect(events.at(-1)).toMatchObject({ event: 'container.failed', data: { app: 'web', version: 3, restored: 2, error: { code: 'smoke_test_failed' } } });
    expect((await service.list()).apps[0]).toMatchObject({ active: 2, lastFailure: { version: 3, error: { code: 'smoke_test_failed' } } });
  });

  it('a version that never becomes healthy is stopped at its deadline and web@2 keeps serving', async () => {
    const before = snapshot('web', 2);
    await install('web', 4, images.v3!, web({ env: { MODE: 'never-ready' }, health: { kind: 'http', port: 8000, path: '/v2/health/ready', intervalMs: 100 }, healthyWithinMs: 2500 }));
    const e = await refusal(service.deploy('web', 4));
    expect(e.message).toMatch(/was not healthy within 2500 ms \(last: GET \/v2\/health\/ready on port 8000: 503\).*version 2 was restored/);
    expect(inspect(`edgefleet.${DEVICE}.web.v4`)).toBeUndefined();
    stillRunning(before);
  });

  it("a Docker HEALTHCHECK in the spec: the engine's verdict decides, healthy or rolled back", async () => {
    // exec form (the test image has no shell): node asks the server itself
    const probe = (path: string) => ['/usr/bin/node', '-e', `require('http').get('http://127.0.0.1:8000${path}', (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))`];
    const check = (path: string): ContainerSpecInput => ({ health: { kind: 'docker', test: probe(path), intervalMs: 200, timeoutMs: 2000, retries: 2 }, healthyWithinMs: 20_000 });
    await install('dhc', 1, images.v1!, check('/health'));
    await install('dhc', 2, images.v2!, check('/v2/health/ready'));
    await install('dhc', 3, images.v3!, { ...check('/v2/health/ready'), env: { MODE: 'never-ready' } });
    await service.deploy('dhc', 1);
    expect((await service.states()).find((c) => c.app === 'dhc')).toMatchObject({ version: 1, health: 'healthy' });
    expect(await service.deploy('dhc', 2)).toMatchObject({ strategy: 'blue-green' });
    const e = await refusal(service.deploy('dhc', 3));
    expect(e.message).toMatch(/its Docker health check reports unhealthy.*version 2 was restored/);
    expect((await service.states()).filter((c) => c.app === 'dhc').map((c) => [c.version, c.health])).toEqual([[2, 'healthy']]);
  });

  it('stop-then-start on a fixed host port, and the old one started again when the new one fails', async () => {
    const port = await freePort();
    const fixed = web({ ports: [{ container: 8000, host: port }] });
    await install('api', 1, images.v1!, fixed);
    await install('api', 2, images.v2!, fixed);
    await install('api', 3, images.v3!, { ...fixed, env: { MODE: 'exit' } });
    await service.deploy('api', 1);
    expect(await service.deploy('api', 2)).toMatchObject({ strategy: 'stop-then-start', previous: 1 });
    expect((await getJson(port, '/version')).body).toMatchObject({ version: 'v2' });
    const e = await refusal(service.deploy('api', 3));
    expect(e.message).toMatch(/version 2 was restored/);
    expect((await getJson(port, '/version')).body).toMatchObject({ version: 'v2' });
    expect((await service.engine.listOwned('api')).map((c) => [c.version, c.running])).toEqual([[2, true]]);
  });

  it('keeps keepPrevious images for rollback and prunes the rest; rollback returns to the kept one', async () => {
    // api: 2 active, history [1], 3 failed; deploying 5 (keepPrevious 1) keeps 2 and prunes 1 and 3: their tags go,
    // their images stay because web's releases (and the test's own tag) still name them
    await install('api', 5, images.v3!, web({ ports: [{ container: 8000, host: await freePort() }] }));
    await service.deploy('api', 5);
    const record = (await service.list()).apps.find((a) => a.app === 'api')!;
    expect(record.images.map((i) => i.version)).toEqual([2, 5]);
    expect(imageExists(`edgefleet/${DEVICE}:api.v1`) || imageExists(`edgefleet/${DEVICE}:api.v3`)).toBe(false);
    expect(imageExists(images.v1!.id) && imageExists(images.v3!.id)).toBe(true);
    const back = await service.rollback('api');
    expect(back).toMatchObject({ app: 'api', version: 2, previous: 5 });
    expect((await getJson(await hostPortOf('api', 2), '/version')).body).toMatchObject({ version: 'v2' });
  });

  it('prunes an image no other release names: with keepPrevious 0 the engine no longer has it', async () => {
    const one = await oipImage(join(dir, 'images'), 'solo-1');
    const two = await oipImage(join(dir, 'images'), 'solo-2');
    await install('solo', 1, one, web({ update: { keepPrevious: 0 } }));
    await install('solo', 2, two, web({ update: { keepPrevious: 0 } }));
    await service.deploy('solo', 1);
    await service.deploy('solo', 2);
    expect(imageExists(one.id)).toBe(false);
    expect(imageExists(two.id)).toBe(true);
    expect((await service.list()).apps.find((a) => a.app === 'solo')?.images).toEqual([{ version: 2, image: two.id }]);
    await expect(service.rollback('solo')).rejects.toMatchObject({ code: 'not_found', message: expect.stringMatching(/no previous version whose image is kept/) });
  });

  it('stop-then-download: the app stops and kept images go before the download; a failed update starts it again', async () => {
    const slim = web({ update: { strategy: 'stop-then-download', keepPrevious: 1 } });
    await install('slim', 1, images.v1!, slim);
    await install('slim', 2, images.v2!, slim);
    await service.deploy('slim', 1);
    await service.deploy('slim', 2);
    const next = imageManifest('slim', 3, images.v3!, { container: { ...slim, env: { MODE: 'exit' } } });
    await service.prepareDownload(next);
    expect(inspect(`edgefleet.${DEVICE}.slim.v2`)?.State.Running).toBe(false);
    expect((await service.list()).apps.find((a) => a.app === 'slim')?.images.map((i) => i.version)).toEqual([2]);
    await service.installImage(next, images.v3!.path);
    const e = await refusal(service.deploy('slim', 3));
    expect(e.message).toMatch(/version 2 was restored/);
    expect(inspect(`edgefleet.${DEVICE}.slim.v2`)?.State.Running).toBe(true);
    expect((await getJson(await hostPortOf('slim', 2), '/version')).body).toMatchObject({ version: 'v2' });
  });

  it('stop, start, logs', async () => {
    expect(await service.stop('web')).toEqual({ app: 'web', version: 2, stopped: true });
    expect(inspect(`edgefleet.${DEVICE}.web.v2`)?.State.Running).toBe(false);
    expect(await service.startApp('web')).toEqual({ app: 'web', version: 2, started: true });
    expect(inspect(`edgefleet.${DEVICE}.web.v2`)?.State.Running).toBe(true);
    const logs = await service.logs('web', 5);
    expect(logs.container).toBe(`edgefleet.${DEVICE}.web.v2`);
    expect(logs.lines.some((l) => l.includes('oip-server v2 mode=ok'))).toBe(true);
    await expect(service.logs('nothing', 5)).rejects.toMatchObject({ code: 'not_found' });
  });

  it('never touches containers the fleet does not own on this device', async () => {
    const [unowned, otherDevice] = foreign.map((id) => inspect(id)!);
    expect(unowned?.State.Running && otherDevice?.State.Running).toBe(true);
    expect((await service.states()).map((s) => s.id)).not.toEqual(expect.arrayContaining([unowned!.Id]));
    expect((await service.states()).map((s) => s.id)).not.toEqual(expect.arrayContaining([otherDevice!.Id]));
    // asked by name, the engine wrapper refuses to stop or remove them
    await expect(service.engine.stop(`foreign-${process.pid}`, 1)).rejects.toMatchObject({ code: 'not_found' });
    await expect(service.engine.remove(`other-device-${process.pid}`)).rejects.toMatchObject({ code: 'not_found' });
    for (const id of foreign) expect(inspect(id)?.State.Running).toBe(true);
  });
});
