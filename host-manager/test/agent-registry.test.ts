/**
 * The agent bundle registry's release numbers follow agent versions: registering an older version after
 * a newer one is refused (it would get the higher release number, and devices that took it would refuse
 * the newer one as a downgrade). Real tarballs, a real state file and blob store in a temporary directory.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create } from 'tar';
import { createAgentRegistry } from '../src/agents/registry.js';
import { openState } from '../src/state/repository.js';

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** A tarball with just the bundle.json the registry reads (it never unpacks the rest). */
async function bundle(dir: string, version: string, arch: string): Promise<string> {
  const name = `edgefleet-agent-${version}-${arch}`;
  await mkdir(join(dir, name), { recursive: true });
  await writeFile(join(dir, name, 'bundle.json'), JSON.stringify({ format: 1, name: 'edgefleet-agent', version, arch, node: '20.20.2', runtime: 'onnxruntime-node' }));
  const file = join(dir, `${name}.tar.gz`);
  await create({ gzip: true, file, cwd: dir, portable: true, mtime: new Date(0) }, [name]); // the same bundle twice is the same bytes, whenever it is packed
  return file;
}

describe('agent release numbers follow versions', () => {
  it('gives each new version the next release and each architecture of a version its release; refuses older versions registered later, naming the highest', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'agent-registry-'));
    dirs.push(dir);
    const state = await openState(join(dir, 'state.json'));
    const agents = createAgentRegistry(state, dir);
    const add = async (version: string, arch: string) => agents.addBundle(await bundle(dir, version, arch));

    await expect(add('0.2.0', 'arm64')).resolves.toMatchObject({ version: 1, created: true });
    await expect(add('0.2.0', 'x64')).resolves.toMatchObject({ version: 1, created: true }); // same version, another architecture
    await expect(add('0.3.0', 'x64')).resolves.toMatchObject({ version: 2 });

    await expect(add('0.1.0', 'arm64')).rejects.toMatchObject({ code: 'conflict', message: expect.stringContaining('agent 0.1.0 for arm64 is below 0.2.0, the highest registered for arm64') });
    // below the highest of any architecture: it would get release 3, above 0.3.0's
    await expect(add('0.2.5', 'armv7')).rejects.toMatchObject({ code: 'conflict', message: expect.stringContaining('agent 0.2.5 is below 0.3.0, the highest version registered') });
    await expect(add('0.2.0', 'x64')).resolves.toMatchObject({ created: false }); // the same bytes again: no change
    await expect(add('10.0.0-rc.1', 'arm64')).resolves.toMatchObject({ version: 3 }); // compared as versions, not as text
    await expect(add('9.0.0', 'armv7')).rejects.toMatchObject({ code: 'conflict' });
    await expect(add('latest', 'x64')).rejects.toMatchObject({ code: 'invalid_params', message: expect.stringContaining('not a semantic version') });

    expect(agents.list().map((b) => `${b.agentVersion}/${b.arch}=${b.version}`)).toEqual(['0.2.0/arm64=1', '0.2.0/x64=1', '0.3.0/x64=2', '10.0.0-rc.1/arm64=3']);
    // the 0.2.0 armv7 bundle is still welcome (armv7 has nothing newer), and keeps 0.2.0's release
    await expect(add('0.2.0', 'armv7')).resolves.toMatchObject({ version: 1, created: true });
  });
});
