/**
 * Agent self-update parts without a whole agent: `installAgentBundle` on real tarballs (what it refuses
 * and what it leaves on disk), and the launcher (the real POSIX sh script) with stand-in agents whose
 * "node" is a small shell script, for the paths the end-to-end test (test/boards/self-update.test.ts)
 * does not take: a new version that crashes before it is healthy, a start count over the limit, a stale
 * trial, restart on exit 75, exit codes passed through, SIGTERM forwarded.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, readlink, rm, symlink, writeFile, copyFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { create } from 'tar';
import { ManifestSchema, agentArchOf, chunkHashes, generateFleetKeys, sha256Hex, signManifest } from '@edgefleet/protocol';
import type { Manifest, SignedManifest } from '@edgefleet/protocol';
import { BUNDLE_ENTRY, createAgentUpdater, installAgentBundle } from '../src/update/index.js';
import { createTransferReceiver } from '../src/transfer/index.js';
import type { TransferReceiver } from '../src/transfer/index.js';
import { FileModels, quietLogger } from './transfer-harness.js';

const LAUNCHER = fileURLToPath(new URL('../bundle/launcher', import.meta.url));
const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'agent-update-'));
  dirs.push(d);
  return d;
}

// ---------------------------------------------------------------- installAgentBundle

async function tarball(dir: string, opts: { version: string; arch: string; withNode?: boolean; bundleJson?: unknown }): Promise<Buffer> {
  const name = `edgefleet-agent-${opts.version}-${opts.arch}`;
  const root = join(dir, 'src', name);
  await mkdir(join(root, 'node', 'bin'), { recursive: true });
  await mkdir(join(root, 'app/node_modules/@edgefleet/device-agent/dist/bin'), { recursive: true });
  if (opts.withNode !== false) await writeFile(join(root, 'node/bin/node'), '#!/bin/sh\n', { mode: 0o755 });
  await writeFile(join(root, BUNDLE_ENTRY), '// agent\n');
  await writeFile(join(root, 'bundle.json'), JSON.stringify(opts.bundleJson ?? { format: 1, name: 'edgefleet-agent', version: opts.version, arch: opts.arch, node: '20.20.2', runtime: 'onnxruntime-node' }));
  const file = join(dir, `${name}.tar.gz`);
  await create({ gzip: true, file, cwd: join(dir, 'src') }, [name]);
  await rm(join(dir, 'src'), { recursive: true, force: true });
  return readFile(file);
}

function agentManifest(bytes: Buffer, agent: { version: string; arch: 'x64' | 'arm64' | 'armv7'; healthDeadlineS?: number }, version = 1): Manifest {
  return ManifestSchema.parse({
    kind: 'agent', name: 'edgefleet-agent', version, sha256: sha256Hex(bytes), length: bytes.length,
    issuedAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 60_000).toISOString(),
    target: { devices: ['pi-1'] }, chunking: { size: 1 << 20, sha256: chunkHashes(bytes, 1 << 20) }, agent,
  });
}

/** An agent home with version 1.0 installed and current. */
async function home(): Promise<string> {
  const dir = await tempDir();
  await mkdir(join(dir, 'versions', '1.0', 'node', 'bin'), { recursive: true });
  await mkdir(join(dir, 'state'));
  await symlink('versions/1.0', join(dir, 'current'));
  return dir;
}

async function stage(dir: string, bytes: Buffer): Promise<string> {
  const file = join(dir, 'staged.tar.gz');
  await writeFile(file, bytes);
  return file;
}

