/**
 * `hostManager image push|ls|show|run|stop|rm|rollback`: Docker images for the fleet. `push` streams the image
 * out of the operator's Docker engine (`docker save` through dockerode, never held whole in memory) into the
 * controller's registry, then rolls it out like a model (canary, waves, gates) or, with `--via ssh`, loads it
 * into the engine of one device that runs no agent.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { ClientError, createClient, resolveConnection } from './client.js';
import type { Client } from './client.js';
import { EXIT, UsageError, parseModelRef, parseSshTarget, table } from './io.js';
import type { CliContext, CommandOutput, Common } from './io.js';
import { ROLLOUT_ONLY_FLAGS, SSH_DELIVERY_TIMEOUT_MS, deploy, deployOptions } from './rollouts.js';
import { rolloutText } from './rollout-text.js';
import type { RolloutView } from './rollout-text.js';

interface ImageRecordView {
  name: string;
  version: number;
  sha256: string;
  length: number;
  addedAt: string;
  image: { reference: string; digest: string; platform?: { architecture: string; variant?: string } };
  container: unknown;
  created?: boolean;
}

interface AppCommandView {
  results: { device: string; ok: boolean; message?: string; error?: { code: string; message: string } }[];
}

/** `NAME@VERSION` names a version already in the registry; anything else is a reference in the local Docker engine. */
function registryRef(text: string): { name: string; version: number } | undefined {
  const m = /^([A-Za-z0-9][A-Za-z0-9._-]{0,63})@(\d+)$/.exec(text);
  return m ? { name: m[1]!, version: Number(m[2]) } : undefined;
}

/** `registry.local/team/web:1.2` → `web`: the last path segment without its tag, in the fleet's name alphabet. */
function defaultName(reference: string): string {
  const last = reference.split('/').pop() ?? reference;
  return last.replace(/[:@].*$/, '').replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64) || 'image';
}

/** Streams `docker save` of the image (by its ID, so a tag moved meanwhile cannot swap it) into the registry. */
async function saveIntoRegistry(c: Client, reference: string, name: string, specFile: string | undefined, socketPath: string | undefined): Promise<ImageRecordView> {
  let container: string | undefined;
  if (specFile) {
    const text = await readFile(resolve(specFile), 'utf8').catch((error: NodeJS.ErrnoException) => {
      throw new UsageError(`cannot read the container spec ${specFile}: ${error.code ?? error.message}`);
    });
    try {
      container = Buffer.from(JSON.stringify(JSON.parse(text))).toString('base64');
    } catch {
      throw new UsageError(`${specFile} is not JSON; write the container spec as JSON (see host-manager/README.md)`);
    }
  }
  const { default: Docker } = await import('dockerode'); // loaded only for this command
  const docker = new Docker(socketPath ? { socketPath } : undefined);
  let id: string;
  try {
    id = (await docker.getImage(reference).inspect()).Id;
  } catch (error) {
    const status = (error as { statusCode?: number }).statusCode;
    if (status === 404) throw new ClientError(404, 'not_found', `no image ${reference} in your Docker engine; see \`docker images\``);
    throw new ClientError(0, 'unavailable', `cannot ask your Docker engine about ${reference} (${(error as Error).message}); is dockerd running? (--docker-socket)`);
  }
  const archive = await docker.getImage(id).get();
  const query = `name=${encodeURIComponent(name)}&reference=${encodeURIComponent(reference)}`;
  return c.uploadStream<ImageRecordView>(`/api/images?${query}`, archive as AsyncIterable<Uint8Array>, { 'x-image-id': id, ...(container ? { 'x-image-container': container } : {}) });
}

async function pushViaSsh(ctx: CliContext, a: Record<string, unknown> & Common, rec: ImageRecordView): Promise<CommandOutput> {
  const target = parseSshTarget(String(a['to']));
  const key = a['ssh-key'];
  if (typeof key !== 'string' || key === '') throw new UsageError('--via ssh needs --ssh-key FILE: a private key the device accepts (read by the controller, on its host)');
  const body = { version: rec.version, ...target, keyPath: resolve(key), ...(typeof a['host-key'] === 'string' ? { hostKeyFingerprint: a['host-key'] } : {}) };
  const conn = await resolveConnection({ url: a.url, token: a.token, dataDir: a['data-dir'], env: ctx.env });
  const r = await createClient(conn.url, conn.token, SSH_DELIVERY_TIMEOUT_MS).call<{ image: string; tag: string; loaded: boolean; bytes: number; seconds: number; hostKeyPinned: boolean }>(
    'POST',
    `/api/images/${encodeURIComponent(rec.name)}/ssh`,
    body,
  );
  const where = `${target.username}@${target.host}${target.port ? `:${target.port}` : ''}`;
  const how = r.loaded ? `${r.bytes} bytes into docker load in ${r.seconds.toFixed(2)} s` : 'already on its engine, nothing sent';
  return { json: { ...rec, delivery: r }, text: `${rec.name}@${rec.version} → ${where}: image ${r.image} verified on the device (${how}), tagged ${r.tag}${r.hostKeyPinned ? '' : ' (host key not pinned: pass --host-key SHA256:…)'}` };
}

