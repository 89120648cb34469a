/**
 * Model delivery over SSH, for devices that run no agent yet but accept SSH (the
 * original workflow copied models with scp). Upload to `<remotePath>.part`, hash the
 * copy on the device with sha256sum, compare with the registry's sha256, then rename
 * it over `<remotePath>` atomically. A mismatch removes the .part and leaves whatever
 * was at remotePath untouched.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { NodeSSH } from 'node-ssh';
import { FleetError } from '@edgefleet/protocol';

export interface SshDeliveryOptions {
  host: string;
  port?: number;
  username: string;
  /** The private key text (OpenSSH or PEM). */
  privateKey: string;
  passphrase?: string;
  /** Local file to send (a registry blob). */
  file: string;
  /** Absolute path on the device. */
  remotePath: string;
  /** The sha256 the copy must have (the registry's). */
  sha256: string;
  /** Pin the device's host key: `SHA256:<base64>` as `ssh-keygen -lf` prints it. Unset = accept any (first contact). */
  hostKeyFingerprint?: string;
  readyTimeoutMs?: number;
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

export async function deliverViaSsh(opts: SshDeliveryOptions): Promise<SshDeliveryResult> {
  const started = Date.now();
  if (!/^[0-9a-f]{64}$/.test(opts.sha256)) throw new FleetError('invalid_params', 'sha256 must be 64 lowercase hex digits');
  if (!posix.isAbsolute(opts.remotePath) || opts.remotePath.split('/').includes('..') || opts.remotePath.endsWith('/')) {
    throw new FleetError('invalid_params', `remote path "${opts.remotePath}" must be an absolute file path without ".."`);
  }
  const { size } = await stat(opts.file);
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
    throw new FleetError('unavailable', `cannot reach ${opts.username}@${opts.host}:${opts.port ?? 22} over SSH: ${(error as Error).message}`);
  }
  const part = `${opts.remotePath}.part`;
  const run = async (command: string): Promise<string> => {
    const r = await ssh.execCommand(command);
    if (r.code !== 0) throw new FleetError('internal', `\`${command}\` failed on ${opts.host} (exit ${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
  };
  try {
    await run(`mkdir -p -- ${shellQuote(posix.dirname(opts.remotePath))}`);
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
        `the copy on ${opts.host} has sha256 ${remoteSha} (${remoteSize} bytes), expected ${opts.sha256}; it was removed and ${opts.remotePath} left as it was. Check the registry blob (hostManager models show) and retry`,
      );
    }
    await run(`mv -f -- ${shellQuote(part)} ${shellQuote(opts.remotePath)} && (sync -- ${shellQuote(opts.remotePath)} 2>/dev/null || true)`);
    return { remotePath: opts.remotePath, sha256: remoteSha, bytes: remoteSize, ms: Date.now() - started };
  } finally {
    ssh.dispose();
  }
}
