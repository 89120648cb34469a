/**
 * The Docker engine, through dockerode: the only file that talks to it. Every call that changes a
 * container first re-reads its labels and refuses one the fleet does not own on this device, so no bug
 * higher up can stop or remove somebody else's container.
 *
 * An engine that is absent (no socket, no permission, not running) is a state, not an error at start:
 * `status()` says why, and each operation that needs it fails with `unavailable` and that reason.
 */
import type Docker from 'dockerode';
import { FleetError } from '@edgefleet/protocol';
import type { ContainerState } from '@edgefleet/protocol';
import { LABELS, isOwned, ownedFilter } from './labels.js';
import type { ContainerRole } from './labels.js';

export interface EngineStatus {
  available: boolean;
  version: string | null;
  reason: string | null;
  /** The engine's data root (`DockerRootDir`), where loaded images land. */
  rootDir: string | null;
}

/** A container the fleet owns, as observed; `ports` maps "8000/tcp" to the host port the engine bound. */
export interface OwnedContainer extends ContainerState {
  ports: Record<string, number>;
}

export interface ImageInfo {
  id: string;
  os: string;
  architecture: string;
  variant: string | undefined;
  tags: string[];
  /** Bytes the image takes on the engine. */
  size: number;
}

export interface EngineOptions {
  device: string;
  /** The engine's unix socket; default: DOCKER_HOST, else /var/run/docker.sock (dockerode's defaults). */
  socketPath?: string | undefined;
  pingTimeoutMs?: number;
}

export interface Engine {
  readonly where: string;
  status(): Promise<EngineStatus>;
  /** Throws `unavailable` with the reason when the engine does not answer. */
  require(): Promise<Docker>;
  listOwned(app?: string): Promise<OwnedContainer[]>;
  inspectOwned(idOrName: string): Promise<OwnedContainer | undefined>;
  create(options: Docker.ContainerCreateOptions): Promise<string>;
  start(id: string): Promise<void>;
  stop(id: string, timeoutS: number): Promise<void>;
  remove(id: string): Promise<void>;
  logs(id: string, lines: number): Promise<string[]>;
  image(idOrTag: string): Promise<ImageInfo | undefined>;
  /** IDs of every image on the engine (to know afterwards what a load added). */
  imageIds(): Promise<Set<string>>;
  /** Loads an archive stream; resolves with the image IDs the engine reports it loaded. */
  load(archive: NodeJS.ReadableStream): Promise<string[]>;
  tag(id: string, repo: string, tag: string): Promise<void>;
  /** Removes a tag, or an image by ID; layers other images share stay. */
  removeImage(ref: string): Promise<void>;
}

const STATES = new Set<ContainerState['state']>(['created', 'running', 'paused', 'restarting', 'removing', 'exited', 'dead']);
const HEALTH = new Set<ContainerState['health']>(['starting', 'healthy', 'unhealthy']);

function epoch(iso: string | undefined): number | null {
  if (!iso || iso.startsWith('0001-')) return null;
  const t = Date.parse(iso);
  return Number.isFinite(t) ? t : null;
}

