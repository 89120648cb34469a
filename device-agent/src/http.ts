/**
 * The agent's local HTTP inference API (node:http, no framework), in two route families on one codec:
 *
 * The Open Inference Protocol (KServe V2 REST), with the binary tensor data extension:
 *   GET  /v2                                             server metadata (name, version, extensions)
 *   GET  /v2/health/live, /v2/health/ready               liveness, readiness
 *   GET  /v2/models/{name}[/versions/{version}]          model metadata (datatypes, shapes with -1)
 *   GET  /v2/models/{name}[/versions/{version}]/ready    model readiness
 *   POST /v2/models/{name}[/versions/{version}]/infer    inference
 *   errors: {"error": "..."}
 *
 * The original inference-server routes:
 *   GET  /models, /models/{name}, /models/{name}/v{version}
 *   POST /models/{name}[/v{version}]
 *   errors: {"error": {"code", "message"}}
 *
 * Every POST takes either body form (infer.ts) and is answered in that form. A name that no active model
 * has but an image app serves is answered by the app's container (inference-target.ts), as MQTT `infer` is;
 * the metadata and ready routes describe models only (ask the app's own server for its metadata). A binary body is read into
 * one buffer allocated from its Content-Length, placed so its binary part starts 8-byte aligned, and
 * input tensors are views into it; binary outputs are written straight from their tensors' buffers.
 * Statuses: 400 bad input, 404 unknown model/version/route, 405, 413 over the body limit, 415 a content
 * type or encoding other than JSON / octet-stream, 500 a run that failed, 503 shutting down or not ready.
 * Binds 127.0.0.1 unless told otherwise.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FleetError, OIP_EXTENSIONS, OIP_PLATFORM, errorResponse, inferBodyFormat, isValidName, oipTensorMetadata, parseInferBody, splitInferBody } from '@edgefleet/protocol';
import type { ModelState } from '@edgefleet/protocol';
import type { Logger } from 'pino';
import type { InferAnswer, InferParams } from './models/infer.js';
import type { ModelService } from './models/service.js';
import { appFor } from './inference-target.js';
import type { InferenceApps } from './inference-target.js';

export interface InferenceServerOptions {
  host?: string;
  /** 0 picks a free port; the bound one is returned. */
  port: number;
  logger: Logger;
  /** Largest request body accepted, in bytes; default 64 MiB (the agent's httpMaxBodyMb). */
  maxBodyBytes?: number;
  /** Reported by GET /v2. */
  serverVersion?: string;
  /** Answers GET /metrics (the agent's Prometheus metrics, metrics.ts). */
  metrics?: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
  /** Image apps that serve inference: POST infer for a name no active model has goes to its container. */
  apps?: InferenceApps;
}

export interface InferenceServer {
  port: number;
  /** Requests being handled right now. */
  readonly inflight: number;
  /** Stops accepting connections, lets requests in flight finish, then closes every connection. */
  close(): Promise<void>;
}

export const DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024;
export const SERVER_NAME = 'edgefleet-device-agent';

// ---------------------------------------------------------------- routes (pure)

export type Route =
  | { api: 'v2'; kind: 'server' | 'live' | 'ready' }
  | { api: 'v2'; kind: 'model' | 'model-ready' | 'infer'; name: string; version: number | undefined }
  | { api: 'models'; name: string | undefined; version: number | undefined };

const LEGACY = /^\/models(?:\/([^/]+)(?:\/v(\d{1,9}))?)?\/?$/;
const V2_MODEL = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(?:\/(ready|infer))?\/?$/;

function modelName(raw: string, api: Route['api']): string {
  let name: string;
  try {
    name = decodeURIComponent(raw);
  } catch {
    throw new FleetError('not_found', `"${raw}" is not a valid model name`); // malformed %-escape
  }
  if (!isValidName(name)) throw new FleetError('not_found', `"${name}" is not a valid model name${api === 'v2' ? '' : '; try GET /models'}`);
  return name;
}

