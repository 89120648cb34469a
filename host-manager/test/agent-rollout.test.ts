/**
 * The pure parts of agent rollouts: which bundle each device gets (or why none), the manifest the
 * controller signs for a bundle, the gate's check that switched devices still report the new version,
 * and the finish reason that tells devices skipped for a reason from offline ones. The whole path over
 * real processes (a bundle-installed agent updated, rolled back, skipped) is test/boards/self-update.test.ts.
 */
import { describe, expect, it } from '@jest/globals';
import { ManifestSchema } from '@edgefleet/protocol';
import type { DeviceInfo } from '@edgefleet/protocol';
import { bundleFor } from '../src/delivery/agent-delivery.js';
import { buildManifest } from '../src/delivery/manifest.js';
import { agentVerdicts, evaluateGate } from '../src/rollouts/gate.js';
import { newRollout, nextStep } from '../src/rollouts/plan.js';
import { resolvePolicy } from '../src/rollouts/policy.js';
import type { AgentBundleRecord, DeviceRecord, RolloutDevice } from '../src/state/schema.js';

const bundle = (arch: AgentBundleRecord['arch'], agentVersion = '0.2.0', version = 2): AgentBundleRecord => ({
  name: 'edgefleet-agent',
  version,
  sha256: arch.padEnd(64, '0').replace(/[^0-9a-f]/g, 'a'),
  length: 1000,
  addedAt: '2026-01-01T00:00:00.000Z',
  blob: `blobs/${arch}`,
  agentVersion,
  arch,
  node: '20.20.2',
  runtime: arch === 'armv7' ? 'onnxruntime-web' : 'onnxruntime-node',
  healthDeadlineS: 60,
});

const info = (arch: string, agentVersion = '0.1.0', agentUpdate?: DeviceInfo['agentUpdate']): DeviceInfo =>
  ({ agentVersion, arch, hostname: 'h', platform: 'linux', cpus: 4, memoryBytes: 1, onnxruntime: null, docker: false, groups: [], models: [], ...(agentUpdate ? { agentUpdate } : {}) }) as DeviceInfo;

describe('bundleFor', () => {
  const release = [bundle('x64'), bundle('arm64')];

  it("gives each device its architecture's bundle (Node's arm is armv7)", () => {
    expect(bundleFor('pi-1', info('arm64'), release)).toBe(release[1]);
    expect(bundleFor('nuc', info('x64'), release)).toBe(release[0]);
    expect(bundleFor('pi-0', info('arm'), [...release, bundle('armv7')])).toMatchObject({ arch: 'armv7' });
  });

  it('refuses with the reason: no bundle for its architecture, outside --arch, an unknown architecture, no report yet', () => {
    expect(bundleFor('pi-3', info('arm'), release)).toEqual({
      ok: false,
      error: { code: 'incompatible', message: 'no bundle of agent 0.2.0 for armv7 (pi-3) in the registry; build one with `hostManager agent bundle --arch armv7 --version 0.2.0`' },
    });
    expect(bundleFor('nuc', info('x64'), release, ['arm64'])).toEqual({ ok: false, error: { code: 'incompatible', message: 'nuc is x64; this rollout of agent 0.2.0 is for arm64 only' } });
    expect(bundleFor('rv', info('riscv64'), release)).toMatchObject({ ok: false, error: { code: 'incompatible', message: expect.stringContaining('reports arch riscv64') } });
    expect(bundleFor('new', null, release)).toMatchObject({ ok: false, error: { code: 'unavailable' } });
  });
});

describe('the agent manifest', () => {
  it('is kind agent with the version, architecture and health deadline, and validates', () => {
    const m = buildManifest(bundle('arm64'), { chunks: ['ab'.repeat(32)] }, { chunkSize: 1 << 20, target: { devices: ['pi-1'] }, expiresInMs: 60_000, rollback: false });
    expect(m).toMatchObject({ kind: 'agent', name: 'edgefleet-agent', version: 2, agent: { version: '0.2.0', arch: 'arm64', healthDeadlineS: 60 } });
    expect(ManifestSchema.safeParse(m).success).toBe(true);
  });
});

describe('the agent gate', () => {
  const switched = (id: string): RolloutDevice => ({ id, wave: 0, state: 'switched', previous: 1, attempts: 1, switchedAt: '2026-01-01T00:00:00.000Z' });
  const record = (i: DeviceInfo): DeviceRecord => ({ info: i }) as DeviceRecord;

  it('passes when every switched device reports the new version, fails naming one that does not or fell back', () => {
    const devices: Record<string, DeviceRecord> = {
      a: record(info('arm64', '0.2.0')),
      b: record(info('arm64', '0.1.0')),
      c: record(info('arm64', '0.1.0', { state: 'rolled-back', from: '0.1.0', to: '0.2.0', reason: 'it exited', at: 1 })),
    };
    expect(agentVerdicts('0.2.0', [switched('a')], (id) => devices[id])).toEqual({ healthy: 1, unhealthy: [] });
    const bad = agentVerdicts('0.2.0', [switched('a'), switched('b'), switched('c')], (id) => devices[id]);
    expect(bad.unhealthy).toEqual([
      { device: 'b', reason: 'it reports agent 0.1.0' },
      { device: 'c', reason: 'it fell back to 0.1.0: it exited' },
    ]);
    const empty = { requests: 0, errors: 0, errorRate: null, p95Ms: null, samples: 0 };
    const gate = evaluateGate(resolvePolicy({}), [switched('a'), switched('b')], empty, empty, undefined, bad);
    expect(gate.pass).toBe(false);
    expect(gate.failures).toEqual(['2 switched device(s) do not report the new agent version: b: it reports agent 0.1.0']);
  });
});

describe('the finish reason of an agent rollout', () => {
  it('tells devices skipped for a reason from offline ones', () => {
    const r = newRollout({
      id: 'r-1',
      kind: 'agent',
      model: 'edgefleet-agent',
      version: 2,
      agent: { version: '0.2.0' },
      target: { kind: 'device', name: 'pi-3' },
      policy: resolvePolicy({ canary: 0 }),
      devices: [{ id: 'pi-3', groups: [], online: true }],
      previous: () => 1,
      createdBy: 'op',
      now: new Date(),
    });
    expect(r).toMatchObject({ kind: 'agent', agent: { version: '0.2.0' } });
    r.devices['pi-3'] = { ...r.devices['pi-3']!, state: 'skipped', error: { code: 'incompatible', message: 'pi-3 is armv7; this rollout of agent 0.2.0 is for arm64 only' } };
    r.waves[0]!.state = 'passed';
    expect(nextStep(r, () => true, new Date())).toEqual({
      kind: 'finish',
      status: 'succeeded',
      reason: '0 of 1 devices run agent 0.2.0; 1 skipped (pi-3 is armv7; this rollout of agent 0.2.0 is for arm64 only)',
    });
  });
});
