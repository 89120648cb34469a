/**
 * `hostManager deploy <model> --via ssh`: a device that runs no agent but accepts
 * SSH gets a registry version copied by the controller, hash-checked on the device,
 * renamed into place. Real controller process, real CLI process, real OpenSSH sshd.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { sha256Hex } from '@edgefleet/protocol';
import { api, freePort, runCli, startManager } from './support/manager-process.js';
import type { CliResult, ManagerProcess } from './support/manager-process.js';
import { startSshd } from './support/sshd.js';
import type { TestSshd } from './support/sshd.js';
import { largeModel, linearModel } from './support/onnx-models.js';
import type { SshDeliveryView } from '@edgefleet/host-manager';

const run = promisify(execFile);

interface AuditView {
  actor: string;
  action: string;
  target?: string;
  result: string;
  detail?: { model?: string; version?: number; remotePath?: string; sha256?: string; error?: { code: string; message: string } };
}

function errorOf(r: CliResult): { code: string; message: string } {
  return r.json<{ error: { code: string; message: string } }>().error;
}

describe('deploy --via ssh to a device without an agent (real sshd)', () => {
  let m: ManagerProcess;
  let sshd: TestSshd;
  let work: string;
  let target: string;
  let to: string;
  let strangerKey: string;
  const large = largeModel();
  const v1 = linearModel({ seed: 11 });
  const v2 = linearModel({ seed: 12 });
  /** A model name nobody else uses: the default remote path lands in the login user's real home. */
  const homeModel = `ssh-e2e-${randomBytes(4).toString('hex')}`;
  const homeModels = join(userInfo().homedir, 'models');

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'flows-ssh-'));
    await writeFile(join(work, 'large.onnx'), large.bytes);
    await writeFile(join(work, 'v1.onnx'), v1.bytes);
    await writeFile(join(work, 'v2.onnx'), v2.bytes);
    // A key the device does not authorize (0600, as ssh-keygen leaves it).
    strangerKey = join(work, 'stranger');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', strangerKey]);
    [sshd, m] = await Promise.all([startSshd(), startManager()]);
    target = join(sshd.dir, 'target');
    await mkdir(target);
    to = `${sshd.username}@${sshd.host}:${sshd.port}`;
  });

  afterAll(async () => {
    await m?.cleanup();
    await sshd?.close();
    await rm(work, { recursive: true, force: true });
    await rm(join(homeModels, homeModel), { recursive: true, force: true });
    await rmdir(homeModels).catch(() => undefined); // only if this test made it and left it empty
  });

  it('models add, then deploy --via ssh: the file arrives with the registry sha256, audited without the key', async () => {
    const added = await runCli(m, ['models', 'add', join(work, 'large.onnx'), '--name', 'big', '--json']);
    expect(added.code).toBe(0);
    const rec = added.json<{ name: string; version: number; sha256: string; length: number }>();
    expect(rec.sha256).toBe(sha256Hex(large.bytes));

    const remotePath = join(target, 'big', 'model.onnx');
    const r = await runCli(m, ['deploy', 'big@1', '--via', 'ssh', '--to', to, '--ssh-key', sshd.privateKeyPath, '--remote-path', remotePath, '--host-key', sshd.hostKeyFingerprint, '--json']);
    expect(r.code).toBe(0);
    const out = r.json<SshDeliveryView>();
    expect(out).toMatchObject({ model: 'big', version: 1, remotePath, sha256: rec.sha256, bytes: large.bytes.length, hostKeyPinned: true, target: { username: sshd.username, host: sshd.host, port: sshd.port } });
    expect(out.seconds).toBeGreaterThan(0);
    expect(sha256Hex(await readFile(remotePath))).toBe(rec.sha256);
    expect(await readdir(join(target, 'big'))).toEqual(['model.onnx']); // no .part left

    // The key never leaves the controller: not in the answer, the audit log or the controller's logs.
    const keyBody = sshd.privateKey.split('\n')[1]!;
    expect(keyBody.length).toBeGreaterThan(20);
    const audit = await api<AuditView[]>(m, 'GET', '/api/audit?limit=20');
    const entry = audit.body.filter((e) => e.action === 'model.deliver.ssh').at(-1);
    expect(entry).toMatchObject({ actor: 'operator:admin', target: `ssh:${to}`, result: 'ok', detail: { model: 'big', version: 1, remotePath, sha256: rec.sha256 } });
    for (const text of [r.stdout, r.stderr, JSON.stringify(audit.body), m.stdout(), m.stderr(), await readFile(join(m.dataDir, 'state.json'), 'utf8')]) {
      expect(text).not.toContain(keyBody);
    }
  });

  it('without --remote-path or a version: the newest version goes to ~/models/NAME/VERSION/model.onnx (text output)', async () => {
    expect((await runCli(m, ['models', 'add', join(work, 'v1.onnx'), '--name', homeModel])).code).toBe(0);
    expect((await runCli(m, ['models', 'add', join(work, 'v2.onnx'), '--name', homeModel])).code).toBe(0);
    const r = await runCli(m, ['deploy', homeModel, '--via', 'ssh', '--to', to, '--ssh-key', sshd.privateKeyPath]);
    expect(r.code).toBe(0);
    const expected = join(homeModels, homeModel, '2', 'model.onnx');
    expect(r.stdout).toContain(`${homeModel}@2 → ${to}:${expected}`);
    expect(r.stdout).toContain(`sha256 ${sha256Hex(v2.bytes)} verified on the device`);
    expect(r.stdout).toContain('host key not pinned');
    expect(sha256Hex(await readFile(expected))).toBe(sha256Hex(v2.bytes));
  });

  it('a wrong key, an unreachable host and a wrong host key fail clearly (exit 1) and leave the device file as it was', async () => {
    const remotePath = join(target, 'keep', 'model.onnx');
    await mkdir(join(target, 'keep'));
    const old = Buffer.from('the model that was there before');
    await writeFile(remotePath, old);
    const closedPort = await freePort();
    const base = ['deploy', 'big@1', '--via', 'ssh', '--remote-path', remotePath, '--json'];
    const [wrongKey, unreachable, wrongHostKey] = await Promise.all([
      runCli(m, [...base, '--to', to, '--ssh-key', strangerKey]),
      runCli(m, [...base, '--to', `${sshd.username}@127.0.0.1:${closedPort}`, '--ssh-key', sshd.privateKeyPath]),
      runCli(m, [...base, '--to', to, '--ssh-key', sshd.privateKeyPath, '--host-key', `SHA256:${'A'.repeat(43)}`]),
    ]);
    expect(wrongKey.code).toBe(1);
    expect(errorOf(wrongKey)).toMatchObject({ code: 'unavailable', message: expect.stringMatching(/refused the SSH key.*authorized_keys/) });
    expect(unreachable.code).toBe(1);
    expect(errorOf(unreachable)).toMatchObject({ code: 'unavailable', message: expect.stringMatching(new RegExp(`cannot reach .*127\\.0\\.0\\.1:${closedPort} over SSH`)) });
    expect(wrongHostKey.code).toBe(1);
    expect(errorOf(wrongHostKey)).toMatchObject({ code: 'bad_signature', message: expect.stringContaining(sshd.hostKeyFingerprint) });
    expect(await readFile(remotePath)).toEqual(old);
    expect(await readdir(join(target, 'keep'))).toEqual(['model.onnx']);

    // Without --json the sentence goes to stderr.
    const plain = await runCli(m, ['deploy', 'big', '--via', 'ssh', '--to', to, '--ssh-key', strangerKey, '--remote-path', remotePath]);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/^hostManager: .*refused the SSH key/);

    const audit = (await api<AuditView[]>(m, 'GET', '/api/audit?limit=20')).body.filter((e) => e.action === 'model.deliver.ssh' && e.result === 'error');
    expect(audit.map((e) => e.detail?.error?.code).sort()).toEqual(['bad_signature', 'unavailable', 'unavailable', 'unavailable']);
  });

  it('bad model references, SSH targets, key files and flag mixes are refused before anything is sent', async () => {
    const openKey = join(work, 'open-key');
    await writeFile(openKey, await readFile(sshd.privateKeyPath));
    await chmod(openKey, 0o644);
    const ssh = (ref: string, ...extra: string[]): string[] => ['deploy', ref, '--via', 'ssh', '--remote-path', join(target, 'never', 'model.onnx'), '--json', ...extra];
    const key = ['--ssh-key', sshd.privateKeyPath];
    const [noModel, noVersion, badRef, noUser, badPort, noKey, worldReadable, publicHalf, missingKey, ownKey, badFingerprint, waves, keyWithoutSsh, traversal] = await Promise.all([
      runCli(m, ssh('nosuch', '--to', to, ...key)),
      runCli(m, ssh('big@9', '--to', to, ...key)),
      runCli(m, ssh('big@x', '--to', to, ...key)),
      runCli(m, ssh('big', '--to', `${sshd.host}:${sshd.port}`, ...key)),
      runCli(m, ssh('big', '--to', `${sshd.username}@${sshd.host}:70000`, ...key)),
      runCli(m, ssh('big', '--to', to)),
      runCli(m, ssh('big', '--to', to, '--ssh-key', openKey)),
      runCli(m, ssh('big', '--to', to, '--ssh-key', `${sshd.privateKeyPath}.pub`)),
      runCli(m, ssh('big', '--to', to, '--ssh-key', join(work, 'no-such-key'))),
      runCli(m, ssh('big', '--to', to, '--ssh-key', join(m.dataDir, 'keys', 'fleet-key.pem'))),
      runCli(m, ssh('big', '--to', to, ...key, '--host-key', 'md5:aa:bb')),
      runCli(m, ssh('big', '--to', to, ...key, '--waves', '50,100')),
      runCli(m, ['deploy', 'big', '--to', 'pi-1', '--ssh-key', sshd.privateKeyPath, '--json']),
      runCli(m, ['deploy', 'big', '--via', 'ssh', '--to', to, ...key, '--remote-path', `${target}/../escape.onnx`, '--json']),
    ]);
    expect(noModel.code).toBe(5);
    expect(errorOf(noModel)).toMatchObject({ code: 'not_found', message: expect.stringContaining('nosuch') });
    expect(noVersion.code).toBe(5);
    expect(errorOf(noVersion).code).toBe('not_found');
    for (const [r, pattern] of [
      [badRef, /not a model reference/],
      [noUser, /USER@HOST/],
      [badPort, /not an SSH target/],
      [noKey, /needs --ssh-key/],
      [waves, /--waves is for rollouts over MQTT/],
      [keyWithoutSsh, /--ssh-key needs --via ssh/],
    ] as const) {
      expect({ code: r.code, error: errorOf(r) }).toMatchObject({ code: 2, error: { code: 'usage', message: expect.stringMatching(pattern) } });
    }
    for (const [r, pattern] of [
      [worldReadable, /readable by others \(mode 644\); chmod 600/],
      [publicHalf, /not a private key/],
      [missingKey, /cannot read the SSH key .*ENOENT/],
      [ownKey, /controller's own keys/],
      [badFingerprint, /SHA256:<43 base64/],
      [traversal, /without "\.\."/],
    ] as const) {
      expect({ code: r.code, error: errorOf(r) }).toMatchObject({ code: 2, error: { code: 'invalid_params', message: expect.stringMatching(pattern) } });
    }
    await expect(stat(join(target, 'never'))).rejects.toThrow(/ENOENT/);
    await expect(stat(join(sshd.dir, 'escape.onnx'))).rejects.toThrow(/ENOENT/);
  });

  it('the hash is checked on the device: a registry blob that no longer matches its sha256 is refused there', async () => {
    expect((await runCli(m, ['models', 'add', join(work, 'v1.onnx'), '--name', 'rot'])).code).toBe(0);
    const rec = (await api<{ sha256: string }>(m, 'GET', '/api/models/rot/1')).body;
    const blob = join(m.dataDir, 'blobs', 'sha256', rec.sha256);
    const bytes = await readFile(blob);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1); // same length, one bit pattern changed: bit rot on the controller's disk
    await chmod(blob, 0o600);
    await writeFile(blob, bytes);
    const remotePath = join(target, 'rot', 'model.onnx');
    const r = await runCli(m, ['deploy', 'rot@1', '--via', 'ssh', '--to', to, '--ssh-key', sshd.privateKeyPath, '--remote-path', remotePath, '--json']);
    expect(r.code).toBe(1);
    expect(errorOf(r)).toMatchObject({ code: 'corrupt_chunk', message: expect.stringContaining(`expected ${rec.sha256}`) });
    expect(await readdir(join(target, 'rot'))).toEqual([]); // the bad copy (.part) was removed, nothing renamed into place
  });
});
