import { describe, expect, it } from '@jest/globals';
import { containerVerdicts, evaluateGate } from '../src/rollouts/gate.js';
import { summarizeHealth } from '../src/rollouts/health.js';
import { newRollout, nextStep, planWaves } from '../src/rollouts/plan.js';
import { DEFAULT_POLICY, resolvePolicy } from '../src/rollouts/policy.js';
import { parseTarget, targetDevices } from '../src/rollouts/target.js';
import type { PlanDevice } from '../src/rollouts/target.js';
import type { ContainerState } from '@edgefleet/protocol';
import type { DeviceRecord, HealthSummary, RolloutDevice, RolloutRecord } from '../src/state/schema.js';

const fleet = (n: number, offline: string[] = [], group = 'lab'): PlanDevice[] =>
  Array.from({ length: n }, (_, i) => {
    const id = `pi-${String(i + 1).padStart(2, '0')}`;
    return { id, groups: [group], online: !offline.includes(id) };
  });

const health = (requests: number, errors: number, p95Ms: number | null): HealthSummary => ({
  requests,
  errors,
  errorRate: requests ? errors / requests : null,
  p95Ms,
  samples: 1,
});

describe('planWaves', () => {
  it('puts the canary first, then growing cumulative percentages, covering every device once', () => {
    const policy = resolvePolicy({ canary: 1, waves: [10, 50, 100] });
    const waves = planWaves(fleet(20), policy);
    expect(waves.map((w) => w.label)).toEqual(['canary', '10%', '50%', '100%']);
    expect(waves.map((w) => w.devices.length)).toEqual([1, 1, 8, 10]);
    const all = waves.flatMap((w) => w.devices);
    expect(new Set(all).size).toBe(20);
    expect(all).toHaveLength(20);
  });

  it('prefers online devices for the canary and early waves', () => {
    const waves = planWaves(fleet(5, ['pi-01', 'pi-02']), resolvePolicy({ canary: 2, waves: [100] }));
    expect(waves[0]).toEqual({ label: 'canary', devices: ['pi-03', 'pi-04'] });
    expect(waves[1]?.devices).toEqual(['pi-05', 'pi-01', 'pi-02']);
  });

  it('skips waves that add nobody and always ends at 100%', () => {
    const policy = resolvePolicy({ canary: 1, waves: [10, 20] });
    expect(policy.waves).toEqual([10, 20, 100]);
    const waves = planWaves(fleet(3), policy);
    expect(waves.map((w) => [w.label, w.devices.length])).toEqual([
      ['canary', 1],
      ['100%', 2],
    ]);
  });

  it('handles a single device and an empty target', () => {
    expect(planWaves(fleet(1), DEFAULT_POLICY)).toEqual([{ label: 'canary', devices: ['pi-01'] }]);
    expect(planWaves([], DEFAULT_POLICY)).toEqual([]);
    expect(planWaves(fleet(4), resolvePolicy({ canary: 0, waves: [50] })).map((w) => w.label)).toEqual(['50%', '100%']);
  });

  it('is deterministic whatever the input order', () => {
    const a = fleet(30);
    const b = [...a].reverse();
    expect(planWaves(a, DEFAULT_POLICY)).toEqual(planWaves(b, DEFAULT_POLICY));
  });
});

describe('targets and policy', () => {
  it('parses device, group and all targets and selects devices', () => {
    const devices = [...fleet(3, [], 'lab'), { id: 'jet-1', groups: ['cars'], online: true }];
    expect(parseTarget('all')).toEqual({ kind: 'all' });
    expect(parseTarget('group:cars')).toEqual({ kind: 'group', name: 'cars' });
    expect(parseTarget('pi-1')).toEqual({ kind: 'device', name: 'pi-1' });
    expect(targetDevices(devices, parseTarget('group:cars')).map((d) => d.id)).toEqual(['jet-1']);
    expect(targetDevices(devices, parseTarget('all'))).toHaveLength(4);
    expect(targetDevices(devices, parseTarget('nobody'))).toEqual([]);
  });
});

