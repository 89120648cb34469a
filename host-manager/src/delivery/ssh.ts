/**
 * Model delivery over SSH, for devices that run no agent yet but accept SSH (the
 * original workflow copied models with scp). Upload to `<remotePath>.part`, hash the
 * copy on the device with sha256sum, compare with the registry's sha256, then rename
 * it over `<remotePath>` atomically. A mismatch removes the .part and leaves whatever
 * was at remotePath untouched.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { isAbsolute, posix } from 'node:path';
import { NodeSSH } from 'node-ssh';
import { FleetError } from '@edgefleet/protocol';

/** Where and as whom to log in. */
export interface SshLogin {
  host: string;
  port?: number;
  username: string;
  /** The private key text (OpenSSH or PEM). */
  privateKey: string;
  passphrase?: string;
  /** Pin the device's host key: `SHA256:<base64>` as `ssh-keygen -lf` prints it. Unset = accept any (first contact). */
  hostKeyFingerprint?: string;
  readyTimeoutMs?: number;
}

export interface SshDeliveryOptions extends SshLogin {
  /** Local file to send (a registry blob). */
  file: string;
  /** Absolute path on the device, or `~/…` (relative to the login user's home there). */
  remotePath: string;
  /** The sha256 the copy must have (the registry's). */
  sha256: string;
}

export interface SshDeliveryResult {
  remotePath: string;
  sha256: string;
  bytes: number;
  ms: number;
}

/** Quotes one argument for a POSIX shell. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

export function sshFingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** Logs in; refusals become FleetErrors that say what to fix (a wrong host key, an unusable or refused key, no route). */
export async function connectSsh(opts: SshLogin): Promise<NodeSSH> {
  const ssh = new NodeSSH();
  let hostKeyMismatch: string | undefined;
  try {
    await ssh.connect({
      host: opts.host,
      port: opts.port ?? 22,
      username: opts.username,
      privateKey: opts.privateKey,
      ...(opts.passphrase ? { passphrase: opts.passphrase } : {}),
      readyTimeout: opts.readyTimeoutMs ?? 10_000,
      ...(opts.hostKeyFingerprint
        ? {
            hostVerifier: (key: Buffer) => {
              const seen = sshFingerprint(key);
              if (seen === opts.hostKeyFingerprint) return true;
              hostKeyMismatch = seen;
              return false;
            },
          }
        : {}),
    });
  } catch (error) {
    if (hostKeyMismatch) {
      throw new FleetError(
        'bad_signature',
        `host key of ${opts.host} is ${hostKeyMismatch}, not the pinned ${opts.hostKeyFingerprint}; check the device before trusting it`,
      );
    }
    const message = (error as Error).message;
    if (/parse privateKey|passphrase/i.test(message)) {
      throw new FleetError('invalid_params', `the SSH key cannot be used (${message}); give an unencrypted OpenSSH or PEM private key`);
    }
    if (/authentication methods failed/i.test(message)) {
      throw new FleetError(
        'unavailable',
        `${opts.username}@${opts.host}:${opts.port ?? 22} refused the SSH key (${message}); add its public key to ~${opts.username}/.ssh/authorized_keys on the device, or give the right key`,
      );
    }
    throw new FleetError('unavailable', `cannot reach ${opts.username}@${opts.host}:${opts.port ?? 22} over SSH: ${message}`);
  }
  return ssh;
}

