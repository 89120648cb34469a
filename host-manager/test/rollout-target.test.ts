/**
 * Selectors (labels and reported facts), targets re-evaluated as each wave starts, maintenance
 * windows with an injected clock, and the rollout's timing (soak countdown, ETA): all pure.
 */
import { describe, expect, it } from '@jest/globals';
import { applyRewave, newRollout, nextStep } from '../src/rollouts/plan.js';
import { RolloutPolicySchema, resolvePolicy } from '../src/rollouts/policy.js';
import { rolloutTiming } from '../src/rollouts/summary.js';
import { deviceFacts, formatTarget, matchesSelector, parseSelector, parseTarget, targetDevices, targetHint } from '../src/rollouts/target.js';
import type { PlanDevice } from '../src/rollouts/target.js';
import { inWindow, nextWindowOpen, parseWindow } from '../src/rollouts/window.js';
import type { RolloutRecord, RolloutTarget } from '../src/state/schema.js';
import { RolloutRecordSchema } from '../src/state/schema.js';

const dev = (id: string, arch: string, labels: Record<string, string> = {}, extra: Partial<PlanDevice> = {}): PlanDevice => ({
  id,
  groups: ['lab'],
  online: true,
  labels,
  info: { arch, platform: 'linux', hostname: `${id}.local` },
  ...extra,
});

describe('selectors', () => {
  it('parses terms with = == and !=, and formats them back', () => {
    const target = parseTarget('arch=arm64, site==plant-1,tier!=canary');
    expect(target).toEqual({
      kind: 'selector',
      match: [
        { key: 'arch', op: '=', value: 'arm64' },
        { key: 'site', op: '=', value: 'plant-1' },
        { key: 'tier', op: '!=', value: 'canary' },
      ],
    });
    expect(formatTarget(target)).toBe('arch=arm64,site=plant-1,tier!=canary');
    expect(parseTarget('pi-1')).toEqual({ kind: 'device', name: 'pi-1' });
    expect(parseTarget('group:lab')).toEqual({ kind: 'group', name: 'lab' });
  });

  it('refuses bad terms with the term and the rule', () => {
    expect(() => parseSelector('=arm64')).toThrow(/"=arm64" is not a selector term/);
    expect(() => parseSelector('arch=arm 64')).toThrow(/"arm 64" in "arch=arm 64" is not a label value/);
    expect(() => parseSelector('-x=1')).toThrow(/"-x" .* is not a label key/);
    expect(() => parseSelector(' , ')).toThrow(/an empty selector/);
  });

  it('matches labels and reported facts (arch, runtime, group membership); an absent fact never equals', () => {
    const a = dev('a', 'arm64', { site: 'plant-1' }, { info: { arch: 'arm64', runtime: { kind: 'onnxruntime-web', version: '1.2' } } });
    const b = dev('b', 'x64', { site: 'plant-1' });
    const c = dev('c', 'arm64', {}, { groups: ['field'] });
    expect(deviceFacts(a)).toMatchObject({ arch: 'arm64', site: 'plant-1', runtime: 'onnxruntime-web', id: 'a' });
    expect(targetDevices([c, b, a], parseTarget('arch=arm64,site=plant-1')).map((d) => d.id)).toEqual(['a']);
    expect(targetDevices([c, b, a], parseTarget('site!=plant-1')).map((d) => d.id)).toEqual(['c']);
    expect(targetDevices([c, b, a], parseTarget('group=field')).map((d) => d.id)).toEqual(['c']);
    expect(targetDevices([c, b, a], parseTarget('runtime=onnxruntime-web')).map((d) => d.id)).toEqual(['a']);
    expect(matchesSelector(dev('d', 'x64', { arch: 'arm64' }), parseSelector('arch=arm64'))).toBe(false); // the device's report wins
    expect(matchesSelector({ id: 'e', groups: [], online: false, info: null }, parseSelector('arch!=arm64'))).toBe(true);
  });

  it('suggests group:NAME when a device id names a group', () => {
    expect(targetHint('lab', ['lab', 'field'])).toBe('to target the group, write group:lab');
    expect(targetHint('pi-9', ['lab'])).toBeUndefined();
  });

  it('a selector target survives the state schema (stored and read back)', () => {
    const r = make([dev('a', 'arm64')], parseTarget('arch=arm64'));
    expect(RolloutRecordSchema.parse(JSON.parse(JSON.stringify(r))).target).toEqual(r.target);
  });
});

const start = new Date('2026-03-02T10:00:00Z');
const at = (s: number): Date => new Date(start.getTime() + s * 1000);
const online = (): boolean => true;

