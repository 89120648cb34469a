/**
 * The board architectures the toolchains build for, and what each is called by the tools
 * around it: CMake toolchain files, Debian's cross compilers and qemu, Docker's image
 * platforms, and Node.js (`os.arch()`, which the agent reports in its status).
 */
import { FleetError } from '@edgefleet/protocol';

export const BUILD_ARCHES = ['armv7', 'aarch64', 'x86_64'] as const;
export type BuildArch = (typeof BUILD_ARCHES)[number];

export interface ImagePlatform {
  os: 'linux';
  architecture: 'arm' | 'arm64' | 'amd64';
  variant?: 'v7' | 'v8';
}

export interface ArchInfo {
  arch: BuildArch;
  /** Under toolchains/cmake/; undefined for a native (x86_64) build. */
  toolchainFile?: string;
  /** Debian's GNU triple, e.g. arm-linux-gnueabihf. */
  triple: string;
  /** qemu user-mode emulator that runs its programs here (undefined: runs natively). */
  qemu?: string;
  /** Debian's cross library root, qemu's -L. */
  sysroot?: string;
  platform: ImagePlatform;
  /** What Node.js' os.arch() says on such a board. */
  nodeArch: 'arm' | 'arm64' | 'x64';
  /** ELF e_machine of its programs (EM_ARM 40, EM_AARCH64 183, EM_X86_64 62). */
  elfMachine: number;
}

export const ARCHES: Readonly<Record<BuildArch, ArchInfo>> = {
  armv7: {
    arch: 'armv7',
    toolchainFile: 'armv7-linux-gnueabihf.cmake',
    triple: 'arm-linux-gnueabihf',
    qemu: 'qemu-arm-static',
    sysroot: '/usr/arm-linux-gnueabihf',
    platform: { os: 'linux', architecture: 'arm', variant: 'v7' },
    nodeArch: 'arm',
    elfMachine: 40,
  },
  aarch64: {
    arch: 'aarch64',
    toolchainFile: 'aarch64-linux-gnu.cmake',
    triple: 'aarch64-linux-gnu',
    qemu: 'qemu-aarch64-static',
    sysroot: '/usr/aarch64-linux-gnu',
    platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
    nodeArch: 'arm64',
    elfMachine: 183,
  },
  x86_64: {
    arch: 'x86_64',
    triple: 'x86_64-linux-gnu',
    platform: { os: 'linux', architecture: 'amd64' },
    nodeArch: 'x64',
    elfMachine: 62,
  },
};

/** Other names people and tools use for the same architectures. */
const ALIASES: Readonly<Record<string, BuildArch>> = {
  armv7: 'armv7',
  armv7l: 'armv7',
  armhf: 'armv7',
  arm: 'armv7',
  aarch64: 'aarch64',
  arm64: 'aarch64',
  x86_64: 'x86_64',
  amd64: 'x86_64',
  x64: 'x86_64',
};

/** armv7 | aarch64 | x86_64, or an alias (arm64, armhf, arm, amd64, x64, ...). */
export function parseBuildArch(name: string): BuildArch {
  const arch = ALIASES[name.trim().toLowerCase()];
  if (!arch) {
    throw new FleetError('invalid_params', `unknown architecture "${name}": use ${BUILD_ARCHES.join(', ')} (arm64 and amd64 are accepted too)`);
  }
  return arch;
}

/** The build architecture of a board whose agent reports this os.arch(). */
export function archForNode(nodeArch: string): BuildArch {
  return parseBuildArch(nodeArch);
}