/** Runs a command on the device; a non-zero exit throws with its stderr. */
export function remoteRunner(ssh: NodeSSH, host: string): (command: string) => Promise<string> {
  return async (command) => {
    const r = await ssh.execCommand(command);
    if (r.code !== 0) throw new FleetError('internal', `\`${command}\` failed on ${host} (exit ${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
  };
}

export async function deliverViaSsh(opts: SshDeliveryOptions): Promise<SshDeliveryResult> {
  const started = Date.now();
  if (!/^[0-9a-f]{64}$/.test(opts.sha256)) throw new FleetError('invalid_params', 'sha256 must be 64 lowercase hex digits');
  const homeRelative = opts.remotePath.startsWith('~/');
  if (
    (!homeRelative && !posix.isAbsolute(opts.remotePath)) ||
    opts.remotePath.split('/').includes('..') ||
    opts.remotePath.endsWith('/') ||
    opts.remotePath === '~/' ||
    opts.remotePath.includes('\0')
  ) {
    throw new FleetError('invalid_params', `remote path "${opts.remotePath}" must be an absolute file path (or ~/…) without ".."`);
  }
  const { size } = await stat(opts.file);
  const ssh = await connectSsh(opts);
  const run = remoteRunner(ssh, opts.host);
  try {
    let remotePath = opts.remotePath;
    if (homeRelative) {
      const home = (await run('printf %s "$HOME"')).trim();
      if (!posix.isAbsolute(home)) throw new FleetError('internal', `the login user on ${opts.host} has no usable home directory ("${home}"); give an absolute remote path`);
      remotePath = posix.join(home, opts.remotePath.slice(2));
    }
    const part = `${remotePath}.part`;
    await run(`mkdir -p -- ${shellQuote(posix.dirname(remotePath))}`);
    try {
      await ssh.putFile(opts.file, part);
    } catch (error) {
      await ssh.execCommand(`rm -f -- ${shellQuote(part)}`);
      const code = /no space|quota/i.test((error as Error).message) ? 'disk_full' : 'unavailable';
      throw new FleetError(code, `upload to ${opts.host}:${part} failed: ${(error as Error).message}`);
    }
    const out = await run(`sha256sum -- ${shellQuote(part)} && stat -c %s -- ${shellQuote(part)}`);
    const [hashLine = '', sizeLine = ''] = out.trim().split('\n');
    const remoteSha = hashLine.slice(0, 64);
    const remoteSize = Number(sizeLine.trim());
    if (remoteSha !== opts.sha256) {
      await ssh.execCommand(`rm -f -- ${shellQuote(part)}`);
      throw new FleetError(
        remoteSize < size ? 'truncated' : 'corrupt_chunk',
        `the copy on ${opts.host} has sha256 ${remoteSha} (${remoteSize} bytes), expected ${opts.sha256}; it was removed and ${remotePath} left as it was. Check the registry blob (hostManager models show) and retry`,
      );
    }
    await run(`mv -f -- ${shellQuote(part)} ${shellQuote(remotePath)} && (sync -- ${shellQuote(remotePath)} 2>/dev/null || true)`);
    return { remotePath, sha256: remoteSha, bytes: remoteSize, ms: Date.now() - started };
  } finally {
    ssh.dispose();
  }
}

/** Largest private key file accepted (an RSA-16384 key in PEM is under 13 KB). */
const MAX_KEY_BYTES = 64 * 1024;

/**
 * Reads an SSH private key from a file on this host, refusing what ssh itself would
 * refuse: a relative path, something that is not a regular file, a file others can
 * read (mode & 0o077), and a file that is not a private key. Errors name the path,
 * never the content.
 */
export async function readPrivateKeyFile(path: string): Promise<string> {
  if (!isAbsolute(path)) throw new FleetError('invalid_params', `SSH key path "${path}" must be absolute (a file on the controller host)`);
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new FleetError('invalid_params', `cannot read the SSH key ${path} on the controller host (${code ?? 'error'}); give the path of a private key file the controller can read`);
  }
  if (!info.isFile()) throw new FleetError('invalid_params', `SSH key ${path} is not a regular file`);
  if (info.size > MAX_KEY_BYTES) throw new FleetError('invalid_params', `SSH key ${path} is ${info.size} bytes, too large to be a private key`);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new FleetError('invalid_params', `cannot read the SSH key ${path} on the controller host (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(text)) throw new FleetError('invalid_params', `${path} is not a private key (no "BEGIN … PRIVATE KEY" block); give the private half, not the .pub`);
  if ((info.mode & 0o077) !== 0) {
    throw new FleetError('invalid_params', `SSH key ${path} is readable by others (mode ${(info.mode & 0o777).toString(8)}); chmod 600 it, as ssh requires`);
  }
  return text;
}