function observed(info: Docker.ContainerInspectInfo): OwnedContainer {
  const labels = info.Config.Labels ?? {};
  const ports: Record<string, number> = {};
  for (const [key, bindings] of Object.entries(info.NetworkSettings?.Ports ?? {})) {
    const hostPort = Number(bindings?.[0]?.HostPort);
    if (Number.isInteger(hostPort) && hostPort > 0) ports[key] = hostPort;
  }
  const status = info.State.Status as ContainerState['state'];
  const health = info.State.Health?.Status as ContainerState['health'] | undefined;
  return {
    app: labels[LABELS.app] ?? '',
    version: Number(labels[LABELS.version]),
    role: (labels[LABELS.role] === 'inference' ? 'inference' : 'app') as ContainerRole,
    id: info.Id,
    name: info.Name.replace(/^\//, ''),
    image: info.Image,
    state: STATES.has(status) ? status : 'dead',
    running: info.State.Running,
    health: health && HEALTH.has(health) ? health : 'none',
    restarts: info.RestartCount,
    created: epoch(info.Created) ?? 0,
    startedAt: info.State.Running ? epoch(info.State.StartedAt) : null,
    exitCode: info.State.Running ? null : info.State.ExitCode,
    ports,
  };
}

/** Splits Docker's multiplexed log stream (8-byte frame headers) into lines; a TTY container's plain bytes pass as they are. */
export function demuxLogs(buffer: Buffer): string[] {
  const parts: Buffer[] = [];
  let offset = 0;
  const framed = buffer.length >= 8 && buffer[0]! <= 2 && buffer[1] === 0 && buffer[2] === 0 && buffer[3] === 0;
  if (!framed) parts.push(buffer);
  while (framed && offset + 8 <= buffer.length) {
    const size = buffer.readUInt32BE(offset + 4);
    parts.push(buffer.subarray(offset + 8, offset + 8 + size));
    offset += 8 + size;
  }
  const text = Buffer.concat(parts).toString('utf8');
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

function engineError(error: unknown, what: string): FleetError {
  if (error instanceof FleetError) return error;
  const e = error as { statusCode?: number; json?: { message?: string }; message?: string };
  const message = e.json?.message ?? e.message ?? String(error);
  if (e.statusCode === 404) return new FleetError('not_found', `${what}: ${message}`);
  if (e.statusCode === 409) return new FleetError('conflict', `${what}: ${message}`);
  return new FleetError('internal', `${what}: the Docker engine answered: ${message}`);
}

export function openEngine(opts: EngineOptions): Engine {
  const where = opts.socketPath ?? process.env.DOCKER_HOST ?? '/var/run/docker.sock';
  let client: Promise<Docker> | undefined;
  const docker = (): Promise<Docker> =>
    // imported on first use: dockerode takes ~0.6 s to load, which an agent without containers need not pay
    (client ??= import('dockerode').then(({ default: Dockerode }) => (opts.socketPath ? new Dockerode({ socketPath: opts.socketPath }) : new Dockerode())));

  async function status(): Promise<EngineStatus> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const d = await docker();
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${opts.pingTimeoutMs ?? 1500} ms`)), opts.pingTimeoutMs ?? 1500);
      });
      const info = (await Promise.race([d.info(), timeout])) as { ServerVersion?: string; DockerRootDir?: string };
      return { available: true, version: info.ServerVersion ?? null, reason: null, rootDir: info.DockerRootDir ?? null };
    } catch (error) {
      const message = (error as Error).message ?? String(error);
      return { available: false, version: null, reason: `no Docker engine answers at ${where} (${message})`, rootDir: null };
    } finally {
      clearTimeout(timer);
    }
  }

  async function require(): Promise<Docker> {
    const s = await status();
    if (!s.available) {
      throw new FleetError('unavailable', `${s.reason}; install and start the engine (docker.io) and give the agent access to its socket (SupplementaryGroups=docker)`);
    }
    return docker();
  }

  async function inspectOwned(idOrName: string): Promise<OwnedContainer | undefined> {
    const d = await require();
    let info: Docker.ContainerInspectInfo;
    try {
      info = await d.getContainer(idOrName).inspect();
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 404) return undefined;
      throw engineError(error, `inspecting container ${idOrName}`);
    }
    return isOwned(info.Config.Labels, opts.device) ? observed(info) : undefined;
  }

  /** The container, if the fleet owns it on this device; anything else is refused before it is touched. */
  async function owned(id: string, what: string): Promise<Docker.Container> {
    const found = await inspectOwned(id);
    if (!found) throw new FleetError('not_found', `${what}: container ${id} is not one this device's agent owns; it is left alone`);
    return (await docker()).getContainer(found.id);
  }

  return {
    where,
    status,
    require,
    inspectOwned,

    async listOwned(app) {
      const d = await require();
      const list = await d.listContainers({ all: true, filters: ownedFilter(opts.device, app) }).catch((error: unknown) => {
        throw engineError(error, 'listing containers');
      });
      const out: OwnedContainer[] = [];
      for (const c of list) {
        if (!isOwned(c.Labels, opts.device)) continue; // the filter is the engine's; this check is ours
        const found = await inspectOwned(c.Id);
        if (found && (app === undefined || found.app === app)) out.push(found);
      }
      return out.sort((a, b) => a.created - b.created || a.name.localeCompare(b.name));
    },

    async create(options) {
      const d = await require();
      if (!isOwned(options.Labels, opts.device)) throw new FleetError('internal', 'refusing to create a container without the fleet labels');
      try {
        return (await d.createContainer(options)).id;
      } catch (error) {
        throw engineError(error, `creating container ${options.name ?? ''}`);
      }
    },

    async start(id) {
      const c = await owned(id, 'start');
      await c.start().catch((error: { statusCode?: number }) => {
        if (error.statusCode !== 304) throw engineError(error, `starting ${id}`); // 304: already running
      });
    },

    async stop(id, timeoutS) {
      const c = await owned(id, 'stop');
      await c.stop({ t: timeoutS }).catch((error: { statusCode?: number }) => {
        if (error.statusCode !== 304) throw engineError(error, `stopping ${id}`); // 304: already stopped
      });
    },

    async remove(id) {
      const c = await owned(id, 'remove');
      await c.remove({ force: true, v: false }).catch((error: { statusCode?: number }) => {
        if (error.statusCode !== 404) throw engineError(error, `removing ${id}`); // 404: already gone
      });
    },

    async logs(id, lines) {
      const c = await owned(id, 'logs');
      const buffer = (await c.logs({ stdout: true, stderr: true, tail: lines, follow: false })) as unknown as Buffer;
      return demuxLogs(Buffer.isBuffer(buffer) ? buffer : Buffer.from(String(buffer))).slice(-lines);
    },

    async image(ref) {
      const d = await require();
      try {
        const info = (await d.getImage(ref).inspect()) as Docker.ImageInspectInfo & { Variant?: string };
        return {
          id: info.Id,
          os: info.Os,
          architecture: info.Architecture,
          variant: info.Variant || undefined,
          tags: info.RepoTags ?? [],
          size: info.Size,
        };
      } catch (error) {
        if ((error as { statusCode?: number }).statusCode === 404) return undefined;
        throw engineError(error, `inspecting image ${ref}`);
      }
    },

    async imageIds() {
      const d = await require();
      const list = await d.listImages({ all: true }).catch((error: unknown) => {
        throw engineError(error, 'listing images');
      });
      return new Set(list.map((i) => i.Id));
    },

    async load(archive) {
      const d = await require();
      const stream = await d.loadImage(archive, { quiet: true }).catch((error: unknown) => {
        throw engineError(error, 'loading the image archive');
      });
      // The answer is JSON lines: {"stream": "Loaded image ID: sha256:…"} per image, {"error": …} on failure.
      const loaded: string[] = [];
      let failure: string | undefined;
      let rest = '';
      const onLine = (line: string): void => {
        if (line.trim() === '') return;
        let event: { stream?: string; error?: string; errorDetail?: { message?: string } };
        try {
          event = JSON.parse(line) as typeof event;
        } catch {
          failure ??= `unexpected answer: ${line.slice(0, 200)}`;
          return;
        }
        if (event.error !== undefined) failure ??= event.errorDetail?.message ?? event.error;
        const m = /Loaded image ID: (sha256:[0-9a-f]{64})/.exec(event.stream ?? '');
        if (m) loaded.push(m[1]!);
      };
      try {
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          const lines = (rest + chunk.toString('utf8')).split('\n');
          rest = lines.pop() ?? '';
          lines.forEach(onLine);
        }
        onLine(rest);
      } catch (error) {
        failure ??= (error as Error).message;
      }
      if (failure !== undefined) throw new FleetError('load_failed', `the engine refused the image archive: ${failure}`);
      return loaded;
    },

    async tag(id, repo, tag) {
      const d = await require();
      await d
        .getImage(id)
        .tag({ repo, tag })
        .catch((error: unknown) => {
          throw engineError(error, `tagging ${id} as ${repo}:${tag}`);
        });
    },

    async removeImage(ref) {
      const d = await require();
      await d
        .getImage(ref)
        .remove({ noprune: false })
        .catch((error: { statusCode?: number }) => {
          if (error.statusCode !== 404) throw engineError(error, `removing image ${ref}`);
        });
    },
  };
}
