/**
 * `hostManager build`, the CLI over toolchains' image build, with the real Docker engine and no controller
 * running (the command is local). The real Dockerfile cross-compiles ONNX Runtime and needs internet, so the
 * build here is of a small FROM-scratch context given with --context: the same plan, naming, labels and
 * platform fix as the real image (toolchains/test/build.test.ts covers the Dockerfile itself offline).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireEngine } from './support/docker.js';
import { runCli } from './support/manager-process.js';

const REPOSITORY = 'edgefleet-test/cli-build';
let work: string;
// nothing answers here: a command that needed the controller would fail
const nobody = () => ({ url: 'http://127.0.0.1:9', token: 'not-used', dataDir: join(work, 'data') });

beforeAll(async () => {
  requireEngine();
  work = await mkdtemp(join(tmpdir(), 'edgefleet-cli-build-'));
  await mkdir(join(work, 'context'));
  await writeFile(join(work, 'context', 'hello.txt'), 'the runtime would be here\n');
  await writeFile(join(work, 'context', 'Dockerfile'), 'FROM scratch\nARG ARCH\nARG ORT_VERSION\nCOPY hello.txt /hello.txt\nLABEL built.for=${ARCH}\n');
});

afterAll(async () => {
  spawnSync('docker', ['rmi', '-f', `${REPOSITORY}:0.1.0-ort1.20.1-armv7`, `${REPOSITORY}:lab-armv7`]);
  await rm(work, { recursive: true, force: true });
});

describe('hostManager build', () => {
  it('builds for the board, names the image in the fleet language and gives it the board architecture', async () => {
    const r = await runCli(nobody(), ['build', '--arch', 'armv7', '--repository', REPOSITORY, '--tag', 'lab-armv7', '--context', join(work, 'context'), '--json'], { timeoutMs: 120_000 });
    expect(r.code).toBe(0);
    const built = r.json<{ reference: string; tags: string[]; imageId: string; platform: { architecture: string; variant?: string } }>();
    expect(built.reference).toBe(`${REPOSITORY}:0.1.0-ort1.20.1-armv7`);
    expect(built.tags).toEqual([built.reference, `${REPOSITORY}:lab-armv7`]);
    expect(built.imageId).toMatch(/^sha256:[0-9a-f]{64}$/);
    const inspected = JSON.parse(spawnSync('docker', ['image', 'inspect', built.reference], { encoding: 'utf8' }).stdout)[0];
    expect(inspected.Id).toBe(built.imageId);
    expect({ os: inspected.Os, architecture: inspected.Architecture, variant: inspected.Variant }).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(inspected.Config.Labels).toMatchObject({ 'io.edgefleet.kind': 'inference-runtime', 'io.edgefleet.arch': 'armv7', 'built.for': 'armv7' });
    expect(r.stderr).toMatch(/building edgefleet-test\/cli-build:0\.1\.0-ort1\.20\.1-armv7 for linux\/arm\/v7/);
  }, 150_000);

  it('says what is wrong with bad options before the engine is asked anything (exit 2)', async () => {
    const arch = await runCli(nobody(), ['build', '--arch', 'sparc']);
    expect(arch.code).toBe(2);
    expect(arch.stderr).toMatch(/unknown architecture "sparc": use armv7, aarch64, x86_64/);
    const ort = await runCli(nobody(), ['build', '--arch', 'arm64', '--ort-version', 'latest']);
    expect(ort.code).toBe(2);
    expect(ort.stderr).toMatch(/ONNX Runtime version "latest" is not a release number/);
    const context = await runCli(nobody(), ['build', '--arch', 'arm64', '--context', work]);
    expect(context.code).toBe(2);
    expect(context.stderr).toMatch(/has no Dockerfile: name a folder holding the Dockerfile/);
  });

  it('names the missing engine and what to do (exit 1)', async () => {
    const r = await runCli(nobody(), ['build', '--arch', 'aarch64', '--context', join(work, 'context')], { env: { DOCKER_HOST: `unix://${join(work, 'no-engine.sock')}` } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no Docker engine answers .*: start dockerd, or point DOCKER_HOST at one/);
  });
});
