/**
 * The containers half's decisions, without an engine: the deploy plan (blue/green, stop-then-start, first
 * start, nothing to do), what undoes each step, leftovers, pruning, stop-then-download; the spec's
 * translation into create options (mounts confined to the data directory, ports on loopback); the
 * manifest schema's rules; Node → Docker platform names.
 */
import { describe, expect, it } from '@jest/globals';
import { ContainerSpecSchema, ManifestSchema } from '@edgefleet/protocol';
import type { ContainerSpecInput } from '@edgefleet/protocol';
import {
  activated,
  boardPlatform,
  createOptions,
  emptyRecord,
  fixedHostPorts,
  planDeploy,
  planMakeRoom,
  planPrune,
  planRemove,
  planStop,
  platformMismatch,
  undoSteps,
} from '../src/containers/index.js';
import type { AppRecord, ObservedContainer, Plan, Release } from '../src/containers/index.js';

const IMG = (n: number) => `sha256:${String(n).repeat(64).slice(0, 64)}`;
const spec = (input: ContainerSpecInput = {}) => ContainerSpecSchema.parse(input);
const release = (version: number, input: ContainerSpecInput = {}): Release => ({ app: 'web', version, image: IMG(version), spec: spec(input) });
const name = (v: number) => `edgefleet.dev-1.web.v${v}`;

function recordWith(active: number | null, versions: number[], input: ContainerSpecInput = {}, extra: Partial<AppRecord> = {}): AppRecord {
  const releases = Object.fromEntries(versions.map((v) => [String(v), { image: IMG(v), spec: spec(input), preexisting: false, installedAt: 0 }]));
  return { ...emptyRecord(), releases, active, highestAccepted: Math.max(0, ...versions), ...extra };
}

const actions = (plan: Plan) => plan.steps.map((s) => `${s.step.action}${'container' in s.step ? ` ${s.step.container}` : 'version' in s.step ? ` v${s.step.version}` : ''}${s.critical ? '' : ' (clean-up)'}`);
const running = (v: number): ObservedContainer => ({ name: name(v), version: v, running: true });
const stopped = (v: number): ObservedContainer => ({ name: name(v), version: v, running: false });
const deploy = (target: Release, record: AppRecord, observed: ObservedContainer[], mode: 'activate' | 'rollback' = 'activate', inUse = new Set<string>()) =>
  planDeploy({ device: 'dev-1', target, mode, record, observed, imagesInUse: inUse });