describe('installAgentBundle', () => {
  it('unpacks beside the running version, writes the trial, the record and the accepted version, then switches current', async () => {
    const agentHome = await home();
    const bytes = await tarball(await tempDir(), { version: '2.0', arch: 'x64' });
    const done = await installAgentBundle(await stage(agentHome, bytes), agentManifest(bytes, { version: '2.0', arch: 'x64', healthDeadlineS: 30 }, 7), { agentHome, runningVersion: '1.0', arch: 'x64', now: () => 5000 });
    expect(done).toEqual({ from: '1.0', to: '2.0', record: { state: 'trial', from: '1.0', to: '2.0', at: 5000 } });
    expect(await readlink(join(agentHome, 'current'))).toBe('versions/2.0');
    expect(await readFile(join(agentHome, 'state', 'trial'), 'utf8')).toBe('to=2.0\nfrom=1.0\ndeadline_s=30\nattempts=0\n');
    expect(await readFile(join(agentHome, 'state', 'accepted'), 'utf8')).toBe('7\n');
    expect(existsSync(join(agentHome, 'versions', '2.0', BUNDLE_ENTRY))).toBe(true);
    expect(existsSync(join(agentHome, 'versions', '1.0'))).toBe(true);
  });

  it('refuses, leaving everything as it was: another architecture, a bundle that is not what its manifest says, no node, not a tarball, the running version, a trial in progress', async () => {
    const agentHome = await home();
    const work = await tempDir();
    const refuse = async (bytes: Buffer, agent: Parameters<typeof agentManifest>[1], code: string, message: RegExp) => {
      await expect(installAgentBundle(await stage(agentHome, bytes), agentManifest(bytes, agent), { agentHome, runningVersion: '1.0', arch: 'arm64' })).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
      expect(await readlink(join(agentHome, 'current'))).toBe('versions/1.0');
      expect(existsSync(join(agentHome, 'state', 'trial'))).toBe(false);
    };
    const arm64 = await tarball(work, { version: '2.0', arch: 'arm64' });
    await refuse(arm64, { version: '2.0', arch: 'armv7' }, 'wrong_target', /built for armv7, but this device is arm64/);
    await refuse(arm64, { version: '2.1', arch: 'arm64' }, 'invalid_params', /the bundle is agent 2\.0 for arm64, but its signed manifest names 2\.1 for arm64/);
    await refuse(await tarball(work, { version: '2.0', arch: 'arm64', withNode: false }), { version: '2.0', arch: 'arm64' }, 'invalid_params', /lacks node\/bin\/node/);
    await refuse(await tarball(work, { version: '2.0', arch: 'arm64', bundleJson: { hello: 1 } }), { version: '2.0', arch: 'arm64' }, 'invalid_params', /no valid bundle\.json/);
    await refuse(Buffer.from('not a tarball at all'), { version: '2.0', arch: 'arm64' }, 'invalid_params', /not a readable tar\.gz/);
    await refuse(await tarball(work, { version: '1.0', arch: 'arm64' }), { version: '1.0', arch: 'arm64' }, 'conflict', /1\.0 is the version running/);
    expect((await import('node:fs')).readdirSync(join(agentHome, 'versions'))).toEqual(['1.0']); // nothing half-unpacked left
    await writeFile(join(agentHome, 'state', 'trial'), 'to=3.0\nfrom=1.0\n');
    await expect(installAgentBundle(await stage(agentHome, arm64), agentManifest(arm64, { version: '2.0', arch: 'arm64' }), { agentHome, runningVersion: '1.0', arch: 'arm64' })).rejects.toMatchObject({ code: 'conflict', message: expect.stringMatching(/still on trial/) });
  });
});

// ---------------------------------------------------------------- the launcher

/** A version whose "node" runs `script` (sh) with RUNS counting its starts in the agent home. */
async function standIn(agentHome: string, version: string, script: string): Promise<void> {
  const bin = join(agentHome, 'versions', version, 'node', 'bin');
  await mkdir(bin, { recursive: true });
  await writeFile(join(bin, 'node'), `#!/bin/sh\necho "${version}" >> "$EDGEFLEET_AGENT_HOME/runs"\n${script}\n`);
  await chmod(join(bin, 'node'), 0o755);
}

async function launcherHome(): Promise<string> {
  const dir = await tempDir();
  await mkdir(join(dir, 'state'));
  await copyFile(LAUNCHER, join(dir, 'launcher'));
  await chmod(join(dir, 'launcher'), 0o755);
  return dir;
}

/** Runs the launcher to its end; `terminateOnceStarted`: SIGTERM as soon as the agent has started. */
function launch(agentHome: string, opts: { terminateOnceStarted?: boolean } = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(join(agentHome, 'launcher'), ['--config', 'x.json'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, EDGEFLEET_NODE_FLAGS: '' } });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const poll = opts.terminateOnceStarted
      ? setInterval(() => {
          if (existsSync(join(agentHome, 'runs'))) {
            clearInterval(poll);
            setTimeout(() => child.kill('SIGTERM'), 200); // the stand-in has set its trap by then
          }
        }, 20)
      : undefined;
    child.on('exit', (code) => {
      clearInterval(poll);
      resolve({ code, stderr });
    });
  });
}

