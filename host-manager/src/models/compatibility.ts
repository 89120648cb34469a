/**
 * Whether a device can run a model version, decided from what it reported (pure):
 * its onnxruntime against the model's opset and minimum version, its memory against
 * the file size.
 */
import { mib } from '@edgefleet/node-io';
import type { DeviceInfo } from '@edgefleet/protocol';
import type { ModelVersionRecord } from '../state/schema.js';

/**
 * The first onnxruntime release that runs each default-domain opset (from the
 * onnxruntime compatibility table; conservative where releases overlap).
 */
export const OPSET_MIN_ONNXRUNTIME: readonly (readonly [opset: number, ort: string])[] = [
  [7, '0.1.4'],
  [8, '0.2.1'],
  [9, '0.3.0'],
  [10, '0.5.0'],
  [11, '1.0.0'],
  [12, '1.3.0'],
  [13, '1.6.0'],
  [14, '1.8.0'],
  [15, '1.10.0'],
  [16, '1.11.0'],
  [17, '1.13.0'],
  [18, '1.14.0'],
  [19, '1.16.0'],
  [20, '1.17.0'],
  [21, '1.18.0'],
  [22, '1.20.0'],
  [23, '1.22.0'],
];

/** The lowest onnxruntime that runs this opset, or null for an opset newer than the table knows. */
export function minOnnxruntimeForOpset(opset: number): string | null {
  if (opset <= 7) return OPSET_MIN_ONNXRUNTIME[0]![1];
  return OPSET_MIN_ONNXRUNTIME.find(([o]) => o === opset)?.[1] ?? null;
}

/** Compares dotted versions numerically: negative if a < b. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.+-]/).map((p) => Number.parseInt(p, 10) || 0);
  const pb = b.split(/[.+-]/).map((p) => Number.parseInt(p, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length, 3); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** A session needs roughly the weights twice (file + arena) plus the runtime itself. */
export function estimatedMemoryBytes(length: number): number {
  return 2 * length + 64 * 1024 * 1024;
}

/**
 * Whether a device can run a model version: its onnxruntime (opset, minimum
 * version) and its memory against the file size. Returns the reason it cannot, or undefined.
 */
export function checkCompatibility(
  record: Pick<ModelVersionRecord, 'name' | 'version' | 'opset' | 'minOnnxruntime' | 'length'>,
  device: Pick<DeviceInfo, 'onnxruntime' | 'memoryBytes'>,
): string | undefined {
  const label = `${record.name}@${record.version}`;
  if (!device.onnxruntime) return `the device has no onnxruntime, so it cannot run ${label}; install an agent build with onnxruntime`;
  const ort = device.onnxruntime.version;
  if (record.opset !== null) {
    const needed = minOnnxruntimeForOpset(record.opset);
    if (needed === null) {
      const newest = OPSET_MIN_ONNXRUNTIME[OPSET_MIN_ONNXRUNTIME.length - 1]!;
      if (compareVersions(ort, newest[1]) <= 0) {
        return `${label} uses opset ${record.opset}, newer than any onnxruntime this host knows; the device has ${ort}. Re-export the model with opset ${newest[0]} or lower`;
      }
    } else if (compareVersions(ort, needed) < 0) {
      return `${label} uses opset ${record.opset}, which needs onnxruntime ${needed} or newer; the device has ${ort}. Upgrade the agent or re-export with a lower opset`;
    }
  }
  if (record.minOnnxruntime && compareVersions(ort, record.minOnnxruntime) < 0) {
    return `${label} needs onnxruntime ${record.minOnnxruntime} or newer; the device has ${ort}`;
  }
  const needBytes = estimatedMemoryBytes(record.length);
  if (device.memoryBytes > 0 && device.memoryBytes < needBytes) {
    return `${label} (${mib(record.length, 0)} MiB) needs about ${mib(needBytes, 0)} MiB of memory; the device has ${mib(device.memoryBytes, 0)} MiB`;
  }
  return undefined;
}
