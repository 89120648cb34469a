/** The dashboard's recent telemetry per device: columns for charts, bounded whatever a device sends. */
import { describe, expect, it } from '@jest/globals';
import type { TelemetrySample } from '@edgefleet/protocol';
import { VITALS_MODELS, VITALS_SLOTS, VitalsHistory } from '../src/devices/vitals-history.js';

const sample = (i: number, models: Record<string, number> = { 'm@1': 10 }, temperatureC: number | null = 40): TelemetrySample => ({
  ts: i,
  cpuPercent: i % 100,
  load: [0, 0, 0],
  memoryUsedBytes: 25,
  memoryTotalBytes: 100,
  diskFreeBytes: null,
  temperatureC,
  uptimeS: i,
  models: Object.fromEntries(Object.entries(models).map(([k, requests]) => [k, { requests, errors: 1, p50Ms: 1, p95Ms: 2.5, p99Ms: 3 }])),
});

describe('vitals history', () => {
  it('gives columns oldest first, from a time on, with nulls where nothing was reported', () => {
    const h = new VitalsHistory();
    h.push('d', sample(1), 1000);
    h.push('d', sample(2, {}, null), 2000);
    h.push('d', sample(3), 3000);
    const s = h.series('d', 1500);
    expect(s.at).toEqual([2000, 3000]);
    expect(s.cpuPercent).toEqual([2, 3]);
    expect(s.memoryPercent).toEqual([25, 25]);
    expect(s.temperatureC).toEqual([null, 40]);
    expect(s.models['m@1']).toEqual({ requests: [null, 10], errors: [null, 1], p95Ms: [null, 2.5] });
    expect(h.series('nobody')).toEqual({ at: [], cpuPercent: [], memoryPercent: [], temperatureC: [], models: {} });
  });

  it('keeps a fixed number of samples and model columns per device, newest wins', () => {
    const h = new VitalsHistory();
    for (let i = 0; i < VITALS_SLOTS * 3; i++) h.push('d', sample(i, { [`m${i % 10}@1`]: i + 1 }), i);
    const s = h.series('d');
    expect(s.at).toHaveLength(VITALS_SLOTS);
    expect(s.at[0]).toBe(VITALS_SLOTS * 2);
    expect(Object.keys(s.models).length).toBeLessThanOrEqual(VITALS_MODELS);
    // a sample with more models than columns keeps the busiest
    h.push('e', sample(1, { a: 1, b: 50, c: 2, d: 40, e: 30, f: 3 }), 1);
    expect(Object.keys(h.series('e').models).sort()).toEqual(['b', 'd', 'e', 'f']);
    h.forget('d');
    expect(h.series('d').at).toEqual([]);
  });
});
