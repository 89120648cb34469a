/** What the agent says about its device in its status: hardware, runtime, Docker, groups, active models, the fleet's containers. */
import { readFile } from 'node:fs/promises';
import { arch, cpus, hostname, platform, totalmem } from 'node:os';
import type { ContainerState, DeviceInfo } from '@edgefleet/protocol';
import type { ModelService } from './models/index.js';

export async function agentVersion(): Promise<string> {
  try {
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0'; // running from an unusual layout; the version is informative only
  }
}

export function deviceInfo(args: { version: string; groups: readonly string[]; models: ModelService | undefined; docker: boolean; containers: ContainerState[] }): DeviceInfo {
  return {
    agentVersion: args.version,
    hostname: hostname(),
    arch: arch(),
    platform: platform(),
    cpus: cpus().length,
    memoryBytes: totalmem(),
    onnxruntime: args.models ? args.models.runtime() : null,
    docker: args.docker,
    groups: [...args.groups],
    models: args.models ? args.models.active() : [],
    containers: args.containers,
  };
}