describe('evaluateGate', () => {
  const policy = resolvePolicy({ minRequests: 10, maxLatencyRatio: 1.5, latencyFloorMs: 5, maxErrorRate: 0.05, maxErrorRateIncrease: 0.01 });
  const devs = (states: RolloutDevice['state'][]): RolloutDevice[] =>
    states.map((state, i) => ({ id: `d${i}`, wave: 0, state, previous: 1, attempts: 1, ...(state === 'failed' ? { error: { code: 'load_failed', message: 'bad graph' } } : {}) }));

  it('passes healthy installs', () => {
    const gate = evaluateGate(policy, devs(['switched', 'switched']), health(100, 0, 10), health(100, 0, 11));
    expect(gate.pass).toBe(true);
    expect(gate.install).toEqual({ switched: 2, failed: 0, waiting: 0 });
  });

  it('fails on install failures beyond the allowance, naming the first error', () => {
    const gate = evaluateGate(policy, devs(['switched', 'failed']), health(0, 0, null), health(0, 0, null));
    expect(gate.pass).toBe(false);
    expect(gate.reasons[0]).toMatch(/1 of 2 devices failed to install.*load_failed: bad graph/);
    const lenient = evaluateGate(resolvePolicy({ maxFailuresPercent: 50 }), devs(['switched', 'failed']), health(0, 0, null), health(0, 0, null));
    expect(lenient.pass).toBe(true);
  });

  it('fails when latency grows beyond the ratio, compared with the same devices before', () => {
    const gate = evaluateGate(policy, devs(['switched']), health(100, 0, 10), health(100, 0, 40));
    expect(gate.pass).toBe(false);
    expect(gate.reasons.join()).toMatch(/p95 latency rose from 10.0 ms to 40.0 ms/);
  });

  it('ignores latency below the floor (noise on tiny models)', () => {
    expect(evaluateGate(policy, devs(['switched']), health(100, 0, 0.5), health(100, 0, 2)).pass).toBe(true);
  });

  it('fails on a high or rising error rate', () => {
    expect(evaluateGate(policy, devs(['switched']), health(100, 0, 1), health(100, 20, 1)).reasons.join()).toMatch(/above the 5.0% ceiling/);
    const rising = evaluateGate(policy, devs(['switched']), health(1000, 0, 1), health(1000, 30, 1));
    expect(rising.pass).toBe(false);
    expect(rising.reasons.join()).toMatch(/rose from 0.0% to 3.0%/);
  });

  it('gates on install results alone when there was too little traffic, and says so', () => {
    const gate = evaluateGate(policy, devs(['switched']), health(0, 0, null), health(3, 3, 500));
    expect(gate.pass).toBe(true);
    expect(gate.reasons[0]).toMatch(/only 3 requests/);
  });

  it('image rollouts: fails when a switched device does not run the new container healthy, from its latest report', () => {
    const at = '2024-01-01T00:00:10.000Z';
    const c = (over: Partial<ContainerState>): ContainerState => ({
      app: 'web', version: 2, role: 'app', id: 'c', name: 'n', image: 'sha256:x', state: 'running', running: true, health: 'none', restarts: 0, created: 0, startedAt: 0, exitCode: null, ...over,
    });
    const record = (info: ContainerState[], sample?: { ts: number; containers: ContainerState[] }): DeviceRecord => ({
      id: 'x', groups: [], tokenHash: '', createdAt: at, online: true, lastSeen: at, offlineReason: null,
      info: { agentVersion: '1', hostname: 'h', arch: 'x64', platform: 'linux', cpus: 2, memoryBytes: 1, onnxruntime: null, docker: true, groups: [], models: [], containers: info },
      telemetry: sample ? { ts: sample.ts, cpuPercent: 0, load: [], memoryUsedBytes: 0, memoryTotalBytes: 0, diskFreeBytes: null, temperatureC: null, uptimeS: 0, models: {}, containers: sample.containers } : null,
    });
    const devices: Record<string, DeviceRecord> = {
      ok: record([c({})]),
      exited: record([c({ state: 'exited', running: false, exitCode: 3 })]),
      sick: record([c({ health: 'unhealthy' })]),
      flapping: record([c({ restarts: 2 })]),
      old: record([c({ version: 1 })]),
      // a sample taken after the switch wins over the status; one from before does not
      later: record([c({})], { ts: Date.parse(at) + 1000, containers: [c({ state: 'restarting', running: false })] }),
      earlier: record([c({})], { ts: Date.parse(at) - 1000, containers: [c({ state: 'exited', running: false })] }),
    };
    const switched = Object.keys(devices).map((id): RolloutDevice => ({ id, wave: 0, state: 'switched', previous: 1, attempts: 1, switchedAt: at }));
    const verdicts = containerVerdicts('web', 2, switched, (id) => devices[id]);
    expect(verdicts.healthy).toBe(2);
    expect(verdicts.unhealthy).toEqual([
      { device: 'exited', reason: 'its container is exited (exit code 3)' },
      { device: 'sick', reason: 'its container reports unhealthy' },
      { device: 'flapping', reason: 'its container restarted 2 time(s) since it started' },
      { device: 'old', reason: 'no container of web@2 is reported' },
      { device: 'later', reason: 'its container is restarting' },
    ]);
    const gate = evaluateGate(policy, switched, health(0, 0, null), health(0, 0, null), verdicts);
    expect(gate.pass).toBe(false);
    expect(gate.containers).toEqual({ healthy: 2, unhealthy: 5 });
    expect(gate.failures![0]).toMatch(/5 switched device\(s\) do not run the new container healthy: exited: its container is exited/);
    expect(evaluateGate(policy, switched.slice(0, 1), health(0, 0, null), health(0, 0, null), containerVerdicts('web', 2, switched.slice(0, 1), (id) => devices[id])).pass).toBe(true);
  });

  it('summarizes samples weighting p95 by requests', () => {
    const s = summarizeHealth([
      { requests: 10, errors: 1, p95Ms: 10 },
      { requests: 30, errors: 0, p95Ms: 20 },
      { requests: 0, errors: 0, p95Ms: null },
    ]);
    expect(s).toEqual({ requests: 40, errors: 1, errorRate: 1 / 40, p95Ms: 17.5, samples: 3 });
  });
});

