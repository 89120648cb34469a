import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FleetError, sha256Hex } from '@edgefleet/protocol';
import { startSshd } from '../../test/support/sshd.js';
import type { TestSshd } from '../../test/support/sshd.js';
import { deliverViaSsh, shellQuote } from '../src/delivery/ssh.js';
import { refusal } from '../../test/support/refusal.js';

let sshd: TestSshd;
let target: string;
let source: string;
let bytes: Buffer;

beforeAll(async () => {
  sshd = await startSshd();
  target = join(sshd.dir, 'target');
  await mkdir(target);
  bytes = randomBytes(3 * 1024 * 1024 + 17);
  source = join(sshd.dir, 'model.onnx');
  await writeFile(source, bytes);
});
afterAll(async () => {
  await sshd?.close();
});

const base = () => ({ host: sshd.host, port: sshd.port, username: sshd.username, privateKey: sshd.privateKey, file: source });


describe('delivery over SSH to a real sshd', () => {
  it('uploads, verifies the sha256 on the device and renames into place (pinned host key)', async () => {
    const remotePath = join(target, 'models', 'it has spaces', "it's.onnx");
    const result = await deliverViaSsh({ ...base(), remotePath, sha256: sha256Hex(bytes), hostKeyFingerprint: sshd.hostKeyFingerprint });
    expect(result).toMatchObject({ remotePath, sha256: sha256Hex(bytes), bytes: bytes.length });
    expect(sha256Hex(await readFile(remotePath))).toBe(sha256Hex(bytes));
    expect(await readdir(join(target, 'models', 'it has spaces'))).toEqual(["it's.onnx"]); // no .part left behind
  });

  it('a hash mismatch is an error: the .part is removed and the model already there stays intact', async () => {
    const remotePath = join(target, 'keep.onnx');
    const old = Buffer.from('the model that was there before');
    await writeFile(remotePath, old);
    const wrong = sha256Hex(Buffer.from('something else'));
    const e = await refusal(deliverViaSsh({ ...base(), remotePath, sha256: wrong }));
    expect(e).toBeInstanceOf(FleetError);
    expect(e.code).toBe('corrupt_chunk');
    expect(e.message).toMatch(/left as it was/);
    expect(await readFile(remotePath)).toEqual(old);
    expect(await readdir(target)).not.toContain('keep.onnx.part');
  });

  it('refuses a host whose key does not match the pinned fingerprint, before sending anything', async () => {
    const remotePath = join(target, 'pinned.onnx');
    const e = await refusal(deliverViaSsh({ ...base(), remotePath, sha256: sha256Hex(bytes), hostKeyFingerprint: 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }));
    expect(e.code).toBe('bad_signature');
    expect(await readdir(target)).not.toContain('pinned.onnx.part');
  });

  it('refuses a key the device does not authorize, and a relative or traversing remote path', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    // A well-formed OpenSSH key the device does not list in authorized_keys.
    await promisify(execFile)('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(sshd.dir, 'stranger')]);
    const stranger = await readFile(join(sshd.dir, 'stranger'), 'utf8');
    const e = await refusal(deliverViaSsh({ ...base(), privateKey: stranger, remotePath: join(target, 'x.onnx'), sha256: sha256Hex(bytes) }));
    expect(e.code).toBe('unavailable');
    expect(e.message).toMatch(/refused the SSH key/);
    // A key ssh2 cannot use at all (PKCS#8 ed25519) is a usage problem, not an unreachable device.
    const unusable = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const u = await refusal(deliverViaSsh({ ...base(), privateKey: unusable, remotePath: join(target, 'x.onnx'), sha256: sha256Hex(bytes) }));
    expect(u.code).toBe('invalid_params');
    expect(u.message).toMatch(/cannot be used/);
    expect((await refusal(deliverViaSsh({ ...base(), remotePath: 'models/x.onnx', sha256: sha256Hex(bytes) }))).code).toBe('invalid_params');
    expect((await refusal(deliverViaSsh({ ...base(), remotePath: `${target}/../x.onnx`, sha256: sha256Hex(bytes) }))).code).toBe('invalid_params');
  });

  it('a remote path under ~/ is resolved against the login user\'s home on the device', async () => {
    const { userInfo } = await import('node:os');
    const { rm } = await import('node:fs/promises');
    const dir = `ssh-unit-${Date.now().toString(36)}`;
    const home = userInfo().homedir;
    try {
      const result = await deliverViaSsh({ ...base(), remotePath: `~/${dir}/m.onnx`, sha256: sha256Hex(bytes) });
      expect(result.remotePath).toBe(join(home, dir, 'm.onnx'));
      expect(sha256Hex(await readFile(result.remotePath))).toBe(sha256Hex(bytes));
    } finally {
      await rm(join(home, dir), { recursive: true, force: true });
    }
    expect((await refusal(deliverViaSsh({ ...base(), remotePath: '~/../x.onnx', sha256: sha256Hex(bytes) }))).code).toBe('invalid_params');
    expect((await refusal(deliverViaSsh({ ...base(), remotePath: '~other/x.onnx', sha256: sha256Hex(bytes) }))).code).toBe('invalid_params');
  });

  it('quotes shell arguments', () => {
    expect(shellQuote("a'b c")).toBe(`'a'\\''b c'`);
  });
});
