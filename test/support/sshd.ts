/**
 * Test fixture: a real OpenSSH server (/usr/sbin/sshd -D) on a free loopback port,
 * with a host key and a client key made by ssh-keygen in a temporary directory. The
 * login user is the one running the tests (root is fine: PermitRootLogin yes).
 */
import { execFile, spawn } from 'node:child_process';
import { track } from './children.js';
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestSshd {
  host: string;
  port: number;
  username: string;
  /** The client's private key text (authorized on this server). */
  privateKey: string;
  privateKeyPath: string;
  /** `SHA256:...` of the server's host key, as ssh-keygen -lf prints it. */
  hostKeyFingerprint: string;
  /** Temporary directory (keys, config); tests may put their target files under `${dir}/target`. */
  dir: string;
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** sshd -e logs "Server listening on 127.0.0.1 port N." once it accepts connections. */
function waitForListening(child: ChildProcess, stderr: () => string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`sshd did not start within ${timeoutMs} ms: ${stderr()}`)), timeoutMs);
    const onData = (): void => {
      if (/Server listening on 127\.0\.0\.1/.test(stderr())) finish();
    };
    const onExit = (code: number | null): void => finish(new Error(`sshd exited with ${code}: ${stderr()}`));
    function finish(error?: Error): void {
      clearTimeout(timer);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      if (error) reject(error);
      else resolve();
    }
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
    onData();
  });
}

export async function startSshd(opts: { timeoutMs?: number; maxStartups?: number } = {}): Promise<TestSshd> {
  const dir = await mkdtemp(join(tmpdir(), 'sshd-'));
  await mkdir('/run/sshd', { recursive: true }); // privilege separation directory sshd insists on
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'client_key')]);
  await writeFile(join(dir, 'authorized_keys'), await readFile(join(dir, 'client_key.pub')), { mode: 0o600 });
  const port = await freePort();
  const config = [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${join(dir, 'host_key')}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    'PermitRootLogin yes',
    'StrictModes no',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PubkeyAuthentication yes',
    'UsePAM no',
    `MaxStartups ${opts.maxStartups ?? 100}`,
    'MaxSessions 100',
    'Subsystem sftp internal-sftp',
    'LogLevel INFO',
  ].join('\n');
  await writeFile(join(dir, 'sshd_config'), `${config}\n`);
  const child = track(spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let err = '';
  child.stderr?.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-20_000);
  });
  try {
    await waitForListening(child, () => err, opts.timeoutMs ?? 10_000);
  } catch (error) {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  const fingerprint = (await run('ssh-keygen', ['-lf', join(dir, 'host_key.pub')])).stdout.split(' ')[1] ?? '';
  return {
    host: '127.0.0.1',
    port,
    username: userInfo().username,
    privateKey: await readFile(join(dir, 'client_key'), 'utf8'),
    privateKeyPath: join(dir, 'client_key'),
    hostKeyFingerprint: fingerprint,
    dir,
    async close() {
      if (child.exitCode === null) {
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
