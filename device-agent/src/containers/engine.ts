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
  /**
   * Asks the engine; no answer within `timeoutMs` counts as absent. The default is short (status and
   * telemetry must not wait); operations that need the engine wait longer for a busy one.
   */
  status(timeoutMs?: number): Promise<EngineStatus>;
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

const SOCKET_ERRORS = new Set(['ENOENT', 'ECONNREFUSED', 'EACCES', 'EPERM', 'ECONNRESET', 'ETIMEDOUT']);

const statusOf = (error: unknown): number | undefined => (error as { statusCode?: number }).statusCode;

/** 404 as undefined, everything else thrown through engineError. */
async function orAbsent<T>(call: Promise<T>, error: (e: unknown) => FleetError): Promise<T | undefined> {
  try {
    return await call;
  } catch (e) {
    if (statusOf(e) === 404) return undefined;
    throw error(e);
  }
}

/** Docker engine access for one device's agent (see the file comment). */
/** How long an operation that needs the engine waits for a busy one to answer. */
export const BUSY_ENGINE_MS = 20_000;

export class DockerEngine implements Engine {
  readonly where: string;
  private client: Promise<Docker> | undefined;

  constructor(private readonly opts: EngineOptions) {
    this.where = opts.socketPath ?? process.env.DOCKER_HOST ?? '/var/run/docker.sock';
  }

  private docker(): Promise<Docker> {
    // imported on first use: dockerode takes ~0.6 s to load, which an agent without containers need not pay
    this.client ??= import('dockerode').then(({ default: Dockerode }) => (this.opts.socketPath ? new Dockerode({ socketPath: this.opts.socketPath }) : new Dockerode()));
    return this.client;
  }

  /** An engine error as a FleetError; a socket that cannot be reached is `unavailable`, with what to do. */
  private error(error: unknown, what: string): FleetError {
    if (error instanceof FleetError) return error;
    const e = error as { statusCode?: number; json?: { message?: string }; message?: string; code?: string };
    const message = e.json?.message ?? e.message ?? String(error);
    if (e.code && SOCKET_ERRORS.has(e.code)) {
      return new FleetError('unavailable', `no Docker engine answers at ${this.where} (${message}); install and start the engine (docker.io) and give the agent access to its socket (SupplementaryGroups=docker)`);
    }
    if (e.statusCode === 404) return new FleetError('not_found', `${what}: ${message}`);
    if (e.statusCode === 409) return new FleetError('conflict', `${what}: ${message}`);
    return new FleetError('internal', `${what}: the Docker engine answered: ${message}`);
  }

