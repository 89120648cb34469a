/**
 * What one device can make the controller hold, measured: a fleet of devices each pushed to the
 * protocol's limits (status at the schema's bounds, telemetry for more models than it may keep for
 * every slot of the history, twice a full ring of the longest reports) through the fleet's intake,
 * in a process of its own with --expose-gc (bounds-child.mjs, on the built controller), and the
 * memory per device after a full collection. The bound is what lets 10,000 devices fit.
 */
import { describe, expect, it } from '@jest/globals';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const CHILD = fileURLToPath(new URL('./support/bounds-child.mjs', import.meta.url));
const KiB = 1024;

interface Measured {
  devices: number;
  mode: string;
  /** samples kept of one series, reports kept, models in the stored status */
  check: [number, number, number];
  statusAndRecord: number;
  telemetry: number;
  reports: number;
  total: number;
}

async function measure(devices: number, mode: 'worst' | 'typical'): Promise<Measured> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', CHILD, String(devices), mode], { maxBuffer: 1 << 20 });
  const m = JSON.parse(stdout) as Measured;
  if (process.env.TEST_REPORT_BOUNDS) process.stdout.write(stdout);
  return m;
}

describe('memory per device at the controller', () => {
  it('at most 96 KiB for a device that pushes every limit (history, charts, status, reports), so 10,000 fit in under 1 GiB', async () => {
    const m = await measure(200, 'worst');
    expect(m.check).toEqual([256, 16, 32]); // full rings, and the status at the schema's limits, were really held
    // 4 series of 5 KiB + the dashboard's charts (vitals-history.ts: 180 slots, 4 model columns, ~12 KiB) + the latest sample (its 32 models)
    expect(m.telemetry).toBeLessThan(56 * KiB);
    expect(m.reports).toBeLessThan(20 * KiB); // 16 entries, texts cut to 240 characters
    expect(m.statusAndRecord).toBeLessThan(28 * KiB);
    expect(m.total).toBeLessThan(96 * KiB);
  }, 180_000);

  it('about 23 KiB for a device running one model (12 of them the charts, allocated whole at its first sample)', async () => {
    const m = await measure(1000, 'typical');
    expect(m.check).toEqual([256, 4, 1]);
    expect(m.total).toBeLessThan(28 * KiB);
  }, 120_000);
});