describe('deploy plan', () => {
  it('first deploy: create, start, wait until healthy, record; a failure removes the new container', () => {
    const plan = deploy(release(1), recordWith(null, [1]), []);
    expect(plan.strategy).toBe('start');
    expect(actions(plan)).toEqual([`create ${name(1)}`, `start ${name(1)}`, `waitHealthy ${name(1)}`, 'record v1']);
    // the health check fails: undo start (stop), then create (remove)
    expect(undoSteps(plan.steps.slice(0, 2)).map((s) => s.action)).toEqual(['stop', 'remove']);
  });

  it('blue/green when the ports allow: the old one stops only after the new one is healthy', () => {
    const plan = deploy(release(2, { ports: [{ container: 80 }] }), recordWith(1, [1, 2], { ports: [{ container: 80 }] }), [running(1)]);
    expect(plan.strategy).toBe('blue-green');
    expect(actions(plan)).toEqual([`create ${name(2)}`, `start ${name(2)}`, `waitHealthy ${name(2)}`, `stop ${name(1)}`, 'record v2', `remove ${name(1)} (clean-up)`]);
    expect(plan.previous).toBe(1);
    // not healthy: the old one was never stopped, so undo touches only the new one
    expect(undoSteps(plan.steps.slice(0, 2))).toEqual([
      { action: 'stop', container: name(2) },
      { action: 'remove', container: name(2), reason: 'it did not become healthy' },
    ]);
    // recording fails after the switch: the old one is started again first
    expect(undoSteps(plan.steps.slice(0, 4)).map((s) => `${s.action} ${'container' in s ? s.container : ''}`)).toEqual([`start ${name(1)}`, `waitHealthy ${name(1)}`, `stop ${name(2)}`, `remove ${name(2)}`]);
  });

  it('stop-then-start when both bind one fixed host port (any address), undone by starting the old one', () => {
    const old = { ports: [{ container: 80, host: 8080, hostIp: '0.0.0.0' }] };
    const next = { ports: [{ container: 80, host: 8080, hostIp: '127.0.0.1' }] };
    const plan = deploy(release(2, next), recordWith(1, [1, 2], old), [running(1)]);
    expect(plan.strategy).toBe('stop-then-start');
    expect(actions(plan)).toEqual([`stop ${name(1)}`, `create ${name(2)}`, `start ${name(2)}`, `waitHealthy ${name(2)}`, 'record v2', `remove ${name(1)} (clean-up)`]);
    expect(undoSteps(plan.steps.slice(0, 3)).map((s) => s.action)).toEqual(['stop', 'remove', 'start', 'waitHealthy']);
    // different fixed ports do not collide
    expect(deploy(release(2, { ports: [{ container: 80, host: 8081 }] }), recordWith(1, [1, 2], old), [running(1)]).strategy).toBe('blue-green');
  });

  it('nothing to do when the target runs already; a stopped one is started again', () => {
    expect(actions(deploy(release(1), recordWith(1, [1]), [running(1)]))).toEqual([]);
    const plan = deploy(release(1), recordWith(1, [1], {}, { stopped: true }), [stopped(1)]);
    expect(plan.strategy).toBe('start');
    expect(actions(plan)).toEqual([`start ${name(1)}`, `waitHealthy ${name(1)}`, 'record v1']);
  });

  it('removes leftovers, and a failed attempt at the target version before creating it again', () => {
    const plan = deploy(release(3), recordWith(1, [1, 2, 3]), [running(1), stopped(2), stopped(3)]);
    expect(actions(plan).slice(0, 2)).toEqual([`remove ${name(2)} (clean-up)`, `remove ${name(3)}`]);
    expect(actions(plan)).toContain(`create ${name(3)}`);
  });

  it('after stop-then-download stopped the old one, a failure starts it again', () => {
    const plan = deploy(release(2), recordWith(1, [1, 2], {}, { stoppedForUpdate: true }), [stopped(1)]);
    expect(plan.strategy).toBe('stop-then-start');
    expect(plan.steps[0]).toMatchObject({ step: { action: 'stop', container: name(1) }, undo: [{ action: 'start', container: name(1) }, { action: 'waitHealthy', container: name(1) }] });
  });

  it('an app the operator stopped stays stopped when the new version fails', () => {
    const plan = deploy(release(2), recordWith(1, [1, 2], {}, { stopped: true }), [stopped(1)]);
    expect(plan.strategy).toBe('start');
    expect(plan.steps.flatMap((s) => s.undo).some((u) => u.action === 'start')).toBe(false);
  });

  it('rollback takes the target off the history and does not push the version it leaves', () => {
    const record = recordWith(2, [1, 2], {}, { history: [1] });
    const plan = deploy(release(1), record, [running(2)], 'rollback');
    expect(plan.previous).toBe(2);
    expect(activated(record, 1, 'rollback', 1)).toMatchObject({ active: 1, history: [], highestAccepted: 2 });
    expect(activated(record, 3, 'activate', 1)).toMatchObject({ active: 3, history: [2] });
  });
});

