import { describe, it, expect, beforeEach, afterEach } from '@jest/globals';
import { mkdtemp, readFile, rm, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { TelemetrySample } from '@edgefleet/protocol';
import { TelemetryBuffer } from '../src/telemetry/buffer.js';
import { cpuPercent, readTemperature, createSampler } from '../src/telemetry/sampler.js';
import { mkdir, writeFile } from 'node:fs/promises';

const logger = pino({ level: 'silent' });
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tbuf-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function sample(n: number): TelemetrySample {
  return { ts: n, cpuPercent: 1, load: [0, 0, 0], memoryUsedBytes: 1, memoryTotalBytes: 2, diskFreeBytes: 3, temperatureC: null, uptimeS: n, models: {} };
}

describe('telemetry buffer on disk', () => {
  it('keeps samples in order with contiguous seq until acknowledged, across reopen', async () => {
    const a = await TelemetryBuffer.open(dir, 100, logger);
    for (let i = 0; i < 5; i++) await a.append(sample(i));
    await a.ack(1);
    expect(a.peek(10).map((m) => m.seq)).toEqual([2, 3, 4]);
    await a.close();
    const b = await TelemetryBuffer.open(dir, 100, logger);
    expect(b.peek(10).map((m) => [m.seq, m.sample.ts])).toEqual([[2, 2], [3, 3], [4, 4]]);
    const next = await b.append(sample(5));
    expect(next.seq).toBe(5);
    await b.ack(5);
    expect(b.size).toBe(0);
    await b.close();
    const c = await TelemetryBuffer.open(dir, 100, logger);
    expect((await c.append(sample(6))).seq).toBe(6); // seq survives an empty buffer too
  });

  it('drops the oldest beyond the bound and carries the count to the next message', async () => {
    const buf = await TelemetryBuffer.open(dir, 3, logger);
    for (let i = 0; i < 7; i++) await buf.append(sample(i));
    const pending = buf.peek(10);
    expect(pending.map((m) => m.seq)).toEqual([4, 5, 6]);
    expect(pending.map((m) => m.dropped)).toEqual([4, 0, 0]); // seq 0-3 are gone, and the first one says so
    expect(buf.dropped).toBe(4);
    const lines = (await readFile(join(dir, 'telemetry', 'buffer.jsonl'), 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(3);
  });

  it('survives a line torn by a crash', async () => {
    const a = await TelemetryBuffer.open(dir, 10, logger);
    await a.append(sample(0));
    await a.close();
    await appendFile(join(dir, 'telemetry', 'buffer.jsonl'), '{"v":1,"id":"x","ts":1,"type":"tele');
    const b = await TelemetryBuffer.open(dir, 10, logger);
    expect(b.peek(10).map((m) => m.seq)).toEqual([0]);
    expect((await b.append(sample(1))).seq).toBe(1);
    const c = await TelemetryBuffer.open(dir, 10, logger);
    expect(c.peek(10).map((m) => m.seq)).toEqual([0, 1]);
  });
});

describe('telemetry sample', () => {
  it('computes CPU use from time deltas', () => {
    expect(cpuPercent({ idle: 100, total: 200 }, { idle: 150, total: 400 })).toBe(75);
    expect(cpuPercent({ idle: 100, total: 200 }, { idle: 100, total: 200 })).toBe(0);
  });

  it('reads the hottest thermal zone in °C, or null without zones', async () => {
    expect(await readTemperature(join(dir, 'none'))).toBeNull();
    for (const [zone, milli] of [['thermal_zone0', '48312'], ['thermal_zone1', '51000'], ['cooling_device0', '9']] as const) {
      await mkdir(join(dir, zone), { recursive: true });
      await writeFile(join(dir, zone, 'temp'), `${milli}\n`);
    }
    await mkdir(join(dir, 'thermal_zone2')); // a zone without a readable temp
    expect(await readTemperature(dir)).toBe(51);
  });

  it('fills every field and passes model health through', async () => {
    const health = { 'm@1': { requests: 3, errors: 1, p50Ms: 1, p95Ms: 2, p99Ms: 2 } };
    const take = createSampler({ dataDir: dir, drainHealth: () => health, thermalRoot: join(dir, 'none') });
    const s = await take();
    expect(s.memoryTotalBytes).toBeGreaterThan(s.memoryUsedBytes);
    expect(s.diskFreeBytes).toBeGreaterThan(0);
    expect(s.load).toHaveLength(3);
    expect(s.temperatureC).toBeNull();
    expect(s.models).toEqual(health);
  });
});
