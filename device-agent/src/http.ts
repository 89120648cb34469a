/**
 * The agent's local HTTP inference API (node:http, no framework), shaped like an inference server:
 *
 *   GET  /models                      every model: active version, stored versions, inputs, outputs
 *   GET  /models/{name}               the active version's inputs and outputs (names, dtypes, shapes)
 *   GET  /models/{name}/v{version}    one stored version's inputs and outputs
 *   POST /models/{name}               infer on the active version: {inputs: {name: {dtype, shape, data}}} or {raw: {...}}
 *   POST /models/{name}/v{version}    the same, refused unless that version is the one being served
 *
 * Errors are `{error: {code, message}}` with 400 (bad JSON, invalid input), 404 (unknown model or route),
 * 405, 413 (body over the limit), 409, 503, 500 (statuses from the protocol's error table). Binds 127.0.0.1
 * unless told otherwise.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FleetError, errorResponse, isValidName } from '@edgefleet/protocol';
import type { ErrorCode, ParsedParams } from '@edgefleet/protocol';
import type { Logger } from 'pino';
import type { ModelService } from './models/service.js';

export interface InferenceServerOptions {
  host?: string;
  /** 0 picks a free port; the bound one is returned. */
  port: number;
  logger: Logger;
  /** Largest request body accepted, in bytes; default 16 MiB. */
  maxBodyBytes?: number;
  /** Answers GET /metrics (the agent's Prometheus metrics, metrics.ts). */
  metrics?: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
}

export interface InferenceServer {
  port: number;
  /** Requests being handled right now. */
  readonly inflight: number;
  /** Stops accepting connections, lets requests in flight finish, then closes every connection. */
  close(): Promise<void>;
}

class HttpError extends FleetError {
  constructor(
    readonly status: number,
    code: ErrorCode,
    message: string,
  ) {
    super(code, message);
  }
}

const ROUTE = /^\/models(?:\/([^/]+)(?:\/v(\d{1,9}))?)?\/?$/;

export async function createInferenceServer(models: ModelService, opts: InferenceServerOptions): Promise<InferenceServer> {
  const logger = opts.logger;
  const maxBody = opts.maxBodyBytes ?? 16 * 1024 * 1024;
  let inflight = 0;
  let closing = false;
  let idle: (() => void) | undefined;

  function send(res: ServerResponse, status: number, body: unknown): void {
    if (res.headersSent || res.destroyed) return;
    const json = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(json),
      ...(closing ? { connection: 'close' } : {}),
    });
    res.end(json);
  }

  function sendError(res: ServerResponse, error: unknown): void {
    if (!(error instanceof FleetError)) logger.error({ err: error }, 'inference API request failed');
    const { status, body } = errorResponse(error);
    send(res, error instanceof HttpError ? error.status : status, body);
  }

  function readBody(req: IncomingMessage): Promise<Buffer> {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBody) {
      return Promise.reject(new HttpError(413, 'too_long', `request body of ${declared} bytes is over the ${maxBody}-byte limit`));
    }
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBody) {
          req.removeAllListeners('data');
          req.pause();
          reject(new HttpError(413, 'too_long', `request body is over the ${maxBody}-byte limit`));
          return;
        }
        chunks.push(chunk);
      });
      req.on('end', () => resolve(Buffer.concat(chunks, size)));
      req.on('error', reject);
    });
  }

  function parseInferBody(raw: Buffer, model: string, version: number | undefined): ParsedParams<'infer'> {
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      throw new HttpError(400, 'bad_request', 'the request body is not JSON; send {"inputs": {...}} or {"raw": {...}}');
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new HttpError(400, 'bad_request', 'the request body must be a JSON object: {"inputs": {...}} or {"raw": {...}}');
    }
    const { inputs, raw: rawInput, ...rest } = body as Record<string, unknown>;
    const unknown = Object.keys(rest);
    if (unknown.length > 0) throw new HttpError(400, 'invalid_params', `unknown field(s) ${unknown.join(', ')}; send "inputs" or "raw"`);
    if (inputs !== undefined && (inputs === null || typeof inputs !== 'object' || Array.isArray(inputs))) {
      throw new HttpError(400, 'invalid_input', '"inputs" must be an object of {name: {dtype, shape, data}}');
    }
    let parsedRaw: ParsedParams<'infer'>['raw'];
    if (rawInput !== undefined) {
      const r = rawInput as Record<string, unknown> | null;
      if (r !== null && typeof r === 'object' && typeof r.text === 'string') parsedRaw = { text: r.text };
      else if (r !== null && typeof r === 'object' && typeof r.imageBase64 === 'string') parsedRaw = { imageBase64: r.imageBase64 };
      else throw new HttpError(400, 'invalid_input', '"raw" must be {"text": "..."} or {"imageBase64": "..."}');
    }
    const params: ParsedParams<'infer'> = { model };
    if (version !== undefined) params.version = version;
    if (inputs !== undefined) params.inputs = inputs as ParsedParams<'infer'>['inputs'];
    if (parsedRaw !== undefined) params.raw = parsedRaw;
    return params;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === '/metrics' && opts.metrics && (req.method === 'GET' || req.method === 'HEAD')) return opts.metrics(req, res);
    const match = ROUTE.exec(path);
    if (!match) throw new HttpError(404, 'not_found', `no route ${path}; try GET /models`);
    let name: string | undefined;
    try {
      name = match[1] === undefined ? undefined : decodeURIComponent(match[1]);
    } catch {
      throw new HttpError(404, 'not_found', `"${match[1]}" is not a valid model name`); // malformed %-escape
    }
    const version = match[2] === undefined ? undefined : Number(match[2]);
    if (name !== undefined && !isValidName(name)) throw new HttpError(404, 'not_found', `"${name}" is not a valid model name`);
    if (req.method === 'GET' || req.method === 'HEAD') {
      if (name === undefined) {
        send(res, 200, { models: models.list() });
        return;
      }
      const state = models.list().find((m) => m.name === name);
      if (!state) throw new HttpError(404, 'not_found', `model "${name}" is not on this device`);
      const described = models.describe(name, version);
      send(res, 200, { ...described, active: state.active, versions: state.versions });
      return;
    }
    if (req.method === 'POST' && name !== undefined) {
      const body = await readBody(req);
      const result = await models.infer(parseInferBody(body, name, version));
      send(res, 200, result);
      return;
    }
    res.setHeader('allow', name === undefined ? 'GET' : 'GET, POST');
    throw new HttpError(405, 'bad_request', `${req.method} is not supported on ${path}`);
  }

  const server = createServer({ keepAliveTimeout: 5000 }, (req, res) => {
    inflight++;
    res.on('close', () => {
      if (--inflight === 0) idle?.();
    });
    handle(req, res).catch((error: unknown) => {
      if (error instanceof HttpError && error.status === 413) {
        // Answer at once and close the connection; discard (not buffer) what the client still sends,
        // up to a bound, so it reads the 413 instead of a reset.
        res.setHeader('connection', 'close');
        let discarded = 0;
        req.removeAllListeners('data');
        req.on('data', (chunk: Buffer) => {
          discarded += chunk.length;
          if (discarded > 4 * maxBody) req.socket.destroy();
        });
        req.resume();
      }
      sendError(res, error);
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
  logger.info({ host: opts.host ?? '127.0.0.1', port }, 'inference API listening');

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