async function push(ctx: CliContext, a: Record<string, unknown> & Common & { image: string; wait?: boolean; via: 'mqtt' | 'ssh' }): Promise<CommandOutput> {
  if (a.via === 'ssh') {
    for (const flag of [...ROLLOUT_ONLY_FLAGS, 'wait']) {
      if (a[flag] !== undefined && a[flag] !== false) throw new UsageError(`--${flag} is for rollouts to agents; --via ssh loads the image into one device's engine and always waits`);
    }
    parseSshTarget(String(a['to'])); // a usage error before anything is sent
  } else if (a['ssh-key'] !== undefined || a['host-key'] !== undefined) {
    throw new UsageError('--ssh-key and --host-key need --via ssh');
  }
  const conn = await resolveConnection({ url: a.url, token: a.token, dataDir: a['data-dir'], env: ctx.env });
  const c = createClient(conn.url, conn.token, SSH_DELIVERY_TIMEOUT_MS);
  const fromRegistry = registryRef(a.image);
  if (fromRegistry && (a['name'] !== undefined || a['spec'] !== undefined)) throw new UsageError(`${a.image} is a registry version; --name and --spec apply when pushing from your Docker engine`);
  const rec = fromRegistry
    ? await c.call<ImageRecordView>('GET', `/api/images/${encodeURIComponent(fromRegistry.name)}/${fromRegistry.version}`)
    : await saveIntoRegistry(c, a.image, typeof a['name'] === 'string' ? a['name'] : defaultName(a.image), a['spec'] as string | undefined, a['docker-socket'] as string | undefined);
  if (a.via === 'ssh') return pushViaSsh(ctx, a, rec);
  const out = await deploy(ctx.io, c, `${rec.name}@${rec.version}`, a, a.wait ?? false, a.json, 'image');
  const added = rec.created === false ? `${rec.name}@${rec.version} (already in the registry)` : `${rec.name}@${rec.version} (${rec.image.digest.slice(0, 19)}…)`;
  return { ...out, text: `${added}\n${out.text ?? ''}` };
}

function resultsText(r: AppCommandView): string {
  return r.results.map((x) => `${x.device}: ${x.ok ? (x.message ?? 'ok') : `${x.error?.code}: ${x.error?.message}`}`).join('\n') || 'no devices';
}

const resultsOutput = (r: AppCommandView): CommandOutput => ({ json: r, text: resultsText(r), code: r.results.every((x) => x.ok) ? EXIT.ok : EXIT.failed });

function pushCommand<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y.command(
    'push <image>',
    'stream an image from your Docker engine (or NAME@VERSION from the registry) into the registry and roll it out: canary, waves, gates on install, container health and inference health; --via ssh loads it into one device without an agent',
    (yy) =>
      deployOptions(yy.positional('image', { type: 'string', demandOption: true, describe: 'a reference in your Docker engine (name:tag, an ID), or NAME@VERSION of the registry' }))
        .option('name', { type: 'string', describe: 'the app name on the devices (default: the image name without its tag)' })
        .option('spec', { type: 'string', describe: 'JSON file: the container spec (command, env, ports, mounts, restart, resources, health, update, inference); without it the image is installed, not run' })
        .option('docker-socket', { type: 'string', describe: "your Docker engine's socket (default: DOCKER_HOST, else /var/run/docker.sock)" })
        .option('wait', { type: 'boolean', describe: 'follow the rollout to the end (exit 1 unless it succeeds)' })
        .option('via', { choices: ['mqtt', 'ssh'] as const, default: 'mqtt' as const, describe: 'mqtt: a rollout to agents; ssh: docker load on one device without an agent (--to USER@HOST[:PORT])' })
        .option('ssh-key', { type: 'string', describe: 'with --via ssh: private key file the device accepts; read by the controller on its host' })
        .option('host-key', { type: 'string', describe: 'with --via ssh: pin the device host key, SHA256:… as `ssh-keygen -lf` prints it' }),
    ctx.run<{ image: string; wait?: boolean; via: 'mqtt' | 'ssh' }>(async (a) => push(ctx, a as unknown as Record<string, unknown> & Common & typeof a)),
  );
}