const runs = async (agentHome: string) => (await readFile(join(agentHome, 'runs'), 'utf8')).trim().split('\n');

describe('launcher', () => {
  it('a new version that exits before it is healthy: back to the previous one, with the reason, at once', async () => {
    const agentHome = await launcherHome();
    await standIn(agentHome, '1.0', 'exit 0');
    await standIn(agentHome, '2.0', 'exit 3');
    await symlink('versions/2.0', join(agentHome, 'current'));
    await writeFile(join(agentHome, 'state', 'trial'), 'to=2.0\nfrom=1.0\ndeadline_s=60\nattempts=0\n');
    const r = await launch(agentHome);
    expect(r.code).toBe(0); // the restored 1.0 ran and exited 0
    expect(await runs(agentHome)).toEqual(['2.0', '1.0']);
    expect(await readlink(join(agentHome, 'current'))).toBe('versions/1.0');
    const fellBack = await readFile(join(agentHome, 'state', 'rolled-back'), 'utf8');
    expect(fellBack).toMatch(/^failed=2\.0\nrestored=1\.0\nreason=agent 2\.0 exited with code 3 before it reported healthy\nat=\d+\n$/);
    expect(existsSync(join(agentHome, 'state', 'trial'))).toBe(false);
  });

  it('a version on trial that reports healthy keeps running; its trial ends', async () => {
    const agentHome = await launcherHome();
    await standIn(agentHome, '1.0', 'exit 9');
    await standIn(agentHome, '2.0', 'echo 2.0 > "$EDGEFLEET_AGENT_HOME/state/healthy"; sleep 2; exit 0');
    await symlink('versions/2.0', join(agentHome, 'current'));
    await writeFile(join(agentHome, 'state', 'trial'), 'to=2.0\nfrom=1.0\ndeadline_s=60\nattempts=0\n');
    const r = await launch(agentHome);
    expect(r.code).toBe(0);
    expect(await runs(agentHome)).toEqual(['2.0']);
    expect(r.stderr).toContain('agent 2.0 reported healthy; trial over');
    expect(existsSync(join(agentHome, 'state', 'trial'))).toBe(false);
  });

  it('a trial started twice already (power lost mid-trial) is rolled back without a third start', async () => {
    const agentHome = await launcherHome();
    await standIn(agentHome, '1.0', 'exit 0');
    await standIn(agentHome, '2.0', 'exit 0');
    await symlink('versions/2.0', join(agentHome, 'current'));
    await writeFile(join(agentHome, 'state', 'trial'), 'to=2.0\nfrom=1.0\ndeadline_s=60\nattempts=2\n');
    expect((await launch(agentHome)).code).toBe(0);
    expect(await runs(agentHome)).toEqual(['1.0']);
    expect(await readFile(join(agentHome, 'state', 'rolled-back'), 'utf8')).toContain('reason=agent 2.0 was started 2 times without reporting healthy');
  });

  it('restarts on exit 75 (a new version was switched to), passes other exit codes through, ignores a stale trial', async () => {
    const agentHome = await launcherHome();
    // first run asks for a restart, the second exits with 2 (bad configuration): no further restart
    await standIn(agentHome, '1.0', '[ "$(wc -l < "$EDGEFLEET_AGENT_HOME/runs")" -ge 2 ] && exit 2; exit 75');
    await symlink('versions/1.0', join(agentHome, 'current'));
    await writeFile(join(agentHome, 'state', 'trial'), 'to=9.9\nfrom=1.0\ndeadline_s=60\nattempts=0\n'); // not what current is
    const r = await launch(agentHome);
    expect(r.code).toBe(2);
    expect(await runs(agentHome)).toEqual(['1.0', '1.0']);
    expect(r.stderr).toContain('stale trial of agent 9.9');
  });

  it('passes SIGTERM on to the agent and exits with its code', async () => {
    const agentHome = await launcherHome();
    await standIn(agentHome, '1.0', 'trap "exit 0" TERM; while :; do sleep 0.1; done');
    await symlink('versions/1.0', join(agentHome, 'current'));
    const r = await launch(agentHome, { terminateOnceStarted: true });
    expect(r.code).toBe(0);
    expect(await runs(agentHome)).toEqual(['1.0']);
  });
});