function make(devices: PlanDevice[], target: RolloutTarget, policy = resolvePolicy({ canary: 1, waves: [100], soakS: 30 })): RolloutRecord {
  return newRollout({ id: 'r1', model: 'm', version: 2, target, policy, devices: targetDevices(devices, target), previous: () => 1, createdBy: 'operator:admin', now: start });
}

describe('targets re-evaluated as each wave starts', () => {
  it('devices that match later join the wave that starts; pending ones that stopped matching leave it', () => {
    const target = parseTarget('arch=arm64');
    const fleetNow = [dev('a', 'arm64'), dev('b', 'arm64'), dev('c', 'arm64')];
    const r = make(fleetNow, target);
    expect(r.waves.map((w) => w.devices)).toEqual([['a'], ['b', 'c']]);
    const matching = (list: PlanDevice[]) => () => targetDevices(list, target);
    // the canary starts with the plan as it was made: nothing to change
    expect(nextStep(r, online, at(0), matching(fleetNow))).toEqual({ kind: 'deliver', wave: 0, devices: ['a'] });
    r.devices['a']!.state = 'switched';
    r.waves[0]!.state = 'passed';
    // before wave 1 starts, d got an arm64 board and c was relabelled (now reports x64)
    const later = [dev('a', 'arm64'), dev('b', 'arm64'), dev('c', 'x64'), dev('d', 'arm64')];
    const step = nextStep(r, online, at(100), matching(later));
    expect(step).toEqual({ kind: 'rewave', wave: 1, join: ['d'], leave: ['c'] });
    applyRewave(r, step as Extract<typeof step, { kind: 'rewave' }>, () => null);
    expect(r.waves[1]!.devices).toEqual(['b', 'c', 'd']);
    expect(r.devices['d']).toEqual({ id: 'd', wave: 1, state: 'pending', previous: null, attempts: 0 });
    expect(r.devices['c']).toMatchObject({ state: 'skipped', error: { message: expect.stringMatching(/no longer matched/) } });
    // applied: the next look delivers to the wave as it is now
    expect(nextStep(r, online, at(101), matching(later))).toEqual({ kind: 'deliver', wave: 1, devices: ['b', 'd'] });
  });

  it('a dynamic target that matches one device still gets a last wave, which later matches join (or which passes empty)', () => {
    const target = parseTarget('site=plant-1');
    const r = make([dev('a', 'x64', { site: 'plant-1' })], target);
    expect(r.waves.map((w) => [w.label, w.devices])).toEqual([['canary', ['a']], ['100%', []]]);
    expect(make([dev('a', 'x64')], { kind: 'device', name: 'a' }).waves).toHaveLength(1);
    r.devices['a']!.state = 'switched';
    r.waves[0]!.state = 'passed';
    const none = nextStep(r, online, at(60), () => targetDevices([dev('a', 'x64', { site: 'plant-1' })], target));
    expect(none).toEqual({ kind: 'gate', wave: 1 }); // nobody joined: nothing to deliver or soak
    const joined = nextStep(r, online, at(60), () => targetDevices([dev('a', 'x64', { site: 'plant-1' }), dev('b', 'x64', { site: 'plant-1' })], target));
    expect(joined).toEqual({ kind: 'rewave', wave: 1, join: ['b'], leave: [] });
  });

  it('a wave already delivering is not changed, nor is a one-device target', () => {
    const target = parseTarget('arch=arm64');
    const r = make([dev('a', 'arm64'), dev('b', 'arm64')], target);
    r.waves[0]!.state = 'delivering';
    r.devices['a']!.state = 'delivering';
    expect(nextStep(r, online, at(1), () => targetDevices([dev('a', 'arm64'), dev('b', 'arm64'), dev('z', 'arm64')], target))).toEqual({ kind: 'deliver', wave: 0, devices: ['a'] });
    const single = make([dev('a', 'arm64')], { kind: 'device', name: 'a' });
    expect(nextStep(single, online, at(0), () => [dev('a', 'arm64'), dev('q', 'arm64')])).toEqual({ kind: 'deliver', wave: 0, devices: ['a'] });
  });

  it('a group rollout takes in a device added to the group before the last wave starts', () => {
    const lab = [dev('a', 'x64'), dev('b', 'x64')];
    const r = make(lab, { kind: 'group', name: 'lab' });
    r.devices['a']!.state = 'switched';
    r.waves[0]!.state = 'passed';
    const step = nextStep(r, online, at(50), () => targetDevices([...lab, dev('n', 'x64')], { kind: 'group', name: 'lab' }));
    expect(step).toEqual({ kind: 'rewave', wave: 1, join: ['n'], leave: [] });
  });
});

