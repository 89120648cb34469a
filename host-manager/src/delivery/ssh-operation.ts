/**
 * `deploy --via ssh`: copies a registry version to a device that runs no agent, over
 * SSH (ssh.ts: upload, sha256 checked on the device, atomic rename). The private key is
 * read here, on the controller host; it is never logged, audited or returned, and the
 * controller's own keys are refused as SSH keys.
 */
import { realpath } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import { FleetError, toErrorBody } from '@edgefleet/protocol';
import type { ModelOperations, SshDeliveryView } from '../api/contract.js';
import type { Registry } from '../models/registry.js';
import type { RecordAudit } from '../state/audit.js';
import { deliverViaSsh, readPrivateKeyFile } from './ssh.js';

/** Where `deploy --via ssh` puts a model when no remote path is given (home of the login user on the device). */
export function defaultSshRemotePath(model: string, version: number): string {
  return `~/models/${model}/${version}/model.onnx`;
}

/** The controller's own secrets are never used as SSH keys. */
async function refuseControllerKeys(keyPath: string, dataDir: string): Promise<void> {
  const keysDir = resolve(dataDir, 'keys');
  const real = await realpath(keyPath).catch(() => resolve(keyPath)); // a missing file is reported by the read that follows
  const realKeysDir = await realpath(keysDir).catch(() => keysDir);
  if (real === realKeysDir || real.startsWith(realKeysDir + sep)) {
    throw new FleetError('invalid_params', `${keyPath} is one of the controller's own keys; give an SSH key made for the device (ssh-keygen -t ed25519)`);
  }
}

/** The SSH key at `keyPath` on the controller host, refused when it is one of the controller's own keys or unusable. */
/** How an SSH delivery target is named in audit entries and answers: `ssh:user@host:port` (IPv6 in brackets). */
export function sshTargetName(username: string, host: string, port: number): string {
  return `ssh:${username}@${host.includes(':') ? `[${host}]` : host}:${port}`;
}

export async function operatorSshKey(keyPath: string, dataDir: string): Promise<string> {
  await refuseControllerKeys(keyPath, dataDir);
  return readPrivateKeyFile(keyPath);
}

export function createSshDelivery(ctx: { registry: Registry; dataDir: string; audit: RecordAudit }): ModelOperations['deliverSsh'] {
  const { registry, audit } = ctx;
  return async (args) => {
    const port = args.port ?? 22;
    const target = sshTargetName(args.username, args.host, port);
    const rec = registry.require(args.model, args.version);
    const remotePath = args.remotePath ?? defaultSshRemotePath(rec.name, rec.version);
    const detail = { model: rec.name, version: rec.version, remotePath, hostKeyPinned: args.hostKeyFingerprint !== undefined };
    try {
      const privateKey = await operatorSshKey(args.keyPath, ctx.dataDir);
      const r = await deliverViaSsh({
        host: args.host,
        port,
        username: args.username,
        privateKey,
        file: registry.blobPath(rec),
        remotePath,
        sha256: rec.sha256,
        ...(args.hostKeyFingerprint ? { hostKeyFingerprint: args.hostKeyFingerprint } : {}),
      });
      const view: SshDeliveryView = {
        model: rec.name,
        version: rec.version,
        target: { username: args.username, host: args.host, port },
        remotePath: r.remotePath,
        sha256: r.sha256,
        bytes: r.bytes,
        seconds: r.ms / 1000,
        hostKeyPinned: detail.hostKeyPinned,
      };
      await audit({ actor: args.actor, action: 'model.deliver.ssh', target, result: 'ok', detail: { ...detail, remotePath: r.remotePath, sha256: r.sha256, bytes: r.bytes, seconds: view.seconds } });
      return view;
    } catch (error) {
      await audit({ actor: args.actor, action: 'model.deliver.ssh', target, result: 'error', detail: { ...detail, error: toErrorBody(error) } });
      throw error;
    }
  };
}
