/** What a test device says about itself in its status: one model, m@1. */
import type { DeviceInfo } from '@edgefleet/protocol';

export const deviceInfo: DeviceInfo = {
  agentVersion: 't',
  hostname: 'h',
  arch: 'x64',
  platform: 'linux',
  cpus: 2,
  memoryBytes: 1e9,
  onnxruntime: { version: '1.30.0', executionProviders: ['cpu'] },
  docker: false,
  groups: ['g'],
  models: [{ name: 'm', version: 1 }],
};
