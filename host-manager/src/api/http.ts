/** The HTTP plumbing the API's routes share: the route table's shape, JSON bodies, bearer tokens, answers. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FleetError, MAX_JSON_DEPTH, parseJson } from '@edgefleet/protocol';

export interface RequestContext {
  /** 'operator:<id>' once authenticated, 'anonymous' on open routes. */
  actor: string;
  url: URL;
  /** The peer's address, for per-source limits. */
  source: string;
  /** The JSON body (at most `limitBytes`, default JSON_LIMIT). */
  body: (limitBytes?: number) => Promise<unknown>;
}

export type Handler = (req: IncomingMessage, params: Record<string, string>, ctx: RequestContext) => Promise<unknown> | unknown;

export interface Route {
  method: string;
  path: RegExp;
  /** The path as written (`/api/devices/:id`), for metrics. */
  name: string;
  auth: boolean;
  handler: Handler;
  /** Answer 201 instead of 200. */
  created?: boolean;
}

/** `route('GET', '/api/devices/:id', handler)`: `:name` segments become named parameters. */
export function route(method: string, path: string, handler: Handler, extra: { auth?: boolean; created?: boolean } = {}): Route {
  const pattern = new RegExp(`^${path.replace(/:([a-zA-Z]+)/g, '(?<$1>[^/]+)')}$`);
  return { method, path: pattern, name: path, handler, auth: extra.auth ?? true, ...(extra.created ? { created: true } : {}) };
}

export const JSON_LIMIT = 8 * 1024 * 1024;

/** A JSON body: at most `limitBytes` (refused from Content-Length before reading), nested at most MAX_JSON_DEPTH, checked before parsing. */
export async function readJson(req: IncomingMessage, limitBytes = JSON_LIMIT): Promise<unknown> {
  const type = req.headers['content-type'] ?? '';
  if (!type.includes('application/json')) throw new FleetError('unsupported_media_type', 'send the request body as application/json');
  const tooLong = (): FleetError => new FleetError('too_long', `request body over ${limitBytes} bytes`);
  if (Number(req.headers['content-length']) > limitBytes) throw tooLong();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limitBytes) throw tooLong();
    chunks.push(chunk as Buffer);
  }
  const bytes = Buffer.concat(chunks);
  if (bytes.toString('utf8').trim() === '') return {};
  try {
    return parseJson(bytes, { maxBytes: limitBytes, maxDepth: MAX_JSON_DEPTH }, 'the request body');
  } catch (error) {
    if ((error as FleetError).code === 'bad_request') throw new FleetError('bad_request', 'the request body is not valid JSON');
    throw error;
  }
}

export function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  const m = typeof h === 'string' ? /^Bearer\s+(\S+)$/i.exec(h) : null;
  return m?.[1];
}

/**
 * Headers on every answer: never cached, never sniffed as another type, never framed by another
 * page (clickjacking the dashboard), no referrer sent on.
 */
export const SAFE_HEADERS = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'x-frame-options': 'DENY', 'content-security-policy': "frame-ancestors 'none'", 'referrer-policy': 'no-referrer' } as const;

export function send(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = type === 'application/json' ? JSON.stringify(body) : String(body);
  res.writeHead(status, { 'content-type': type === 'application/json' ? 'application/json; charset=utf-8' : type, ...SAFE_HEADERS });
  res.end(text);
}

/** The named parameters of a matched path, percent-decoded. */
export function pathParams(route: Route, pathname: string): Record<string, string> {
  return Object.fromEntries(
    Object.entries(route.path.exec(pathname)?.groups ?? {}).map(([k, v]) => {
      try {
        return [k, decodeURIComponent(v)];
      } catch {
        throw new FleetError('bad_request', `malformed percent-encoding in the path: ${v}`);
      }
    }),
  );
}