// ---------------------------------------------------------------- agent rollbacks through the transfer, single-use

describe('an agent rollback manifest works once', () => {
  const arch = agentArchOf(process.arch)!;
  const keys = generateFleetKeys();

  /** The real receiver with the real updater as its agent-bundle hook (no broker: the test calls the handlers). */
  async function device(agentHome: string): Promise<TransferReceiver> {
    const updater = await createAgentUpdater({ agentHome, version: '2.0', logger: quietLogger(), requestRestart: () => undefined, publishEvent: () => undefined });
    return createTransferReceiver({
      dataDir: join(agentHome, 'data'),
      publicKeyPem: keys.publicKeyPem,
      identity: { id: 'pi-1', groups: [], arch: process.arch },
      models: new FileModels(join(agentHome, 'models')),
      agentBundles: updater.receiver,
      publishEvent: () => undefined,
      logger: quietLogger(),
    });
  }

  async function send(receiver: TransferReceiver, transferId: string, signed: SignedManifest, bytes: Buffer): Promise<unknown> {
    await receiver.offer({ transferId, manifest: signed, via: { kind: 'device', name: 'pi-1' } });
    receiver.chunk(transferId, 0, bytes);
    const deadline = Date.now() + 10_000;
    while ((await receiver.status({ transferId })).missing.length > 0) {
      if (Date.now() > deadline) throw new Error('the chunk was never written');
      await new Promise((r) => setTimeout(r, 20));
    }
    return receiver.commit({ transferId, activate: true });
  }

  it('takes a rollback to an earlier release once, records its sequence number, and refuses the replay with `replayed` (also after a restart)', async () => {
    // running 2.0 from release 2, which it accepted
    const agentHome = await tempDir();
    await mkdir(join(agentHome, 'versions', '2.0', 'node', 'bin'), { recursive: true });
    await mkdir(join(agentHome, 'state'));
    await symlink('versions/2.0', join(agentHome, 'current'));
    await writeFile(join(agentHome, 'state', 'accepted'), '2\n');
    const bytes = await tarball(await tempDir(), { version: '1.0', arch });
    const back = (rollbackSeq?: number) => signManifest({ ...agentManifest(bytes, { version: '1.0', arch }, 1), rollback: true, ...(rollbackSeq ? { rollbackSeq } : {}) }, keys.privateKeyPem);

    const receiver = await device(agentHome);
    await expect(receiver.offer({ transferId: 'plain', manifest: signManifest(agentManifest(bytes, { version: '1.0', arch }, 1), keys.privateKeyPem), via: { kind: 'device', name: 'pi-1' } })).rejects.toMatchObject({ code: 'lower_version' });
    await expect(receiver.offer({ transferId: 'unnumbered', manifest: back(), via: { kind: 'device', name: 'pi-1' } })).rejects.toMatchObject({ code: 'lower_version', message: expect.stringMatching(/no sequence number/) });
    const captured = back(10);
    await expect(send(receiver, 'rb1', captured, bytes)).resolves.toMatchObject({ version: 1, activated: true });
    expect(await readlink(join(agentHome, 'current'))).toBe('versions/1.0');
    expect(await readFile(join(agentHome, 'state', 'rollback-seq'), 'utf8')).toBe('10\n');
    expect(await readFile(join(agentHome, 'state', 'accepted'), 'utf8')).toBe('2\n'); // a rollback never lowers the highest accepted

    // the launcher ended the trial (2.0 kept as the previous one); the same manifest is put back in front of the device
    await rm(join(agentHome, 'state', 'trial'));
    await expect(receiver.offer({ transferId: 'rb2', manifest: captured, via: { kind: 'device', name: 'pi-1' } })).rejects.toMatchObject({ code: 'replayed', message: expect.stringMatching(/already used 10/) });
    await receiver.close();
    const restarted = await device(agentHome);
    await expect(restarted.offer({ transferId: 'rb3', manifest: captured, via: { kind: 'device', name: 'pi-1' } })).rejects.toMatchObject({ code: 'replayed' });
    // a fresh rollback (a higher number) is taken
    await expect(restarted.offer({ transferId: 'rb4', manifest: back(11), via: { kind: 'device', name: 'pi-1' } })).resolves.toMatchObject({ missing: [0] });
    await restarted.close();
  });
});
