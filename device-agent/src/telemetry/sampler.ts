/**
 * One telemetry sample: CPU use since the previous sample (from os.cpus()
 * time deltas), load, memory, free disk under the data directory, the board's
 * temperature (Raspberry Pi and Jetson expose /sys/class/thermal zones), uptime
 * and per-model inference health since the previous sample.
 */
import { cpus, freemem, loadavg, totalmem, uptime } from 'node:os';
import { readdir, readFile, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerState, ModelHealth, TelemetrySample } from '@edgefleet/protocol';

interface CpuTimes {
  idle: number;
  total: number;
}

function cpuTimes(): CpuTimes {
  let idle = 0;
  let total = 0;
  for (const cpu of cpus()) {
    const t = cpu.times;
    idle += t.idle;
    total += t.user + t.nice + t.sys + t.idle + t.irq;
  }
  return { idle, total };
}

/** Percent of CPU time not idle between two readings, across all cores (0-100). */
export function cpuPercent(before: CpuTimes, after: CpuTimes): number {
  const total = after.total - before.total;
  if (total <= 0) return 0;
  const busy = total - (after.idle - before.idle);
  return Math.round(Math.min(100, Math.max(0, (busy / total) * 100)) * 10) / 10;
}

/**
 * Highest temperature among the thermal zones, in °C, or null where the board
 * exposes none. Values in the files are millidegrees.
 */
export async function readTemperature(root = '/sys/class/thermal'): Promise<number | null> {
  let zones: string[];
  try {
    zones = (await readdir(root)).filter((z) => z.startsWith('thermal_zone'));
  } catch {
    return null; // no thermal class at all (containers, most x86 VMs)
  }
  let best: number | null = null;
  for (const zone of zones) {
    try {
      const milli = Number((await readFile(join(root, zone, 'temp'), 'utf8')).trim());
      if (Number.isFinite(milli) && milli > -273_000) {
        const c = Math.round(milli / 100) / 10;
        best = best === null ? c : Math.max(best, c);
      }
    } catch {
      // a zone without a readable temp (some Jetson zones are disabled): skip it
    }
  }
  return best;
}

export async function diskFree(dir: string): Promise<number | null> {
  try {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  } catch {
    return null; // the data dir vanished or the filesystem does not say
  }
}

export interface SamplerOptions {
  dataDir: string;
  drainHealth: () => Record<string, ModelHealth>;
  /** The fleet's containers, when the agent runs a containers service. */
  containers?: () => Promise<ContainerState[]>;
  thermalRoot?: string;
}

/** Returns a function that takes one sample; CPU use is measured since the previous call. */
export function createSampler(options: SamplerOptions): () => Promise<TelemetrySample> {
  let previous = cpuTimes();
  return async () => {
    const now = cpuTimes();
    const cpu = cpuPercent(previous, now);
    previous = now;
    const total = totalmem();
    return {
      ts: Date.now(),
      cpuPercent: cpu,
      load: loadavg().map((l) => Math.round(l * 100) / 100),
      memoryUsedBytes: total - freemem(),
      memoryTotalBytes: total,
      diskFreeBytes: await diskFree(options.dataDir),
      temperatureC: await readTemperature(options.thermalRoot),
      uptimeS: Math.round(uptime()),
      models: options.drainHealth(),
      ...(options.containers ? { containers: await options.containers() } : {}),
    };
  };
}