describe('inference apps and removal', () => {
  const oip = { inference: { protocol: 'oip-http' as const, port: 8000 } };

  it('blue/green moves the requests once the new one is healthy and before the old one stops; undone by moving them back', () => {
    const plan = deploy(release(2, oip), recordWith(1, [1, 2], oip), [running(1)]);
    expect(plan.strategy).toBe('blue-green');
    expect(actions(plan)).toEqual([`create ${name(2)}`, `start ${name(2)}`, `waitHealthy ${name(2)}`, `route ${name(2)}`, `stop ${name(1)}`, 'record v2', `remove ${name(1)} (clean-up)`]);
    // the old one fails to stop: requests go back to it before the new one is stopped and removed
    expect(undoSteps(plan.steps.slice(0, 4)).map((s) => `${s.action} ${'container' in s ? s.container : ''}`)).toEqual([`route ${name(1)}`, `stop ${name(2)}`, `remove ${name(2)}`]);
    // a first deploy has nothing to move back to
    expect(deploy(release(1, oip), recordWith(null, [1], oip), []).steps.find((s) => s.step.action === 'route')?.undo).toEqual([]);
    // an app that serves no inference gets no route step
    expect(actions(deploy(release(2), recordWith(1, [1, 2]), [running(1)])).some((a) => a.startsWith('route'))).toBe(false);
  });

  it('remove: every container of the app, its own images (not pre-existing or shared ones), then the record; the highest accepted stays', () => {
    const record = recordWith(3, [1, 2, 3], {}, { history: [2] });
    record.releases['1']!.preexisting = true;
    const plan = planRemove('web', record, [running(3), stopped(2)], new Set([IMG(2)]));
    expect(actions(plan)).toEqual([`remove ${name(3)}`, `remove ${name(2)}`, 'removeImage v3 (clean-up)', 'forget']);
    expect(plan.previous).toBe(3);
  });
});

describe('pruning and making room', () => {
  it('keeps the active version and keepPrevious before it; never newer, pre-existing or shared images', () => {
    const record = recordWith(4, [1, 2, 3, 4, 5], {}, { history: [2, 3] });
    record.releases['1']!.preexisting = true;
    expect(planPrune('web', activated(record, 4, 'activate', 1), new Set()).map((s) => s.step)).toEqual([
      { action: 'removeImage', app: 'web', version: 2, image: IMG(2) },
    ]);
    expect(planPrune('web', { ...record, history: [] }, new Set([IMG(2)])).map((s) => 'version' in s.step && s.step.version)).toEqual([3]);
    expect(planPrune('web', { ...record, history: [] }, new Set()).every((s) => !s.critical)).toBe(true);
  });

  it('a deploy prunes with the spec keepPrevious', () => {
    const plan = deploy(release(3, { update: { keepPrevious: 0 } }), recordWith(2, [1, 2, 3], {}, { history: [1] }), [running(2)]);
    expect(actions(plan).filter((a) => a.startsWith('removeImage'))).toEqual(['removeImage v1 (clean-up)', 'removeImage v2 (clean-up)']);
  });

  it('stop-then-download stops the running container (undone by starting it) and drops the kept images', () => {
    const plan = planMakeRoom('web', recordWith(3, [1, 2, 3], {}, { history: [1, 2] }), [running(3)], new Set());
    expect(actions(plan)).toEqual(['markStopped', `stop ${name(3)}`, 'removeImage v1 (clean-up)', 'removeImage v2 (clean-up)']);
    expect(plan.steps[1]!.undo).toEqual([{ action: 'start', container: name(3) }]);
  });

  it('stop marks the app stopped so the agent does not bring it back', () => {
    expect(actions(planStop('dev-1', 'web', recordWith(1, [1]), [running(1)]))).toEqual(['markStopped', `stop ${name(1)}`]);
    expect(actions(planStop('dev-1', 'web', recordWith(1, [1]), [stopped(1)]))).toEqual(['markStopped']);
  });
});

