/**
 * Emulated boards, for trying a bundle before it ships (and for test:boards and bench:footprint). A Debian root filesystem per architecture (debootstrap --variant=minbase,
 * made once and kept in the cache outside the repository, keyed by suite, architecture and recipe),
 * a fresh copy of it per test run, and commands run inside it with chroot under qemu-user (binfmt).
 *
 * Each command gets a private mount namespace with /proc, /dev and /sys of its own; on arm64, a
 * small ARM /proc/cpuinfo is bound over the host's, because onnxruntime's CPU detection reads the x86
 * one under qemu-user and crashes. This needs root (unshare, mount, chroot), as the install does.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultCacheDir } from './npm.js';

export type BoardArch = 'arm64' | 'armv7';

/** `include`: packages beyond minbase that Raspberry Pi OS has too (Node.js for armv7 links libatomic). */
export const BOARDS: Record<BoardArch, { debArch: string; binfmt: string; include: string[] }> = {
  arm64: { debArch: 'arm64', binfmt: 'qemu-aarch64', include: [] },
  armv7: { debArch: 'armhf', binfmt: 'qemu-arm', include: ['libatomic1'] },
};

const SUITE = 'bookworm';
/** Bump when the recipe below changes, so cached roots are made again. */
const RECIPE = 1;

export function boardsCacheDir(): string {
  return join(defaultCacheDir(), 'boards');
}

/** Throws a sentence saying what to install when the machine cannot run the board's binaries. */
export function checkEmulation(arch: BoardArch): void {
  const handler = `/proc/sys/fs/binfmt_misc/${BOARDS[arch].binfmt}`;
  const enabled = existsSync(handler) && readFileSync(handler, 'utf8').startsWith('enabled');
  if (!enabled) {
    throw new Error(
      `${arch} binaries cannot run here: the binfmt handler ${BOARDS[arch].binfmt} is not registered. ` +
        `Install qemu-user-static and binfmt-support, then: update-binfmts --enable ${BOARDS[arch].binfmt} (.ci/run does both)`,
    );
  }
  if (process.getuid?.() !== 0) throw new Error('the emulated-board tests need root (chroot, mount namespaces, useradd inside the board)');
}

function run(command: string, args: string[], opts: { timeoutMs: number; cwd?: string }): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.cwd ? { cwd: opts.cwd } : {}) });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** The cached, pristine root filesystem of a board (made with debootstrap on first use, ~80 s). */
export async function pristineRoot(arch: BoardArch): Promise<string> {
  const { debArch, include } = BOARDS[arch];
  const dir = join(boardsCacheDir(), 'rootfs', `debian-${SUITE}-${debArch}-minbase-r${RECIPE}${include.map((p) => `-${p}`).join('')}`);
  if (existsSync(join(dir, '.complete'))) return dir;
  checkEmulation(arch);
  await mkdir(join(boardsCacheDir(), 'rootfs'), { recursive: true });
  const tmp = await mkdtemp(`${dir}.tmp-`);
  try {
    const mirror = process.env.EDGEFLEET_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
    const extra = include.length > 0 ? [`--include=${include.join(',')}`] : [];
    const made = await run('debootstrap', ['--variant=minbase', `--arch=${debArch}`, ...extra, SUITE, tmp, mirror], { timeoutMs: 900_000 });
    if (made.code !== 0) throw new Error(`debootstrap of a ${debArch} root failed (exit ${made.code}): ${made.out.slice(-2000)}`);
    // what a test never reads: documentation, manuals, locales, apt's caches
    for (const sub of ['usr/share/doc', 'usr/share/man', 'usr/share/locale', 'usr/share/info', 'var/cache/apt', 'var/lib/apt/lists']) {
      await rm(join(tmp, sub), { recursive: true, force: true });
    }
    await writeFile(join(tmp, '.complete'), `${new Date().toISOString()} ${SUITE} ${debArch} minbase\n`);
    await rename(tmp, dir);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    throw error;
  }
  return dir;
}

export interface BoardRoot {
  arch: BoardArch;
  dir: string;
  /** Removes the copy. */
  cleanup(): Promise<void>;
}

/** A fresh, writable copy of the board's root filesystem for one test run. */
export async function boardRoot(arch: BoardArch): Promise<BoardRoot> {
  checkEmulation(arch);
  const pristine = await pristineRoot(arch);
  const base = await mkdtemp(join(boardsCacheDir(), `run-${arch}-`));
  const dir = join(base, 'root');
  // cp -a: the root has device nodes in /dev, which fs.cp cannot copy
  const copied = await run('cp', ['-a', pristine, dir], { timeoutMs: 300_000 });
  if (copied.code !== 0) throw new Error(`could not copy the ${arch} root: ${copied.out}`);
  return { arch, dir, cleanup: () => rm(base, { recursive: true, force: true }) };
}

const ARM_CPUINFO = Array.from(
  { length: 2 },
  (_, i) => `processor\t: ${i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n`,
).join('\n');

/**
 * Spawns `command` inside the board (chroot) in a private mount namespace, with a clean environment.
 * `detached`: its own process group, so `killBoardProcess` reaches everything it started.
 */
export function spawnInBoard(root: BoardRoot, command: string[], opts: { env?: Record<string, string>; detached?: boolean } = {}): ChildProcess {
  const r = root.dir;
  const cpuinfo = join(r, '..', 'cpuinfo');
  const mounts = [
    `mount -t proc proc "${r}/proc"`,
    ...(root.arch === 'arm64' ? [`printf '%s' "$CPUINFO" > "${cpuinfo}"`, `mount --bind "${cpuinfo}" "${r}/proc/cpuinfo"`] : []),
    `mount --rbind /dev "${r}/dev"`,
    `mount --rbind /sys "${r}/sys"`,
  ].join(' && ');
  const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8', ...opts.env };
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  const script = `${mounts} && exec env -i "$@"`;
  return spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'board', ...envArgs, 'chroot', r, ...command], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', CPUINFO: ARM_CPUINFO },
    detached: opts.detached ?? false,
  });
}

export interface BoardResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command inside the board to its end. */
export function runInBoard(root: BoardRoot, command: string[], opts: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<BoardResult> {
  return new Promise((resolve, reject) => {
    const child = spawnInBoard(root, command, { ...(opts.env ? { env: opts.env } : {}), detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      killBoardProcess(child, 'SIGKILL');
      reject(new Error(`${command.join(' ')} did not finish in the ${root.arch} board in time; stderr: ${stderr.slice(-2000)}`));
    }, opts.timeoutMs ?? 300_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Signals the whole process group a detached board process started (its launcher, its agent). */
export function killBoardProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // the group is gone already
  }
}