/** The route of a path; throws 404 for a path that is none. */
export function parseRoute(path: string): Route {
  if (path === '/v2' || path === '/v2/') return { api: 'v2', kind: 'server' };
  if (path === '/v2/health/live') return { api: 'v2', kind: 'live' };
  if (path === '/v2/health/ready') return { api: 'v2', kind: 'ready' };
  const v2 = V2_MODEL.exec(path);
  if (v2) {
    const name = modelName(v2[1]!, 'v2');
    let version: number | undefined;
    if (v2[2] !== undefined) {
      const m = /^v?(\d{1,9})$/.exec(v2[2]);
      if (!m || Number(m[1]) < 1) throw new FleetError('not_found', `model ${name} has no version "${v2[2]}"; versions are positive integers (GET /v2/models/${name} lists them)`);
      version = Number(m[1]);
    }
    const kind = v2[3] === 'ready' ? 'model-ready' : v2[3] === 'infer' ? 'infer' : 'model';
    return { api: 'v2', kind, name, version };
  }
  if (path.startsWith('/v2')) throw new FleetError('not_found', `no route ${path}; see GET /v2 and GET /v2/models/{name}`);
  const legacy = LEGACY.exec(path);
  if (!legacy) throw new FleetError('not_found', `no route ${path}; try GET /models or GET /v2`);
  return {
    api: 'models',
    name: legacy[1] === undefined ? undefined : modelName(legacy[1], 'models'),
    version: legacy[2] === undefined ? undefined : Number(legacy[2]),
  };
}

// ---------------------------------------------------------------- bodies

const MiB = 1024 * 1024;
function limitText(maxBody: number): string {
  const size = maxBody % MiB === 0 ? `${maxBody / MiB} MiB (${maxBody}-byte)` : `${maxBody}-byte`;
  return `the ${size} limit; raise it with the agent's httpMaxBodyMb (--http-max-body-mb, EDGEFLEET_HTTP_MAX_BODY_MB)`;
}

/** Checks the body's declared form before reading it (the protocol's inferBodyFormat). */
export const bodyFormat = (headers: IncomingMessage['headers']): { headerLength: number | undefined } => inferBodyFormat(headers);

/**
 * Body buffers kept for the next large request. A fresh multi-megabyte buffer costs a page fault per 4 KiB
 * page on first touch (about 1 ms for a 5 MB body here, more than the copy itself); a reused one does not.
 * A buffer comes back only once its request has finished (its tensors were views into it), and the pool
 * holds at most `maxBytes` in all.
 */
export class BodyPool {
  private readonly free: Buffer[] = [];
  constructor(
    private readonly minBytes = 1024 * 1024,
    private readonly maxBytes = 32 * 1024 * 1024,
  ) {}

  /** A buffer of at least `size` bytes (its first `size` are the caller's). */
  take(size: number): Buffer {
    if (size < this.minBytes) return Buffer.allocUnsafeSlow(size);
    const i = this.free.findIndex((b) => b.byteLength >= size);
    if (i >= 0) return this.free.splice(i, 1)[0]!;
    return Buffer.allocUnsafeSlow(Math.ceil(size / this.minBytes) * this.minBytes);
  }

  give(buffer: Buffer): void {
    // a detached buffer (moved to a worker) or a small one is not worth keeping
    if (buffer.byteLength < this.minBytes || buffer.buffer.byteLength === 0) return;
    const held = this.free.reduce((sum, b) => sum + b.byteLength, 0);
    if (held + buffer.byteLength > this.maxBytes) return;
    this.free.push(buffer);
  }
}

/**
 * Reads the whole body into one buffer: sized by Content-Length up front (each chunk copied in once), or
 * gathered and joined once for a chunked body. With a binary part, the buffer starts `pad` bytes early so
 * the binary part lands 8-byte aligned and typed arrays can view it in place. The buffer comes from the
 * pool and is listed in `held`, to go back once the request is over.
 */
