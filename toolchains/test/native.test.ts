/**
 * The parts of edgefleet-infer that do not need ONNX Runtime (argument parsing, the OIP JSON
 * codec with the binary extension, the HTTP server over real sockets, the line protocol,
 * IMDB text preprocessing and the console), built natively and cross-compiled for armv7 and
 * aarch64 with the toolchain files, their unit tests run natively and under qemu; and the
 * toolchain files used with a "downloaded" toolchain given by path.
 */
import { describe, expect, it } from '@jest/globals';
import { chmod, mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ARCHES } from '@edgefleet/toolchains';
import { CMAKE_DIR, NATIVE_DIR, buildNative, elfMachine, run, runBuilt } from './support/native-build.js';
import type { NativeTarget } from './support/native-build.js';

const BUILD_TIMEOUT = 600_000;

/** doctest's summary, e.g. "[doctest] test cases: 43 | 43 passed | 0 failed | 0 skipped". */
function summary(output: string): { cases: number; failed: number } {
  const m = /test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed/.exec(output);
  if (!m) throw new Error(`no doctest summary in:\n${output.slice(-2000)}`);
  return { cases: Number(m[1]), failed: Number(m[3]) };
}

const EXPECTED_PROBE: Record<NativeTarget, RegExp> = {
  native: /^arch=x86_64 /,
  // -march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard: NEON, the hard-float calling convention, VFPv4's fused multiply-add
  armv7: /^arch=armv7 neon=1 hardfloat=1 fma=1$/,
  aarch64: /^arch=aarch64 neon=1 hardfloat=1/,
};

describe.each<NativeTarget>(['native', 'armv7', 'aarch64'])('edgefleet-infer core built for %s', (target) => {
  it(
    'passes its unit tests, and is a program of that architecture',
    async () => {
      const build = await buildNative(target);
      const machine = target === 'native' ? ARCHES.x86_64.elfMachine : ARCHES[target].elfMachine;
      expect(await elfMachine(build.testsBinary)).toBe(machine);

      const probe = await runBuilt(target, build.probeBinary);
      expect(probe.code).toBe(0);
      expect(probe.stdout.trim()).toMatch(EXPECTED_PROBE[target]);

      const tests = await runBuilt(target, build.testsBinary);
      const result = summary(tests.stdout + tests.stderr);
      if (result.failed > 0 || tests.code !== 0) throw new Error(`unit tests failed on ${target}:\n${(tests.stdout + tests.stderr).slice(-6000)}`);
      expect(result.cases).toBeGreaterThanOrEqual(40);
    },
    BUILD_TIMEOUT,
  );
});

describe('the toolchain files with a downloaded toolchain given by path', () => {
  /** A toolchain root of its own: another prefix, its own bin/, and a sysroot it reports. */
  async function fakeToolchain(root: string, prefix: string): Promise<void> {
    await mkdir(join(root, 'bin'), { recursive: true });
    for (const tool of ['gcc', 'g++']) {
      const script = `#!/bin/sh
# stands in for a vendor toolchain: Debian's cross compiler under another name and folder
if [ "$1" = "-print-sysroot" ]; then echo /usr/arm-linux-gnueabihf; exit 0; fi
exec /usr/bin/arm-linux-gnueabihf-${tool} "$@"
`;
      await writeFile(join(root, 'bin', `${prefix}${tool}`), script);
      await chmod(join(root, 'bin', `${prefix}${tool}`), 0o755);
    }
  }

  it(
    'finds the compilers under EDGEFLEET_TOOLCHAIN_ROOT with EDGEFLEET_TOOLCHAIN_PREFIX and runs tests with its sysroot',
    async () => {
      const root = await mkdtemp(join(tmpdir(), 'edgefleet-toolchain-'));
      try {
        await fakeToolchain(root, 'armv7-vendor-linux-gnueabihf-');
        const build = await buildNative('armv7', {
          name: 'armv7-downloaded',
          env: { EDGEFLEET_TOOLCHAIN_ROOT: root, EDGEFLEET_TOOLCHAIN_PREFIX: 'armv7-vendor-linux-gnueabihf-' },
          targets: ['edgefleet_toolchain_probe'],
        });
        const cache = await readFile(join(build.dir, 'CMakeCache.txt'), 'utf8');
        const rules = await readFile(join(build.dir, 'CMakeFiles', 'rules.ninja'), 'utf8');
        expect(rules).toContain(`${root}/bin/armv7-vendor-linux-gnueabihf-g++`); // the compile and link commands
        expect(cache).toContain('EDGEFLEET_SYSROOT:PATH=/usr/arm-linux-gnueabihf'); // from the compiler's -print-sysroot
        // ctest runs it through CMAKE_CROSSCOMPILING_EMULATOR: qemu with that sysroot
        const ctest = await run('ctest', ['-R', 'edgefleet_toolchain_probe', '--output-on-failure', '-V'], { cwd: build.dir });
        expect(ctest.code).toBe(0);
        expect(ctest.stdout).toMatch(/arch=armv7 neon=1 hardfloat=1 fma=1/);
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    },
    BUILD_TIMEOUT,
  );

  it('refuses a toolchain root without the compilers and says what to give', async () => {
    const root = await mkdtemp(join(tmpdir(), 'edgefleet-toolchain-'));
    const buildDir = await mkdtemp(join(tmpdir(), 'edgefleet-build-'));
    try {
      const r = await run('cmake', ['-S', NATIVE_DIR, '-B', buildDir, `-DCMAKE_TOOLCHAIN_FILE=${join(CMAKE_DIR, 'aarch64-linux-gnu.cmake')}`, `-DEDGEFLEET_TOOLCHAIN_ROOT=${root}`]);
      expect(r.code).not.toBe(0);
      expect(r.stderr.replace(/\s+/g, ' ')).toContain(`EDGEFLEET_TOOLCHAIN_ROOT=${root} has no ${root}/bin/aarch64-linux-gnu-g++`);
    } finally {
      await rm(root, { recursive: true, force: true });
      await rm(buildDir, { recursive: true, force: true });
    }
  });
});
