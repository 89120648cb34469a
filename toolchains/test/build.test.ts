/**
 * The image build driver (`hostManager build`): its pure plan, the Dockerfile checked offline
 * (it cannot be built here: it needs internet), and the executor against the real Docker
 * engine on a small FROM-scratch image holding the aarch64 unit tests and the runtime root
 * file system scripts/runtime-rootfs.sh assembles, exactly as the Dockerfile's last stages do.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { validate } from 'dockerfile-utils';
import { FleetError } from '@edgefleet/protocol';
import { ARCHES, BUILD_ARCHES, CONTEXT_FILES, DEFAULT_ORT_VERSION, PROGRAM_VERSION, buildImage, planImageBuild, toolchainsPath } from '@edgefleet/toolchains';
import { checkDockerfile } from './support/dockerfile-check.js';
import { buildNative, run } from './support/native-build.js';

const docker = new Docker();
const made: string[] = [];
afterAll(async () => {
  for (const ref of made) await docker.getImage(ref).remove({ force: true }).catch(() => undefined); // already gone is fine
});

function fleetError(fn: () => unknown): FleetError {
  try {
    fn();
  } catch (err) {
    if (err instanceof FleetError) return err;
    throw err;
  }
  throw new Error('expected a FleetError');
}

describe('planImageBuild', () => {
  it('names, labels and parameterises the image in the fleet language', () => {
    const plan = planImageBuild({ arch: 'armv7' });
    expect(plan.reference).toBe(`edgefleet/inference:${PROGRAM_VERSION}-ort${DEFAULT_ORT_VERSION}-armv7`);
    expect(plan.tags).toEqual([plan.reference]);
    expect(plan.buildArgs).toEqual({ ARCH: 'armv7', ORT_VERSION: DEFAULT_ORT_VERSION });
    expect(plan.platform).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(plan.labels).toMatchObject({
      'io.edgefleet.kind': 'inference-runtime',
      'io.edgefleet.arch': 'armv7',
      'io.edgefleet.onnxruntime': DEFAULT_ORT_VERSION,
      'org.opencontainers.image.version': PROGRAM_VERSION,
    });
    expect(plan.contextDir).toBe(toolchainsPath());
    expect(plan.contextFiles).toEqual(CONTEXT_FILES);
    expect(plan.dockerfile).toBe('Dockerfile');
  });

  it('takes aliases, another ONNX Runtime, a registry repository, extra tags and jobs', () => {
    const plan = planImageBuild({ arch: 'arm64', ortVersion: '1.17.3', repository: 'registry.local:5000/lab/infer', version: '2.0.0', extraTags: ['latest-aarch64'], jobs: 4 });
    expect(plan.arch).toBe('aarch64');
    expect(plan.reference).toBe('registry.local:5000/lab/infer:2.0.0-ort1.17.3-aarch64');
    expect(plan.tags).toEqual([plan.reference, 'registry.local:5000/lab/infer:latest-aarch64']);
    expect(plan.buildArgs).toEqual({ ARCH: 'aarch64', ORT_VERSION: '1.17.3', ORT_JOBS: '4' });
    expect(plan.platform).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(planImageBuild({ arch: 'x64' }).platform).toEqual({ os: 'linux', architecture: 'amd64' });
  });

  it('refuses bad options with what to do', () => {
    const cases: [Parameters<typeof planImageBuild>[0], string][] = [
      [{ arch: 'mips' }, 'unknown architecture "mips": use armv7, aarch64, x86_64'],
      [{ arch: 'armv7', ortVersion: 'latest' }, 'ONNX Runtime version "latest" is not a release number'],
      [{ arch: 'armv7', repository: 'Edge Fleet' }, 'image repository "Edge Fleet" is not valid'],
      [{ arch: 'armv7', version: '../1' }, 'version "../1" cannot be part of an image tag'],
      [{ arch: 'armv7', extraTags: ['a b'] }, 'extra tag "a b" is not a valid image tag'],
      [{ arch: 'armv7', jobs: 0 }, 'jobs must be a positive whole number'],
    ];
    for (const [options, message] of cases) {
      const err = fleetError(() => planImageBuild(options));
      expect(err.code).toBe('invalid_params');
      expect(err.message).toContain(message);
    }
  });

  it('states the same versions as the CMake project and the Dockerfile', async () => {
    const cmake = await readFile(toolchainsPath('native', 'CMakeLists.txt'), 'utf8');
    expect(/project\(edgefleet_infer VERSION ([0-9.]+)/.exec(cmake)?.[1]).toBe(PROGRAM_VERSION);
    const dockerfile = await readFile(toolchainsPath('Dockerfile'), 'utf8');
    expect(/^ARG ORT_VERSION=(\S+)$/m.exec(dockerfile)?.[1]).toBe(DEFAULT_ORT_VERSION);
  });
});

describe('the Dockerfile, checked offline', () => {
  it('passes the Dockerfile linter, which does find faults', async () => {
    const text = await readFile(toolchainsPath('Dockerfile'), 'utf8');
    expect(validate(text)).toEqual([]);
    expect(validate('FROM scratch\nRUNN true\n').length).toBeGreaterThan(0); // the linter is live
  });

  it('has stages that reference only earlier stages, build args where used, and no BuildKit-only syntax', async () => {
    const text = await readFile(toolchainsPath('Dockerfile'), 'utf8');
    const { stages, faults } = checkDockerfile(text, CONTEXT_FILES, ['ARCH', 'ORT_VERSION', 'ORT_JOBS']);
    expect(faults).toEqual([]);
    expect(stages).toEqual(['toolchain', 'ort-source', 'host-protoc', 'onnxruntime', 'program', 'runtime']);
    expect(text.split('\n').filter((l) => l.startsWith('FROM ')).at(-1)).toBe('FROM scratch AS runtime'); // no shell, no package manager
  });

  it('finds the faults the check is for', () => {
    const broken = [
      '# syntax=docker/dockerfile:1',
      'FROM base AS one',
      'RUN echo $ARCH',
      'FROM one AS two',
      'COPY --from=three /x /x',
      'COPY secrets/ /s',
      'RUN --mount=type=cache,target=/c true',
    ].join('\n');
    expect(checkDockerfile(broken, ['Dockerfile'], ['ARCH']).faults).toEqual([
      'line 2: FROM base is no earlier stage',
      'line 3: RUN uses $ARCH but stage one declares no ARG ARCH',
      'line 5: COPY --from=three is no earlier stage',
      'line 6: COPY secrets is not in what the driver sends',
      'line 7: RUN --mount and heredocs need BuildKit',
      'a # syntax= directive asks for BuildKit',
    ]);
  });

  it('picks the same toolchain file per architecture as the arch table, and refuses others', async () => {
    for (const arch of BUILD_ARCHES) {
      const r = await run(toolchainsPath('scripts', 'toolchain-file.sh'), [arch]);
      expect(r.code).toBe(0);
      const file = ARCHES[arch].toolchainFile;
      expect(r.stdout.trim()).toBe(file ? toolchainsPath('cmake', file) : '');
      if (file) expect(existsSync(toolchainsPath('cmake', file))).toBe(true);
    }
    const bad = await run(toolchainsPath('scripts', 'toolchain-file.sh'), ['armv6']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("unknown architecture 'armv6'");
  });

  it('runs the runtime-rootfs script only with an architecture it knows', async () => {
    const r = await run(toolchainsPath('scripts', 'runtime-rootfs.sh'), ['sparc', '/tmp/x', '/bin/true']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown architecture 'sparc': use armv7, aarch64 or x86_64");
  });
});

describe('buildImage against the Docker engine', () => {
  it(
    'builds, labels and tags an aarch64 image that says arm64 and runs its programs',
    async () => {
      const build = await buildNative('aarch64');
      const context = await mkdtemp(join(tmpdir(), 'edgefleet-image-'));
      try {
        await mkdir(join(context, 'rootfs', 'opt', 'edgefleet', 'bin'), { recursive: true });
        const binary = join(context, 'rootfs', 'opt', 'edgefleet', 'bin', 'edgefleet_core_tests');
        await copyFile(build.testsBinary, binary);
        const rootfs = await run(toolchainsPath('scripts', 'runtime-rootfs.sh'), ['aarch64', join(context, 'rootfs'), binary]);
        expect(rootfs.code).toBe(0);
        expect(rootfs.stdout.split('\n')).toEqual(expect.arrayContaining(['/lib/ld-linux-aarch64.so.1', '/lib/aarch64-linux-gnu/libstdc++.so.6', '/lib/aarch64-linux-gnu/libc.so.6']));
        // The Dockerfile's runtime stage, on this root file system.
        await writeFile(join(context, 'Dockerfile'), 'FROM scratch\nCOPY rootfs/ /\nUSER 65532:65532\nENTRYPOINT ["/opt/edgefleet/bin/edgefleet_core_tests"]\n');

        const plan = planImageBuild({ arch: 'aarch64', repository: 'edgefleet-test/toolchains', version: `t${process.pid}`, extraTags: [`t${process.pid}-extra`], contextDir: context, contextFiles: ['Dockerfile', 'rootfs'] });
        made.push(...plan.tags);
        const progress: string[] = [];
        const result = await buildImage(plan, { docker, onProgress: (l) => progress.push(l) });

        expect(progress.some((l) => l.includes('setting the image\'s platform to linux/arm64/v8'))).toBe(true);
        const image = await docker.getImage(plan.reference).inspect();
        expect(image.Id).toBe(result.imageId);
        expect({ os: image.Os, architecture: image.Architecture, variant: (image as { Variant?: string }).Variant }).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
        expect(image.Config.Labels).toMatchObject({ 'io.edgefleet.arch': 'aarch64', 'io.edgefleet.kind': 'inference-runtime' });
        expect(image.RepoTags.sort()).toEqual([...plan.tags].sort());

        // binfmt runs the arm64 program inside the container, as a board would natively.
        // No core files (qemu writes its own on a crash), and a deadline on the run.
        const container = await docker.createContainer({ Image: plan.reference, Tty: true, WorkingDir: '/tmp', HostConfig: { NetworkMode: 'none', Ulimits: [{ Name: 'core', Soft: 0, Hard: 0 }] } });
        try {
          await container.start();
          const deadline = setTimeout(() => void container.kill().catch(() => undefined), 120_000); // already stopped is fine
          const { StatusCode } = (await container.wait().finally(() => clearTimeout(deadline))) as { StatusCode: number };
          const logs = (await container.logs({ stdout: true, stderr: true })).toString();
          if (StatusCode !== 0) throw new Error(`the unit tests failed in the container (status ${StatusCode}):\n${logs.slice(-4000)}`);
          expect(logs).toMatch(/Status: .*SUCCESS!/);
        } finally {
          await container.remove({ force: true });
        }
      } finally {
        await rm(context, { recursive: true, force: true });
      }
    },
    600_000,
  );

  it('reports a failing build step with the engine\'s reason', async () => {
    const context = await mkdtemp(join(tmpdir(), 'edgefleet-image-'));
    try {
      await writeFile(join(context, 'Dockerfile'), 'FROM scratch\nCOPY missing.txt /\n');
      const plan = planImageBuild({ arch: 'x86_64', repository: 'edgefleet-test/toolchains', version: `bad${process.pid}`, contextDir: context, contextFiles: ['Dockerfile'] });
      made.push(plan.reference);
      const err = await buildImage(plan, { docker }).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(FleetError);
      expect((err as FleetError).code).toBe('internal');
      expect((err as FleetError).message).toMatch(/building edgefleet-test\/toolchains:bad\d+-ort[0-9.]+-x86_64 failed: .*missing\.txt/);
    } finally {
      await rm(context, { recursive: true, force: true });
    }
  });

  it('refuses a build context that lacks its files before asking the engine', async () => {
    const plan = planImageBuild({ arch: 'armv7', contextDir: '/nonexistent', contextFiles: ['Dockerfile'] });
    const err = await buildImage(plan, { docker }).then(() => undefined, (e: unknown) => e);
    expect((err as FleetError).code).toBe('invalid_params');
    expect((err as FleetError).message).toBe('the build context /nonexistent lacks Dockerfile: give contextDir and contextFiles that exist');
  });

  it('says so when no engine answers', async () => {
    const plan = planImageBuild({ arch: 'armv7' });
    const err = await buildImage(plan, { docker: new Docker({ socketPath: '/nonexistent/docker.sock' }) }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(FleetError);
    expect((err as FleetError).code).toBe('unavailable');
    expect((err as FleetError).message).toContain('start dockerd, or point DOCKER_HOST at one');
  });
});