function readBody(req: IncomingMessage, maxBody: number, headerLength: number | undefined, pool: BodyPool, held: Buffer[]): Promise<Uint8Array> {
  const declared = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
  if (declared !== undefined && declared > maxBody) {
    return Promise.reject(new FleetError('too_long', `the request body of ${declared} bytes is over ${limitText(maxBody)}`));
  }
  const pad = headerLength === undefined ? 0 : (8 - (headerLength % 8)) % 8;
  return new Promise((resolve, reject) => {
    const take = (size: number): Buffer => {
      const buffer = pool.take(size);
      held.push(buffer);
      return buffer;
    };
    let body = declared === undefined ? undefined : take(pad + declared);
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      if (size + chunk.length > maxBody || (body && size + chunk.length > declared!)) {
        req.removeAllListeners('data');
        req.pause();
        reject(new FleetError('too_long', `the request body is over ${limitText(maxBody)}`));
        return;
      }
      if (body) chunk.copy(body, pad + size);
      else chunks.push(chunk);
      size += chunk.length;
    });
    req.on('end', () => {
      if (!body) {
        body = take(pad + size);
        let offset = pad;
        for (const c of chunks) offset += c.copy(body, offset);
      }
      resolve(body.subarray(pad, pad + size));
    });
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------- handlers

/** What the request handlers share. */
interface Context {
  models: ModelService;
  apps: InferenceApps | undefined;
  logger: Logger;
  maxBody: number;
  pool: BodyPool;
  serverVersion: string;
  closing(): boolean;
}

function send(ctx: Context, res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent || res.destroyed) return;
  const json = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(json),
    ...(ctx.closing() ? { connection: 'close' } : {}),
  });
  res.end(json);
}

/** The answer in JSON, or its JSON header followed by the binary outputs (each written from its tensor's buffer). */
function sendAnswer(ctx: Context, res: ServerResponse, answer: InferAnswer): void {
  if (answer.binary.length === 0) return send(ctx, res, 200, answer.result);
  if (res.headersSent || res.destroyed) return;
  const header = Buffer.from(JSON.stringify(answer.result), 'utf8');
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'inference-header-content-length': header.byteLength,
    'content-length': header.byteLength + answer.binary.reduce((sum, b) => sum + b.byteLength, 0),
    ...(ctx.closing() ? { connection: 'close' } : {}),
  });
  res.cork();
  res.write(header);
  for (const b of answer.binary) res.write(b);
  res.end();
  res.uncork();
}

function sendError(ctx: Context, res: ServerResponse, api: Route['api'], error: unknown): void {
  if (!(error instanceof FleetError)) ctx.logger.error({ err: error }, 'inference API request failed');
  const { status, body } = errorResponse(error);
  send(ctx, res, status, api === 'v2' ? { error: body.error.message } : body);
}

async function infer(ctx: Context, req: IncomingMessage, res: ServerResponse, name: string, version: number | undefined): Promise<void> {
  const { headerLength } = bodyFormat(req.headers);
  const held: Buffer[] = [];
  try {
    const bytes = await readBody(req, ctx.maxBody, headerLength, ctx.pool, held);
    const { json, binary } = splitInferBody(bytes, headerLength);
    const body = parseInferBody(json);
    const params = { ...body, model: name, ...(version !== undefined ? { version } : {}) } as InferParams;
    const target = appFor(name, ctx.models, ctx.apps) ?? ctx.models;
    sendAnswer(ctx, res, await target.answer(params, binary));
  } finally {
    // the run is over (answered or failed): nothing views the body any more
    for (const buffer of held) ctx.pool.give(buffer);
  }
}

function modelState(ctx: Context, name: string): ModelState {
  const state = ctx.models.list().find((m) => m.name === name);
  if (!state) throw new FleetError('not_found', `model "${name}" is not on this device`);
  return state;
}