  async status(timeoutMs?: number): Promise<EngineStatus> {
    const ms = timeoutMs ?? this.opts.pingTimeoutMs ?? 1500;
    let timer: NodeJS.Timeout | undefined;
    try {
      const d = await this.docker();
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
      });
      const info = (await Promise.race([d.info(), timeout])) as { ServerVersion?: string; DockerRootDir?: string };
      return { available: true, version: info.ServerVersion ?? null, reason: null, rootDir: info.DockerRootDir ?? null };
    } catch (error) {
      return { available: false, version: null, reason: `no Docker engine answers at ${this.where} (${(error as Error).message ?? String(error)})`, rootDir: null };
    } finally {
      clearTimeout(timer);
    }
  }

  async require(): Promise<Docker> {
    // a socket nobody listens on fails at once; an engine that is there but busy (loading an image) is waited for
    const s = await this.status(BUSY_ENGINE_MS);
    if (!s.available) throw new FleetError('unavailable', `${s.reason}; install and start the engine (docker.io) and give the agent access to its socket (SupplementaryGroups=docker)`);
    return this.docker();
  }

  async inspectOwned(idOrName: string): Promise<OwnedContainer | undefined> {
    const d = await this.docker();
    const info = await orAbsent(d.getContainer(idOrName).inspect(), (e) => this.error(e, `inspecting container ${idOrName}`));
    return info && isOwned(info.Config.Labels, this.opts.device) ? observed(info) : undefined;
  }

  /** The container, if the fleet owns it on this device; anything else is refused before it is touched. */
  private async owned(id: string, what: string): Promise<Docker.Container> {
    const found = await this.inspectOwned(id);
    if (!found) throw new FleetError('not_found', `${what}: container ${id} is not one this device's agent owns; it is left alone`);
    return (await this.docker()).getContainer(found.id);
  }

  async listOwned(app?: string): Promise<OwnedContainer[]> {
    const d = await this.docker();
    const list = await d.listContainers({ all: true, filters: ownedFilter(this.opts.device, app) }).catch((error: unknown) => {
      throw this.error(error, 'listing containers');
    });
    const out: OwnedContainer[] = [];
    for (const c of list) {
      if (!isOwned(c.Labels, this.opts.device)) continue; // the filter is the engine's; this check is ours
      const found = await this.inspectOwned(c.Id);
      if (found && (app === undefined || found.app === app)) out.push(found);
    }
    return out.sort((a, b) => a.created - b.created || a.name.localeCompare(b.name));
  }

  async create(options: Docker.ContainerCreateOptions): Promise<string> {
    if (!isOwned(options.Labels, this.opts.device)) throw new FleetError('internal', 'refusing to create a container without the fleet labels');
    const d = await this.docker();
    try {
      return (await d.createContainer(options)).id;
    } catch (error) {
      throw this.error(error, `creating container ${options.name ?? ''}`);
    }
  }

  async start(id: string): Promise<void> {
    const c = await this.owned(id, 'start');
    await c.start().catch((error: unknown) => {
      if (statusOf(error) !== 304) throw this.error(error, `starting ${id}`); // 304: already running
    });
  }

  async stop(id: string, timeoutS: number): Promise<void> {
    const c = await this.owned(id, 'stop');
    await c.stop({ t: timeoutS }).catch((error: unknown) => {
      if (statusOf(error) !== 304) throw this.error(error, `stopping ${id}`); // 304: already stopped
    });
  }

  async remove(id: string): Promise<void> {
    const c = await this.owned(id, 'remove');
    await orAbsent(c.remove({ force: true, v: false }), (e) => this.error(e, `removing ${id}`));
  }

  async logs(id: string, lines: number): Promise<string[]> {
    const c = await this.owned(id, 'logs');
    const buffer = (await c.logs({ stdout: true, stderr: true, tail: lines, follow: false })) as unknown as Buffer;
    return demuxLogs(Buffer.isBuffer(buffer) ? buffer : Buffer.from(String(buffer))).slice(-lines);
  }

  async image(ref: string): Promise<ImageInfo | undefined> {
    const d = await this.docker();
    const info = (await orAbsent(d.getImage(ref).inspect(), (e) => this.error(e, `inspecting image ${ref}`))) as (Docker.ImageInspectInfo & { Variant?: string }) | undefined;
    if (!info) return undefined;
    return { id: info.Id, os: info.Os, architecture: info.Architecture, variant: info.Variant || undefined, tags: info.RepoTags ?? [], size: info.Size };
  }

  async imageIds(): Promise<Set<string>> {
    const d = await this.docker();
    const list = await d.listImages({ all: true }).catch((error: unknown) => {
      throw this.error(error, 'listing images');
    });
    return new Set(list.map((i) => i.Id));
  }

  async load(archive: NodeJS.ReadableStream): Promise<string[]> {
    const d = await this.docker();
    const stream = await d.loadImage(archive, { quiet: true }).catch((error: unknown) => {
      throw this.error(error, 'loading the image archive');
    });
    return readLoadAnswer(stream);
  }

  async tag(id: string, repo: string, tag: string): Promise<void> {
    const d = await this.docker();
    await d
      .getImage(id)
      .tag({ repo, tag })
      .catch((error: unknown) => {
        throw this.error(error, `tagging ${id} as ${repo}:${tag}`);
      });
  }

  async removeImage(ref: string): Promise<void> {
    const d = await this.docker();
    await orAbsent(d.getImage(ref).remove({ noprune: false }), (e) => this.error(e, `removing image ${ref}`));
  }
}

/** The answer to a load is JSON lines: {"stream": "Loaded image ID: sha256:…"} per image, {"error": …} on failure. */
async function readLoadAnswer(stream: NodeJS.ReadableStream): Promise<string[]> {
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
}

export function openEngine(opts: EngineOptions): Engine {
  return new DockerEngine(opts);
}
