/** The controller gauges the alert rules read: fleet p95 per registry model, and how long a running rollout has stalled. */
import { describe, expect, it } from '@jest/globals';
import { modelP95Seconds, rolloutStalledSeconds } from '../src/api/fleet-gauges.js';
import type { RolloutRecord } from '../src/state/schema.js';

const dev = (online: boolean, models: Record<string, { requests: number; p95Ms: number | null }>) => ({ online, telemetry: { models } });

describe('fleet gauges', () => {
  it('weights each device p95 by its requests, online devices and registry models only', () => {
    const p95 = modelP95Seconds(
      [
        dev(true, { 'lin@1': { requests: 10, p95Ms: 10 }, 'evil@1': { requests: 5, p95Ms: 1 } }),
        dev(true, { 'lin@2': { requests: 30, p95Ms: 20 }, 'lin@3': { requests: 0, p95Ms: 900 } }),
        dev(false, { 'lin@1': { requests: 100, p95Ms: 1000 } }),
        { online: true, telemetry: null },
      ],
      new Set(['lin']),
    );
    expect([...p95]).toEqual([['lin', 0.0175]]);
  });

  it("measures a running rollout's stall from its last step or the end of its soak, whichever is later", () => {
    const now = Date.parse('2026-01-01T01:00:00Z');
    const r = (status: RolloutRecord['status'], updatedAt: string, soakUntil?: string) =>
      ({ status, updatedAt, waves: [{ state: soakUntil ? 'soaking' : 'pending', soakUntil }] }) as unknown as RolloutRecord;
    expect(rolloutStalledSeconds([], now)).toBe(0);
    expect(rolloutStalledSeconds([r('succeeded', '2026-01-01T00:00:00Z')], now)).toBe(0);
    expect(rolloutStalledSeconds([r('running', '2026-01-01T00:50:00Z')], now)).toBe(600);
    expect(rolloutStalledSeconds([r('running', '2026-01-01T00:00:00Z', '2026-01-01T02:00:00Z')], now)).toBe(0);
    expect(rolloutStalledSeconds([r('running', '2026-01-01T00:00:00Z', '2026-01-01T00:30:00Z'), r('running', '2026-01-01T00:59:00Z')], now)).toBe(1800);
  });
});