async function handleV2(ctx: Context, req: IncomingMessage, res: ServerResponse, route: Extract<Route, { api: 'v2' }>): Promise<void> {
  const method = req.method === 'HEAD' ? 'GET' : req.method;
  const wanted = route.kind === 'infer' ? 'POST' : 'GET';
  if (method !== wanted) {
    res.setHeader('allow', wanted === 'GET' ? 'GET, HEAD' : 'POST');
    throw new FleetError('method_not_allowed', `${req.method} is not supported here; use ${wanted}`);
  }
  switch (route.kind) {
    case 'server':
      return send(ctx, res, 200, { name: SERVER_NAME, version: ctx.serverVersion ?? '0.0.0', extensions: [...OIP_EXTENSIONS] });
    case 'live':
      return send(ctx, res, 200, { live: true });
    case 'ready':
      return ctx.closing() ? send(ctx, res, 503, { ready: false, error: 'the agent is shutting down' }) : send(ctx, res, 200, { ready: true });
    case 'model': {
      const state = modelState(ctx, route.name);
      const described = ctx.models.describe(route.name, route.version);
      return send(ctx, res, 200, {
        name: route.name,
        versions: state.versions.map(String),
        platform: OIP_PLATFORM,
        inputs: described.inputs.map(oipTensorMetadata),
        outputs: described.outputs.map(oipTensorMetadata),
      });
    }
    case 'model-ready': {
      const state = modelState(ctx, route.name);
      if (route.version !== undefined && !state.versions.includes(route.version)) {
        throw new FleetError('not_found', `${route.name}@${route.version} is not on this device (versions: ${state.versions.join(', ') || 'none'})`);
      }
      const ready = !ctx.closing() && state.active !== null && (route.version === undefined || state.active === route.version);
      if (ready) return send(ctx, res, 200, { name: route.name, ready: true });
      const why = ctx.closing() ? 'the agent is shutting down' : state.active === null ? `no version of ${route.name} is active` : `the active version is ${state.active}`;
      return send(ctx, res, 503, { name: route.name, ready: false, error: `${route.name}${route.version ? `@${route.version}` : ''} is not ready: ${why}` });
    }
    case 'infer':
      return infer(ctx, req, res, route.name, route.version);
  }
}

async function handleModels(ctx: Context, req: IncomingMessage, res: ServerResponse, route: Extract<Route, { api: 'models' }>): Promise<void> {
  const { name, version } = route;
  if (req.method === 'GET' || req.method === 'HEAD') {
    if (name === undefined) return send(ctx, res, 200, { models: ctx.models.list() });
    const state = modelState(ctx, name);
    const described = ctx.models.describe(name, version);
    return send(ctx, res, 200, { ...described, active: state.active, versions: state.versions });
  }
  if (req.method === 'POST' && name !== undefined) return infer(ctx, req, res, name, version);
  res.setHeader('allow', name === undefined ? 'GET' : 'GET, POST');
  throw new FleetError('method_not_allowed', `${req.method} is not supported on ${req.url?.split('?')[0]}`);
}

/** After an answer given before the body was read: close, and discard (not buffer) what still comes, up to a bound. */
function discardRest(req: IncomingMessage, res: ServerResponse, maxBody: number): void {
  if (req.complete) return;
  res.setHeader('connection', 'close');
  let discarded = 0;
  req.removeAllListeners('data');
  req.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > 4 * maxBody) req.socket.destroy();
  });
  req.resume();
}

export async function createInferenceServer(models: ModelService, opts: InferenceServerOptions): Promise<InferenceServer> {
  const logger = opts.logger;
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  let inflight = 0;
  let closing = false;
  let idle: (() => void) | undefined;
  const ctx: Context = { models, apps: opts.apps, logger, maxBody, pool: new BodyPool(), serverVersion: opts.serverVersion ?? '0.0.0', closing: () => closing };

  const server = createServer({ keepAliveTimeout: 5000 }, (req, res) => {
    inflight++;
    res.on('close', () => {
      if (--inflight === 0) idle?.();
    });
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    let api: Route['api'] = path.startsWith('/v2') ? 'v2' : 'models';
    const handled = (async () => {
      if (path === '/metrics' && opts.metrics && (req.method === 'GET' || req.method === 'HEAD')) return opts.metrics(req, res);
      const route = parseRoute(path);
      api = route.api;
      return route.api === 'v2' ? handleV2(ctx, req, res, route) : handleModels(ctx, req, res, route);
    })();
    handled.catch((error: unknown) => {
      discardRest(req, res, maxBody);
      sendError(ctx, res, api, error);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  logger.info({ host: opts.host ?? '127.0.0.1', port, maxBodyBytes: maxBody }, 'inference API listening');

  return {
    port,
    get inflight() {
      return inflight;
    },
    async close() {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      if (inflight > 0) await new Promise<void>((resolve) => (idle = resolve));
      server.closeAllConnections();
      await closed;
    },
  };
}