describe('maintenance windows', () => {
  it('parses HH:MM-HH:MM with a time zone, refusing bad forms, empty windows and unknown zones', () => {
    expect(parseWindow('02:00-04:30', 'UTC')).toEqual({ start: '02:00', end: '04:30', timeZone: 'UTC' });
    expect(() => parseWindow('2-4', 'UTC')).toThrow(/write HH:MM-HH:MM/);
    expect(() => parseWindow('02:00-02:00', 'UTC')).toThrow(/empty/);
    expect(() => parseWindow('02:00-04:00', 'Mars/Olympus')).toThrow(/unknown time zone "Mars\/Olympus"/);
    expect(RolloutPolicySchema.safeParse({ window: { start: '02:00', end: '04:00', timeZone: 'Nowhere/City' } }).success).toBe(false);
  });

  it('knows when it is open, across midnight and in another time zone', () => {
    const night = { start: '22:00', end: '02:00', timeZone: 'UTC' };
    expect(inWindow(night, new Date('2026-03-02T23:30:00Z'))).toBe(true);
    expect(inWindow(night, new Date('2026-03-02T01:59:00Z'))).toBe(true);
    expect(inWindow(night, new Date('2026-03-02T02:00:00Z'))).toBe(false);
    // 02:00-04:00 in Kolkata (UTC+05:30) is 20:30-22:30 UTC
    const kolkata = { start: '02:00', end: '04:00', timeZone: 'Asia/Kolkata' };
    expect(inWindow(kolkata, new Date('2026-03-02T21:00:00Z'))).toBe(true);
    expect(inWindow(kolkata, new Date('2026-03-02T02:30:00Z'))).toBe(false);
    expect(nextWindowOpen(kolkata, new Date('2026-03-02T10:00:00Z')).toISOString()).toBe('2026-03-02T20:30:00.000Z');
  });

  it('holds deliveries until the window opens, then delivers; a soak and its gate go on outside it', () => {
    const policy = resolvePolicy({ canary: 1, waves: [100], soakS: 30, window: { start: '12:00', end: '13:00', timeZone: 'UTC' } });
    const r = make([dev('a', 'x64'), dev('b', 'x64')], { kind: 'all' }, policy);
    const before = nextStep(r, online, start); // 10:00 UTC
    expect(before).toEqual({ kind: 'wait', until: new Date('2026-03-02T12:00:00Z'), reason: expect.stringMatching(/outside the maintenance window 12:00-13:00 UTC/) });
    expect(nextStep(r, online, new Date('2026-03-02T12:00:00Z'))).toEqual({ kind: 'deliver', wave: 0, devices: ['a'] });
    r.devices['a']!.state = 'switched';
    r.waves[0]!.state = 'soaking';
    r.waves[0]!.soakUntil = '2026-03-02T12:59:50Z';
    expect(nextStep(r, online, new Date('2026-03-02T13:05:00Z'))).toEqual({ kind: 'gate', wave: 0 });
    r.waves[0]!.state = 'passed';
    // the next wave waits for tomorrow's window
    expect(nextStep(r, online, new Date('2026-03-02T13:05:00Z'))).toMatchObject({ kind: 'wait', until: new Date('2026-03-03T12:00:00Z') });
  });
});

describe('rollout timing', () => {
  it('counts the soak down and estimates the end from the delivery times so far', () => {
    const r = make([dev('a', 'x64'), dev('b', 'x64'), dev('c', 'x64')], { kind: 'all' }, resolvePolicy({ canary: 1, waves: [50, 100], soakS: 60 }));
    expect(rolloutTiming(r, start)).toMatchObject({ wave: 0, soakUntil: null, etaLowerBound: true });
    r.waves[0]!.state = 'soaking';
    r.waves[0]!.startedAt = at(0).toISOString();
    r.waves[0]!.switchedAt = at(20).toISOString();
    r.waves[0]!.soakUntil = at(80).toISOString();
    const t = rolloutTiming(r, at(50));
    expect(t).toMatchObject({ wave: 0, soakUntil: at(80).toISOString(), etaLowerBound: false, windowOpensAt: null });
    // 30 s of soak left, then two waves of (20 s delivery + 60 s soak)
    expect(t.etaAt).toBe(at(50 + 30 + 2 * 80).toISOString());
    r.status = 'succeeded';
    expect(rolloutTiming(r, at(50)).etaAt).toBeNull();
  });
});
