/**
 * The image operations: the registry (list, show with where each version runs, add, remove), commands to
 * the apps on devices (run an installed version, stop, remove), and `image push --via ssh` (ssh.ts). Pushes
 * to agents are rollouts of kind 'image' (rollouts/), delivered like models (delivery/).
 */
import { FleetError, toErrorBody } from '@edgefleet/protocol';
import type { AppCommandResult, ImageOperations, SshImageDeliveryView } from '../api/contract.js';
import { operatorSshKey, sshTargetName } from '../delivery/ssh-operation.js';
import type { Requester } from '../devices/requester.js';
import { targetMembers } from '../devices/targets.js';
import type { Rollouts } from '../rollouts/executor.js';
import { formatTarget } from '../rollouts/target.js';
import type { RecordAudit } from '../state/audit.js';
import type { FleetRepository } from '../state/repository.js';
import type { RolloutTarget } from '../state/schema.js';
import type { ImageRegistry } from './registry.js';
import { loadImageViaSsh } from './ssh.js';

export interface ImageContext {
  state: FleetRepository;
  images: ImageRegistry;
  rollouts: Rollouts;
  requester: Requester;
  audit: RecordAudit;
  dataDir: string;
  timeoutMs: number;
}

/** One request per device of the target, answered or not; offline devices get a moment, not the whole timeout. */
async function onDevices(ctx: ImageContext, to: RolloutTarget, timeoutMs: number, call: (device: string, timeoutMs: number) => Promise<Omit<AppCommandResult, 'device' | 'ok'>>): Promise<AppCommandResult[]> {
  const results = await Promise.all(
    targetMembers(ctx.state, to).map(async (d): Promise<AppCommandResult> => {
      try {
        return { device: d.id, ok: true, ...(await call(d.id, d.online || to.kind === 'device' ? timeoutMs : 1)) };
      } catch (error) {
        return { device: d.id, ok: false, error: toErrorBody(error) };
      }
    }),
  );
  return results.sort((a, b) => (a.device < b.device ? -1 : 1));
}

export function createImageOperations(ctx: ImageContext): ImageOperations {
  const { state, images, rollouts, requester, audit } = ctx;
  const commandAudit = async (actor: string, action: string, app: string, to: RolloutTarget, results: AppCommandResult[]): Promise<{ results: AppCommandResult[] }> => {
    await audit({ actor, action, target: `${app} → ${formatTarget(to)}`, result: results.every((r) => r.ok) ? 'ok' : 'error', detail: { results } });
    return { results };
  };
  return {
    listImages: (name) => images.list(name),
    showImage(name, version) {
      const rec = images.require(name, version);
      const runningOn = state
        .devices()
        .filter((d) => d.info?.containers?.some((c) => c.role === 'app' && c.app === name && c.version === rec.version && c.running))
        .map((d) => d.id);
      return { ...rec, versions: images.list(name).map((v) => v.version), runningOn };
    },
    async addImage(args) {
      try {
        const rec = await images.addArchive(args.file, args.opts);
        await audit({ actor: args.actor, action: 'image.add', target: `${rec.name}@${rec.version}`, result: 'ok', detail: { image: rec.image.digest, sha256: rec.sha256, created: rec.created } });
        return rec;
      } catch (error) {
        await audit({ actor: args.actor, action: 'image.add', target: args.opts.name, result: 'error', detail: toErrorBody(error) });
        throw error;
      }
    },
    async removeImage(args) {
      images.require(args.name, args.version);
      const running = rollouts.list().find((r) => r.status === 'running' && r.kind === 'image' && r.model === args.name && r.version === args.version);
      if (running) throw new FleetError('conflict', `rollout ${running.id} is delivering image ${args.name}@${args.version}; abort it first`);
      const result = await images.remove(args.name, args.version);
      await audit({ actor: args.actor, action: 'image.remove', target: `${args.name}@${args.version}`, result: 'ok' });
      return result;
    },
    async runImage(args) {
      const rec = images.require(args.app, args.version);
      if (!rec.container) throw new FleetError('invalid_params', `${rec.name}@${rec.version} has no container spec: it is installed, not run (push it again with --spec)`);
      const wait = ctx.timeoutMs + rec.container.healthyWithinMs;
      const results = await onDevices(ctx, args.to, wait, async (device, timeoutMs) => {
        const r = await requester.request(device, 'containers.deploy', { app: rec.name, version: rec.version }, timeoutMs);
        return { version: r.version, message: r.strategy === 'none' ? `${rec.name}@${r.version} was already running` : `${rec.name}@${r.version} runs (${r.strategy}; previous ${r.previous ?? 'none'})` };
      });
      return commandAudit(args.actor, 'image.run', `${rec.name}@${rec.version}`, args.to, results);
    },
    async stopImage(args) {
      const results = await onDevices(ctx, args.to, ctx.timeoutMs, async (device, timeoutMs) => {
        const r = await requester.request(device, 'containers.stop', { app: args.app }, timeoutMs);
        return { version: r.version, message: r.stopped ? `${args.app}@${r.version} stopped` : `${args.app}@${r.version} was not running` };
      });
      return commandAudit(args.actor, 'image.stop', args.app, args.to, results);
    },
    async removeImageFromDevices(args) {
      const results = await onDevices(ctx, args.to, ctx.timeoutMs, async (device, timeoutMs) => {
        const r = await requester.request(device, 'containers.remove', { app: args.app }, timeoutMs);
        return { message: r.removed ? `${args.app} removed (${r.containers} container(s), ${r.images} image(s))` : `${args.app} was not on the device` };
      });
      return commandAudit(args.actor, 'image.remove.devices', args.app, args.to, results);
    },
    deliverImageSsh: (args) => deliverImageSsh(ctx, args),
  };
}

async function deliverImageSsh(ctx: ImageContext, args: Parameters<ImageOperations['deliverImageSsh']>[0]): Promise<SshImageDeliveryView> {
  const port = args.port ?? 22;
  const target = sshTargetName(args.username, args.host, port);
  const rec = ctx.images.require(args.name, args.version);
  const detail = { image: `${rec.name}@${rec.version}`, digest: rec.image.digest, hostKeyPinned: args.hostKeyFingerprint !== undefined };
  try {
    const privateKey = await operatorSshKey(args.keyPath, ctx.dataDir);
    const r = await loadImageViaSsh({
      host: args.host,
      port,
      username: args.username,
      privateKey,
      ...(args.hostKeyFingerprint ? { hostKeyFingerprint: args.hostKeyFingerprint } : {}),
      file: ctx.images.blobPath(rec),
      sha256: rec.sha256,
      length: rec.length,
      digest: rec.image.digest,
      tag: rec.image.reference,
    });
    const view: SshImageDeliveryView = {
      name: rec.name,
      version: rec.version,
      target: { username: args.username, host: args.host, port },
      image: r.image,
      tag: r.tag,
      loaded: r.loaded,
      bytes: r.bytes,
      seconds: r.ms / 1000,
      hostKeyPinned: detail.hostKeyPinned,
    };
    await ctx.audit({ actor: args.actor, action: 'image.deliver.ssh', target, result: 'ok', detail: { ...detail, loaded: r.loaded, bytes: r.bytes, seconds: view.seconds } });
    return view;
  } catch (error) {
    await ctx.audit({ actor: args.actor, action: 'image.deliver.ssh', target, result: 'error', detail: { ...detail, error: toErrorBody(error) } });
    throw error;
  }
}
