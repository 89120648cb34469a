/**
 * The rollout executor in-process, with the delivery and rollback replaced by
 * recorders (the real ones are exercised end to end in test/flows-rollout.test.ts):
 * what it writes and when, abort in the middle of a delivery, failures.
 */
import { describe, expect, it } from '@jest/globals';
import { Low } from 'lowdb';
import type { Adapter } from 'lowdb';
import type { MqttClient } from 'mqtt';
import { pino } from 'pino';
import { FleetError } from '@edgefleet/protocol';
import { Fleet } from '../src/devices/presence.js';
import { Rollouts } from '../src/rollouts/executor.js';
import type { DeliverFn, DeliveryOutcome, RollbackFn } from '../src/rollouts/executor.js';
import { FleetRepository } from '../src/state/repository.js';
import { emptyState } from '../src/state/schema.js';
import type { FleetState } from '../src/state/schema.js';

/** Keeps every written state as JSON, like the file would. */
class RecordingAdapter implements Adapter<FleetState> {
  writes: string[] = [];
  async read(): Promise<FleetState | null> {
    return null;
  }
  async write(data: FleetState): Promise<void> {
    this.writes.push(JSON.stringify(data));
  }
  last(): FleetState {
    return JSON.parse(this.writes[this.writes.length - 1]!) as FleetState;
  }
}

function setup(n: number, deliver: DeliverFn, rollback: RollbackFn = async () => ({ version: 1 })) {
  const adapter = new RecordingAdapter();
  const state = new FleetRepository(new Low<FleetState>(adapter, emptyState()));
  for (let i = 1; i <= n; i++) {
    const id = `d${i}`;
    state.putDevice({
      id,
      groups: ['g'],
      tokenHash: 'x',
      createdAt: '',
      online: true,
      lastSeen: null,
      info: { agentVersion: '', hostname: '', arch: 'x64', platform: 'linux', cpus: 1, memoryBytes: 1, onnxruntime: null, docker: false, groups: ['g'], models: [{ name: 'm', version: 1 }] },
      telemetry: null,
    });
  }
  const logger = pino({ level: 'silent' });
  const fleet = new Fleet({ mqtt: {} as MqttClient, state, logger });
  const rollouts = new Rollouts({ state, fleet, deliver, rollback, logger, tickMs: 10 });
  return { state, adapter, fleet, rollouts };
}

const ok = (devices: string[]): Record<string, DeliveryOutcome> => Object.fromEntries(devices.map((d) => [d, { ok: true, version: 2, previous: 1 }]));
const policy = { canary: 1, waves: [50, 100], soakS: 0, minRequests: 0 };

describe('the rollout executor', () => {
  it('writes "delivering" before it sends anything, and every step after', async () => {
    const seen: string[][] = [];
    const ctx = setup(4, async ({ devices }) => {
      const onDisk = ctx.adapter.last().rollouts;
      const r = Object.values(onDisk)[0]!;
      for (const d of devices) expect(r.devices[d]!.state).toBe('delivering');
      seen.push(devices);
      return ok(devices);
    });
    const created = await ctx.rollouts.create({ model: 'm', version: 2, to: { kind: 'group', name: 'g' }, policy, actor: 'operator:t' }, (_m, v) => v ?? 2);
    const done = await ctx.rollouts.settled(created.id);
    expect(done.status).toBe('succeeded');
    expect(seen).toEqual([['d1'], ['d2'], ['d3', 'd4']]);
    expect(ctx.adapter.last().rollouts[created.id]!.status).toBe('succeeded');
    const actions = ctx.state.auditTail(5000).map((a) => a.action);
    expect(actions.filter((a) => a === 'model.deliver')).toHaveLength(4);
    expect(actions.filter((a) => a === 'rollout.gate')).toHaveLength(3);
  });

  it('records what a delivery in flight did when aborted, then does nothing more until resumed', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const calls: string[][] = [];
    const ctx = setup(3, async ({ devices }) => {
      calls.push(devices);
      if (calls.length === 1) await gate;
      return ok(devices);
    });
    const r = await ctx.rollouts.create({ model: 'm', version: 2, to: { kind: 'all' }, policy, actor: 'operator:t' }, (_m, v) => v ?? 2);
    while (calls.length === 0) await new Promise((res) => setTimeout(res, 5));
    await ctx.rollouts.abort(r.id, 'operator:t');
    release();
    const stopped = await ctx.rollouts.settled(r.id);
    expect(stopped.status).toBe('aborted');
    expect(stopped.devices['d1']!.state).toBe('switched'); // the result of the delivery in flight is kept
    expect(stopped.devices['d2']!.state).toBe('pending');
    expect(calls).toHaveLength(1);
    await expect(ctx.rollouts.abort(r.id, 'operator:t')).rejects.toThrow(FleetError);
    await ctx.rollouts.resume(r.id, 'operator:t');
    expect((await ctx.rollouts.settled(r.id)).status).toBe('succeeded');
    expect(calls.flat().sort()).toEqual(['d1', 'd2', 'd3']);
  });

  it('fails the canary on an install error without touching the rest, and reports the reason', async () => {
    const rollbacks: string[] = [];
    const ctx = setup(3, async ({ devices }) => Object.fromEntries(devices.map((d) => [d, { ok: false, error: { code: 'load_failed', message: 'bad graph' } }])), async ({ device }) => {
      rollbacks.push(device);
      return { version: 1 };
    });
    const r = await ctx.rollouts.create({ model: 'm', version: 2, to: { kind: 'all' }, policy, actor: 'operator:t' }, (_m, v) => v ?? 2);
    const done = await ctx.rollouts.settled(r.id);
    expect(done.status).toBe('failed');
    expect(done.reason).toMatch(/canary.*1 of 1 devices failed to install.*load_failed: bad graph/);
    expect(done.reason).not.toMatch(/rolled back/);
    expect(rollbacks).toEqual([]); // nothing was switched
    expect(Object.values(done.devices).map((d) => d.state)).toEqual(['failed', 'pending', 'pending']);
  });

  it('turns a delivery that throws into a recorded failure per device', async () => {
    const ctx = setup(1, async () => {
      throw new FleetError('unavailable', 'no broker');
    });
    const r = await ctx.rollouts.create({ model: 'm', version: 2, to: { kind: 'device', name: 'd1' }, policy, actor: 'operator:t' }, (_m, v) => v ?? 2);
    const done = await ctx.rollouts.settled(r.id);
    expect(done.status).toBe('failed');
    expect(done.devices['d1']).toMatchObject({ state: 'failed', error: { code: 'unavailable', message: 'no broker' } });
  });

  it('refuses a second rollout of the same model onto devices a running one has not finished', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const ctx = setup(2, async ({ devices }) => {
      await gate;
      return ok(devices);
    });
    const first = await ctx.rollouts.create({ model: 'm', version: 2, to: { kind: 'all' }, policy, actor: 'operator:t' }, (_m, v) => v ?? 2);
    await expect(ctx.rollouts.create({ model: 'm', version: 3, to: { kind: 'device', name: 'd2' }, policy, actor: 'operator:t' }, (_m, v) => v ?? 3)).rejects.toMatchObject({ code: 'conflict' });
    await expect(ctx.rollouts.create({ model: 'm', to: { kind: 'device', name: 'ghost' }, policy, actor: 'operator:t' }, () => 2)).rejects.toMatchObject({ code: 'not_found' });
    release();
    expect((await ctx.rollouts.settled(first.id)).status).toBe('succeeded');
  });
});
