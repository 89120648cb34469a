/**
 * The inference runtimes the agent serves ONNX models with, and the choice between them.
 *
 *   onnxruntime-node  the native CPU build, where its package ships a binary for this board
 *                     (linux x64 and arm64; also darwin and win32);
 *   onnxruntime-web   the same runtime compiled to WebAssembly, run by Node.js: everywhere else
 *                     (32-bit Raspberry Pi OS, armv7) or when configured.
 *
 * The choice is a plan (`planRuntime`, pure: the setting, the board, what is installed); loading is
 * separate and lazy (`loadRuntime`): the runtime's module is imported when the first session is built,
 * so an agent without a model never maps the 45 MB native library or compiles the wasm module.
 * Whatever runtime serves, the model service sees the same `Session` (session.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { availableParallelism } from 'node:os';

export const RUNTIME_NAMES = ['onnxruntime-node', 'onnxruntime-web'] as const;
export type RuntimeName = (typeof RUNTIME_NAMES)[number];
export type RuntimeSetting = 'auto' | RuntimeName;

/** What serves inference on this device, as the device status reports it. */
export interface RuntimeInfo {
  name: RuntimeName;
  version: string;
  /** 'cpu': native code; 'wasm': WebAssembly in Node.js. */
  backend: 'cpu' | 'wasm';
  executionProviders: string[];
  /** Intra-op threads (onnxruntime-node) or WebAssembly threads (onnxruntime-web). */
  threads: number;
  /** Why this runtime: the sentence the agent logs at start. */
  why: string;
}

/** The runtime packages found next to the agent, read from their package.json files (nothing loaded). */
export interface InstalledRuntimes {
  'onnxruntime-node'?: { version: string; dir: string; /** platform/arch pairs with a binary, e.g. "linux/arm64" */ binaries: string[] };
  'onnxruntime-web'?: { version: string; dir: string };
}

export interface Board {
  platform: string;
  arch: string;
  cores: number;
}

export type RuntimePlan = { ok: true; runtime: RuntimeInfo } | { ok: false; reason: string };

const require = createRequire(import.meta.url);

function packageDir(name: string): string | undefined {
  let entry: string;
  try {
    entry = require.resolve(name);
  } catch {
    return undefined; // not installed (a bundle for a board without a native binary leaves it out)
  }
  for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file) && (JSON.parse(readFileSync(file, 'utf8')) as { name?: string }).name === name) return dir;
  }
  return undefined;
}

/** Which runtime packages are installed, and for which boards onnxruntime-node carries a binary. */
export function findInstalledRuntimes(): InstalledRuntimes {
  const found: InstalledRuntimes = {};
  const nodeDir = packageDir('onnxruntime-node');
  if (nodeDir) {
    const pkg = JSON.parse(readFileSync(join(nodeDir, 'package.json'), 'utf8')) as { version: string };
    const binaries: string[] = [];
    for (const platform of ['linux', 'darwin', 'win32']) {
      for (const arch of ['x64', 'arm64', 'arm']) {
        if (existsSync(join(nodeDir, 'bin', 'napi-v6', platform, arch, 'onnxruntime_binding.node'))) binaries.push(`${platform}/${arch}`);
      }
    }
    found['onnxruntime-node'] = { version: pkg.version, dir: nodeDir, binaries };
  }
  const webDir = packageDir('onnxruntime-web');
  if (webDir) {
    const pkg = JSON.parse(readFileSync(join(webDir, 'package.json'), 'utf8')) as { version: string };
    found['onnxruntime-web'] = { version: pkg.version, dir: webDir };
  }
  return found;
}

function nodeRuntime(installed: NonNullable<InstalledRuntimes['onnxruntime-node']>, board: Board, threads: number | undefined, why: string): RuntimeInfo {
  return {
    name: 'onnxruntime-node',
    version: installed.version,
    backend: 'cpu',
    executionProviders: ['cpu'],
    // cores - 1 leaves one core to the agent's own thread (MQTT, HTTP, JSON)
    threads: threads ?? Math.max(1, board.cores - 1),
    why,
  };
}

function webRuntime(installed: NonNullable<InstalledRuntimes['onnxruntime-web']>, threads: number | undefined, why: string): RuntimeInfo {
  // One thread unless configured: the threaded wasm build starts a worker per thread, each with its own
  // copy of the runtime's state, which a 512 MB board cannot spare for a small model.
  return { name: 'onnxruntime-web', version: installed.version, backend: 'wasm', executionProviders: ['wasm'], threads: threads ?? 1, why };
}

/**
 * Chooses the runtime: `auto` takes onnxruntime-node where its package has a binary for this board and
 * onnxruntime-web otherwise; a named runtime is taken if it can run here. Pure.
 */
export function planRuntime(setting: RuntimeSetting, board: Board, installed: InstalledRuntimes, threads?: number): RuntimePlan {
  const native = installed['onnxruntime-node'];
  const web = installed['onnxruntime-web'];
  const here = `${board.platform}/${board.arch}`;
  const nativeHere = native?.binaries.includes(here) ?? false;
  const nativeText = native
    ? `onnxruntime-node ${native.version} has no binary for ${here} (it ships ${native.binaries.join(', ') || 'none'})`
    : 'onnxruntime-node is not installed';
  if (setting === 'onnxruntime-node') {
    if (native && nativeHere) return { ok: true, runtime: nodeRuntime(native, board, threads, 'configured: runtime onnxruntime-node') };
    return { ok: false, reason: `runtime onnxruntime-node was configured, but ${nativeText}; configure runtime auto or onnxruntime-web` };
  }
  if (setting === 'onnxruntime-web') {
    if (web) return { ok: true, runtime: webRuntime(web, threads, 'configured: runtime onnxruntime-web') };
    return { ok: false, reason: 'runtime onnxruntime-web was configured, but it is not installed; install the agent bundle for this board or configure runtime auto' };
  }
  if (native && nativeHere) return { ok: true, runtime: nodeRuntime(native, board, threads, `auto: onnxruntime-node has a binary for ${here}`) };
  if (web) return { ok: true, runtime: webRuntime(web, threads, `auto: ${nativeText}, so the WebAssembly build serves`) };
  return { ok: false, reason: `no inference runtime can run here: ${nativeText} and onnxruntime-web is not installed; install the agent bundle for this board` };
}

/** This machine, as planRuntime sees it. */
export function thisBoard(): Board {
  return { platform: process.platform, arch: process.arch, cores: availableParallelism() };
}