describe('container spec → create options', () => {
  const ctx = (input: ContainerSpecInput, modelDir: (m: string) => string | undefined = () => undefined) => ({
    device: 'dev-1',
    dataDir: '/var/lib/agent',
    role: 'app' as const,
    name: name(1),
    release: release(1, input),
    modelDir,
  });

  it('labels, loopback ports, an HTTP probe port published for the agent, limits, restart policy', () => {
    const o = createOptions(ctx({ ports: [{ container: 80, host: 8080 }], health: { kind: 'http', port: 9000, path: '/ready' }, resources: { memoryBytes: 64 << 20, cpus: 0.5 }, restart: 'always' }));
    expect(o.Labels).toEqual({ 'io.edgefleet.owned': 'true', 'io.edgefleet.device': 'dev-1', 'io.edgefleet.app': 'web', 'io.edgefleet.version': '1', 'io.edgefleet.role': 'app' });
    expect(o.HostConfig?.PortBindings).toEqual({ '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8080' }], '9000/tcp': [{ HostIp: '127.0.0.1', HostPort: '' }] });
    expect(o.HostConfig).toMatchObject({ Memory: 64 << 20, NanoCpus: 5e8, RestartPolicy: { Name: 'always' } });
    expect(o.Image).toBe(IMG(1));
  });

  it('mounts resolve inside the data directory only: a model read-only, a volume of the app', () => {
    const o = createOptions(ctx({ mounts: [{ kind: 'model', model: 'det', target: '/models/det' }, { kind: 'volume', name: 'cache', target: '/cache' }] }, () => '/var/lib/agent/models/det/3'));
    expect(o.HostConfig?.Mounts).toEqual([
      { Type: 'bind', Source: '/var/lib/agent/models/det/3', Target: '/models/det', ReadOnly: true },
      { Type: 'bind', Source: '/var/lib/agent/containers/volumes/web/cache', Target: '/cache', ReadOnly: false },
    ]);
    expect(() => createOptions(ctx({ mounts: [{ kind: 'model', model: 'det', target: '/m' }] }, () => '/etc'))).toThrow(/outside the agent's data directory/);
    expect(() => createOptions(ctx({ mounts: [{ kind: 'model', model: 'none', target: '/m' }] }))).toThrow(/no active version/);
  });

  it('the schema refuses host paths, relative or ".." targets, and an image manifest without its pin', () => {
    expect(ContainerSpecSchema.safeParse({ mounts: [{ kind: 'bind', source: '/etc', target: '/etc' }] }).success).toBe(false);
    expect(ContainerSpecSchema.safeParse({ mounts: [{ kind: 'volume', name: 'v', target: 'data' }] }).success).toBe(false);
    expect(ContainerSpecSchema.safeParse({ mounts: [{ kind: 'volume', name: '../v', target: '/data' }] }).success).toBe(false);
    expect(ContainerSpecSchema.safeParse({ mounts: [{ kind: 'volume', name: 'v', target: '/a/../etc' }] }).success).toBe(false);
    const base = { name: 'web', version: 1, sha256: 'a'.repeat(64), length: 1, issuedAt: new Date().toISOString(), expiresAt: new Date().toISOString(), target: { devices: ['d'] }, chunking: { size: 1, sha256: ['a'.repeat(64)] } };
    expect(ManifestSchema.safeParse({ ...base, kind: 'image' }).success).toBe(false);
    expect(ManifestSchema.safeParse({ ...base, kind: 'image', image: { reference: 'web:1', digest: IMG(1) } }).success).toBe(true);
    expect(ManifestSchema.safeParse({ ...base, kind: 'model', container: {} }).success).toBe(false);
    expect(fixedHostPorts(spec({ ports: [{ container: 1, host: 0 }, { container: 2, host: 9, protocol: 'udp' }] }))).toEqual(['9/udp']);
  });
});

describe('platforms', () => {
  it('names the board as Docker does', () => {
    expect(boardPlatform('x64')).toEqual({ architecture: 'amd64', variant: undefined });
    expect(boardPlatform('arm64')).toEqual({ architecture: 'arm64', variant: undefined });
    expect(boardPlatform('arm', '7')).toEqual({ architecture: 'arm', variant: 'v7' });
    expect(boardPlatform('arm', 6)).toEqual({ architecture: 'arm', variant: 'v6' });
  });

  it('refuses what the board cannot run, with the reason', () => {
    const amd64 = boardPlatform('x64');
    const armv7 = boardPlatform('arm', '7');
    expect(platformMismatch({ architecture: 'amd64' }, amd64)).toBeUndefined();
    expect(platformMismatch({ architecture: 'arm64', variant: 'v8' }, amd64)).toMatch(/built for linux\/arm64\/v8, this device is linux\/amd64/);
    expect(platformMismatch({ architecture: 'arm', variant: 'v6' }, armv7)).toBeUndefined();
    expect(platformMismatch({ architecture: 'arm' }, armv7)).toBeUndefined();
    expect(platformMismatch({ architecture: 'arm', variant: 'v7' }, boardPlatform('arm', '6'))).toMatch(/needs linux\/arm\/v7/);
    expect(platformMismatch({ architecture: 'amd64', os: 'windows' }, amd64)).toMatch(/windows/);
  });
});
