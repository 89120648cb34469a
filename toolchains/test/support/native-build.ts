/**
 * Builds toolchains/native with CMake for this machine or, through the toolchain files, for
 * armv7 and aarch64, and runs what it built (cross builds under qemu user-mode emulation).
 *
 * Builds are cached outside the repository, keyed by a hash of native/ and cmake/, the
 * compiler's version and the CMake options, so a second run only runs the tests. A lock
 * directory keeps two test files from building the same thing at once.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, relative } from 'node:path';
import { ARCHES, toolchainsPath } from '@edgefleet/toolchains';

export type NativeTarget = 'native' | 'armv7' | 'aarch64';

export const CACHE_ROOT = process.env.EDGEFLEET_TOOLCHAINS_CACHE ?? join(homedir(), '.cache', 'edgefleet', 'toolchains');
export const NATIVE_DIR = toolchainsPath('native');
export const CMAKE_DIR = toolchainsPath('cmake');

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program; never rejects on a non-zero exit (the result says), only when it cannot start. */
export function run(file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { cwd: opts.cwd, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 300_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const errCode = (err as NodeJS.ErrnoException | null)?.code as unknown;
      if (errCode === 'ENOENT') return reject(err);
      // A non-zero exit carries its status; a signal (or the timeout) leaves none.
      resolve({ code: err ? (typeof errCode === 'number' ? errCode : null) : 0, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

async function runOrThrow(what: string, file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const r = await run(file, args, opts);
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${(r.stdout + r.stderr).slice(-4000)}`);
  return r;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else out.push(path);
  }
  return out.sort();
}

/** sha256 of the sources a build reads (paths and contents) plus whatever else decides its output. */
export async function sourceHash(extra: string[]): Promise<string> {
  const hash = createHash('sha256');
  for (const dir of [NATIVE_DIR, CMAKE_DIR]) {
    for (const file of await filesUnder(dir)) {
      hash.update(relative(dir, file)).update('\0').update(await readFile(file)).update('\0');
    }
  }
  for (const e of extra) hash.update(e).update('\0');
  return hash.digest('hex');
}

/** Holds a lock directory while `fn` runs; waits (with a deadline) while someone else holds it. */
async function withLock<T>(lockDir: string, fn: () => Promise<T>, deadlineMs = 600_000): Promise<T> {
  const started = Date.now();
  for (;;) {
    try {
      await mkdir(lockDir);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A lock older than the deadline was left by a killed run: take it over.
      // (A lock that vanished meanwhile counts as fresh: the next mkdir takes it.)
      const age = Date.now() - (await stat(lockDir).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
      if (age > deadlineMs) await rm(lockDir, { recursive: true, force: true });
      else if (Date.now() - started > deadlineMs) throw new Error(`gave up waiting for ${lockDir}`);
      else await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockDir, { recursive: true, force: true });
  }
}

export interface NativeBuild {
  target: NativeTarget;
  dir: string;
  testsBinary: string;
  probeBinary: string;
  /** True when the build was already in the cache. */
  cached: boolean;
}

export interface BuildOptions {
  /** More -D options (part of the cache key). */
  defines?: string[];
  /** Environment for CMake (e.g. EDGEFLEET_TOOLCHAIN_ROOT); part of the cache key. */
  env?: Record<string, string>;
  /** Build only these targets (default: all). */
  targets?: string[];
  /** Cache directory name prefix (default: the target). */
  name?: string;
}

function compilerFor(target: NativeTarget): string {
  return target === 'native' ? 'c++' : `${ARCHES[target].triple}-g++`;
}

/** Configures and builds (or finds in the cache) toolchains/native for `target`. */
export async function buildNative(target: NativeTarget, options: BuildOptions = {}): Promise<NativeBuild> {
  const defines = ['-DCMAKE_UNITY_BUILD=ON', '-DCMAKE_UNITY_BUILD_BATCH_SIZE=0', '-DEDGEFLEET_WERROR=ON', ...(options.defines ?? [])];
  if (target !== 'native') defines.push(`-DCMAKE_TOOLCHAIN_FILE=${join(CMAKE_DIR, ARCHES[target].toolchainFile!)}`);
  const compiler = options.env?.EDGEFLEET_TOOLCHAIN_ROOT ? 'downloaded' : (await run(compilerFor(target), ['--version'])).stdout;
  const key = await sourceHash([target, compiler, ...defines, JSON.stringify(options.env ?? {}), JSON.stringify(options.targets ?? [])]);
  const name = options.name ?? target;
  const dir = join(CACHE_ROOT, `${name}-${key.slice(0, 16)}`);
  await mkdir(CACHE_ROOT, { recursive: true });
  const result = (cached: boolean): NativeBuild => ({
    target,
    dir,
    testsBinary: join(dir, 'edgefleet_core_tests'),
    probeBinary: join(dir, 'edgefleet_toolchain_probe'),
    cached,
  });
  return withLock(`${dir}.lock`, async () => {
    if (existsSync(join(dir, '.complete'))) return result(true);
    // Older builds of this target are of other sources: drop them so the cache does not grow.
    for (const entry of await readdir(CACHE_ROOT)) {
      if (entry.startsWith(`${name}-`) && !entry.endsWith('.lock') && join(CACHE_ROOT, entry) !== dir) await rm(join(CACHE_ROOT, entry), { recursive: true, force: true });
    }
    await rm(dir, { recursive: true, force: true });
    const env = { ...process.env, ...options.env };
    await runOrThrow(`cmake configure (${target})`, 'cmake', ['-S', NATIVE_DIR, '-B', dir, '-G', 'Ninja', ...defines], { env });
    const targets = options.targets ? ['--target', ...options.targets] : [];
    await runOrThrow(`cmake build (${target})`, 'cmake', ['--build', dir, '--parallel', '2', ...targets], { env });
    await writeFile(join(dir, '.complete'), new Date().toISOString());
    return result(false);
  });
}

/** Runs a program built for `target`: natively, or under qemu with Debian's cross libraries. */
export function runBuilt(target: NativeTarget, binary: string, args: string[] = [], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  if (target === 'native') return run(binary, args, opts);
  const arch = ARCHES[target];
  return run(arch.qemu!, ['-L', arch.sysroot!, binary, ...args], opts);
}

/** e_machine from an ELF header: what the file was built for. */
export async function elfMachine(file: string): Promise<number> {
  const head = await readFile(file);
  if (head.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF file`);
  return head.readUInt16LE(18);
}