export function imageCommands<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y.command('image', 'Docker images for the fleet: push, ls, show, run, stop, rm, rollback', (y) =>
    pushCommand(y, ctx)
      .command('ls [name]', 'list images and versions in the registry', (yy) => yy.positional('name', { type: 'string' }), ctx.run<{ name?: string }>(async (a, c) => {
        const list = await c.call<ImageRecordView[]>('GET', `/api/images${a.name ? `?name=${encodeURIComponent(a.name)}` : ''}`);
        const rows = list.map((i) => ({ image: `${i.name}@${i.version}`, id: i.image.digest.slice(7, 19), platform: i.image.platform ? [i.image.platform.architecture, i.image.platform.variant].filter(Boolean).join('/') : '', bytes: i.length, runs: i.container ? 'yes' : 'install only', reference: i.image.reference, added: i.addedAt }));
        return { json: list, text: list.length ? table(rows, ['image', 'id', 'platform', 'bytes', 'runs', 'reference', 'added']) : 'no images yet; push one with `hostManager image push <image> --to <target>`' };
      }))
      .command('show <ref>', 'show an image version (NAME or NAME@VERSION) and the devices running it', (yy) => yy.positional('ref', { type: 'string', demandOption: true }), ctx.run<{ ref: string }>(async (a, c) => {
        const { model, version } = parseModelRef(a.ref);
        const r = await c.call('GET', `/api/images/${encodeURIComponent(model)}${version ? `/${version}` : ''}`);
        return { json: r, text: JSON.stringify(r, null, 2) };
      }))
      .command('run <ref>', 'run an installed version (NAME[@VERSION], default the newest) on the devices of --to (blue/green, health-checked)', (yy) => yy.positional('ref', { type: 'string', demandOption: true }).option('to', { type: 'string', demandOption: true, describe: 'a device id, group:NAME or all' }), ctx.run<{ ref: string; to: string }>(async (a, c) => {
        const { model, version } = parseModelRef(a.ref);
        return resultsOutput(await c.call<AppCommandView>('POST', `/api/images/${encodeURIComponent(model)}/run`, { ...(version ? { version } : {}), to: a.to }));
      }))
      .command('stop <app>', 'stop the app on the devices of --to (it stays stopped until run again)', (yy) => yy.positional('app', { type: 'string', demandOption: true }).option('to', { type: 'string', demandOption: true }), ctx.run<{ app: string; to: string }>(async (a, c) =>
        resultsOutput(await c.call<AppCommandView>('POST', `/api/images/${encodeURIComponent(a.app)}/stop`, { to: a.to })),
      ))
      .command('rm <ref>', 'remove NAME@VERSION from the registry, or with --from TARGET the app NAME (containers and images) from those devices', (yy) => yy.positional('ref', { type: 'string', demandOption: true }).option('from', { type: 'string', describe: 'a device id, group:NAME or all' }), ctx.run<{ ref: string; from?: string }>(async (a, c) => {
        const { model, version } = parseModelRef(a.ref);
        if (a.from !== undefined) {
          if (version) throw new UsageError('--from removes the whole app from devices: give NAME, not NAME@VERSION');
          return resultsOutput(await c.call<AppCommandView>('POST', `/api/images/${encodeURIComponent(model)}/remove`, { to: a.from }));
        }
        if (!version) throw new UsageError('say which version: image rm NAME@VERSION (or image rm NAME --from TARGET for devices)');
        const r = await c.call('DELETE', `/api/images/${encodeURIComponent(model)}/${version}`);
        return { json: r, text: `image ${model}@${version} removed from the registry` };
      }))
      .command('rollback [rollout]', 'switch the devices an image rollout switched back to their previous version (default: the newest such rollout)', (yy) => yy.positional('rollout', { type: 'string' }), ctx.run<{ rollout?: string }>(async (a, c) => {
        const r = await c.call<RolloutView>('POST', '/api/rollback', a.rollout ? { rollout: a.rollout } : { kind: 'image' });
        const failed = Object.values(r.devices).filter((d) => d.state === 'switched' || (d.error && d.error.message.startsWith('rollback failed'))).length;
        return { json: r, text: rolloutText(r), code: failed ? EXIT.failed : EXIT.ok };
      }))
      .demandCommand(1, 'say which: image push|ls|show|run|stop|rm|rollback'),
  );
}