describe('nextStep', () => {
  const start = new Date('2026-01-01T00:00:00Z');
  const make = (n: number, offline: string[] = [], policy = resolvePolicy({ canary: 1, waves: [50, 100], soakS: 30 })): RolloutRecord =>
    newRollout({
      id: 'r1',
      model: 'm',
      version: 2,
      target: { kind: 'all' },
      policy,
      devices: fleet(n, offline),
      previous: () => 1,
      createdBy: 'operator:admin',
      now: start,
    });
  const at = (s: number): Date => new Date(start.getTime() + s * 1000);
  const on = (offline: string[] = []) => (id: string) => !offline.includes(id);

  it('walks a healthy rollout: deliver canary, soak, gate, next wave ... finish', () => {
    const r = make(4);
    expect(nextStep(r, on(), at(0))).toEqual({ kind: 'deliver', wave: 0, devices: ['pi-01'] });
    r.devices['pi-01']!.state = 'switched';
    r.waves[0]!.state = 'delivering';
    expect(nextStep(r, on(), at(1))).toEqual({ kind: 'start-soak', wave: 0 });
    r.waves[0]!.state = 'soaking';
    r.waves[0]!.soakUntil = at(31).toISOString();
    expect(nextStep(r, on(), at(10))).toMatchObject({ kind: 'wait', until: at(31) });
    expect(nextStep(r, on(), at(31))).toEqual({ kind: 'gate', wave: 0 });
    r.waves[0]!.state = 'passed';
    expect(nextStep(r, on(), at(32))).toEqual({ kind: 'deliver', wave: 1, devices: ['pi-02'] });
    for (const w of r.waves) w.state = 'passed';
    for (const d of Object.values(r.devices)) d.state = 'switched';
    expect(nextStep(r, on(), at(100))).toMatchObject({ kind: 'finish', status: 'succeeded', reason: '4 of 4 devices run m@2' });
  });

  it('fails the gate at once when the canary cannot install, then rolls back the switched and finishes failed', () => {
    const r = make(4);
    r.devices['pi-01']!.state = 'failed';
    r.waves[0]!.state = 'delivering';
    expect(nextStep(r, on(), at(1))).toEqual({ kind: 'gate', wave: 0 });
    r.waves[0]!.state = 'failed';
    r.waves[0]!.gate = { pass: false, reasons: ['1 of 1 devices failed to install'], install: { switched: 0, failed: 1, waiting: 0 }, before: health(0, 0, null), after: health(0, 0, null) };
    expect(nextStep(r, on(), at(2))).toMatchObject({ kind: 'finish', status: 'failed' });
    r.devices['pi-02']!.state = 'switched'; // e.g. a returned device of an earlier wave
    expect(nextStep(r, on(), at(2))).toEqual({ kind: 'rollback', devices: ['pi-02'] });
    expect(nextStep(r, on(['pi-02']), at(2))).toMatchObject({ kind: 'wait' });
  });

  it("finishes a failed rollout with the gate's failures (not its notes) and how many devices were rolled back", () => {
    const r = make(4);
    const gate = evaluateGate(r.policy, [{ id: 'pi-01', wave: 0, state: 'failed', previous: 1, attempts: 1, error: { code: 'load_failed', message: 'bad graph' } }], health(0, 0, null), health(0, 0, null));
    expect(gate.failures).toEqual([expect.stringMatching(/1 of 1 devices failed to install.*bad graph/)]);
    expect(gate.reasons).toEqual([gate.failures![0], expect.stringMatching(/^only 0 requests/)]);
    r.waves[0]!.state = 'failed';
    r.waves[0]!.gate = gate;
    r.devices['pi-01']!.state = 'failed';
    expect(nextStep(r, on(), at(2))).toEqual({ kind: 'finish', status: 'failed', reason: `wave 0 (canary) failed its gate: ${gate.failures![0]}` });
    r.devices['pi-02']!.state = 'rolled-back';
    expect(nextStep(r, on(), at(2))).toMatchObject({ reason: expect.stringMatching(/bad graph; 1 switched device\(s\) rolled back$/) });
  });

  it('parks offline devices, retries them when they return, and skips them after the deadline', () => {
    const r = make(2, ['pi-02'], resolvePolicy({ canary: 0, waves: [100], soakS: 0, offlineDeadlineS: 60 }));
    expect(nextStep(r, on(['pi-02']), at(0))).toEqual({ kind: 'deliver', wave: 0, devices: ['pi-01'] });
    r.devices['pi-01']!.state = 'switched';
    expect(nextStep(r, on(['pi-02']), at(1))).toEqual({ kind: 'mark-waiting', devices: ['pi-02'] });
    r.devices['pi-02']!.state = 'waiting';
    expect(nextStep(r, on(['pi-02']), at(1))).toEqual({ kind: 'start-soak', wave: 0 });
    r.waves[0]!.state = 'passed';
    expect(nextStep(r, on(['pi-02']), at(2))).toMatchObject({ kind: 'wait', reason: expect.stringMatching(/1 offline/) });
    expect(nextStep(r, on(), at(3))).toEqual({ kind: 'deliver', wave: 0, devices: ['pi-02'] });
    expect(nextStep(r, on(['pi-02']), at(61))).toEqual({ kind: 'skip', devices: ['pi-02'] });
  });

  it('does nothing for an aborted rollout', () => {
    const r = make(2);
    r.status = 'aborted';
    expect(nextStep(r, on(), at(0))).toEqual({ kind: 'idle' });
  });
});
