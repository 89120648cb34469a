/**
 * An image to a device that runs no agent but accepts SSH: the registry's `docker save` archive is streamed
 * over the SSH channel into `docker load` on the device (never written there as a file, never held whole
 * in memory here), then the device's engine is asked for the pinned image ID. An image the load added that
 * is not the pin is removed again; what was on the device before is never touched. The login user must be
 * allowed to use the device's Docker engine (root, or a member of the docker group).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform } from 'node:stream';
import { FleetError } from '@edgefleet/protocol';
import { connectSsh, remoteRunner, shellQuote } from '../delivery/ssh.js';
import type { SshLogin } from '../delivery/ssh.js';

export interface SshImageOptions extends SshLogin {
  /** The archive blob to stream. */
  file: string;
  sha256: string;
  length: number;
  /** The image ID the device's engine must end up with. */
  digest: string;
  /** Tagged on the device once verified, so the operator can `docker run` it by name. */
  tag: string;
}

export interface SshImageResult {
  image: string;
  tag: string;
  /** False when the device's engine had the image already (nothing sent). */
  loaded: boolean;
  bytes: number;
  ms: number;
}

/** `docker load`'s own account of what it loaded: image IDs (untagged archives) and tags. */
function loadedIds(stdout: string): string[] {
  return [...stdout.matchAll(/Loaded image ID: (sha256:[0-9a-f]{64})/g)].map((m) => m[1]!);
}

export async function loadImageViaSsh(opts: SshImageOptions): Promise<SshImageResult> {
  const started = Date.now();
  if (!/^sha256:[0-9a-f]{64}$/.test(opts.digest)) throw new FleetError('invalid_params', `"${opts.digest}" is not an image ID`);
  const ssh = await connectSsh(opts);
  const run = remoteRunner(ssh, opts.host);
  const where = `${opts.username}@${opts.host}`;
  try {
    const engine = await ssh.execCommand('docker version --format {{.Server.Version}}');
    if (engine.code !== 0) {
      throw new FleetError('unavailable', `${where} cannot use a Docker engine (${engine.stderr.trim() || `exit ${engine.code}`}); start dockerd there, or log in as a user in the docker group`);
    }
    const idOf = async (ref: string): Promise<string> => (await ssh.execCommand(`docker image inspect -f '{{.Id}}' ${shellQuote(ref)}`)).stdout.trim();
    let loaded = false;
    let bytes = 0;
    if ((await idOf(opts.digest)) !== opts.digest) {
      const before = new Set((await run('docker images -q --no-trunc')).split('\n').filter(Boolean));
      const hash = createHash('sha256');
      // hashed as it passes (no 'data' listener: the stream stays paused until the SSH channel pipes it)
      const sent = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          hash.update(chunk);
          bytes += chunk.length;
          done(null, chunk);
        },
      });
      createReadStream(opts.file).on('error', (e) => sent.destroy(e)).pipe(sent);
      const result = await ssh.execCommand('docker load', { stdin: sent });
      const ids = loadedIds(result.stdout);
      const added = ids.filter((id) => !before.has(id));
      const refuse = async (code: 'digest_mismatch' | 'corrupt_chunk' | 'truncated', reason: string): Promise<never> => {
        for (const id of added) await ssh.execCommand(`docker rmi ${shellQuote(id)}`);
        throw new FleetError(code, `${reason}; ${added.length ? `removed what the load added (${added.join(', ')})` : 'nothing was kept'} on ${where}`);
      };
      const sha = hash.digest('hex');
      if (sha !== opts.sha256 || bytes !== opts.length) {
        await refuse(bytes < opts.length ? 'truncated' : 'corrupt_chunk', `the registry's archive read ${bytes} bytes with sha256 ${sha}, its record says ${opts.length} bytes, ${opts.sha256}: it rotted on the controller's disk (push the image again)`);
      }
      if (result.code !== 0) await refuse('corrupt_chunk', `docker load on ${opts.host} refused the archive (exit ${result.code}): ${result.stderr.trim().slice(0, 500)}`);
      if (!ids.includes(opts.digest)) await refuse('digest_mismatch', `docker load on ${opts.host} gave ${ids.join(', ') || 'no image'}, but the registry pins ${opts.digest}`);
      loaded = true;
    }
    // the engine's word, after the load: the pinned ID is there
    if ((await idOf(opts.digest)) !== opts.digest) throw new FleetError('digest_mismatch', `the engine on ${opts.host} does not show image ${opts.digest} after loading it`);
    await run(`docker tag ${shellQuote(opts.digest)} ${shellQuote(opts.tag)}`);
    return { image: opts.digest, tag: opts.tag, loaded, bytes, ms: Date.now() - started };
  } finally {
    ssh.dispose();
  }
}
