/** The HTTP plumbing the API's routes share: the route table's shape, JSON bodies, bearer tokens, answers. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FleetError } from '@edgefleet/protocol';

export interface RequestContext {
  /** 'operator:<id>' once authenticated, 'anonymous' on open routes. */
  actor: string;
  url: URL;
  body: () => Promise<unknown>;
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

const JSON_LIMIT = 8 * 1024 * 1024;

export async function readJson(req: IncomingMessage): Promise<unknown> {
  const type = req.headers['content-type'] ?? '';
  if (!type.includes('application/json')) throw new FleetError('unsupported_media_type', 'send the request body as application/json');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > JSON_LIMIT) throw new FleetError('too_long', `request body over ${JSON_LIMIT} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new FleetError('bad_request', 'the request body is not valid JSON');
  }
}

export function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  const m = typeof h === 'string' ? /^Bearer\s+(\S+)$/i.exec(h) : null;
  return m?.[1];
}

export function send(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = type === 'application/json' ? JSON.stringify(body) : String(body);
  res.writeHead(status, { 'content-type': type === 'application/json' ? 'application/json; charset=utf-8' : type, 'cache-control': 'no-store' });
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
