/**
 * The HTTP API (node:http) and the live feed (ws): the one surface the CLI,
 * the dashboard and scripts use. Bound to 127.0.0.1 by default. Every route
 * but /health, /metrics and the dashboard's static page needs the operator
 * token as `Authorization: Bearer <token>` (never in a URL). Errors are JSON:
 * `{"error":{"code","message"}}`.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import type { Logger } from 'pino';
import { FleetError, LegacyCommandSchema, NameSchema, ProcessingSchema, TensorSchema, VersionSchema, describe, errorResponse } from '@edgefleet/protocol';
import type { FleetDb } from './state.js';
import type { Fleet, FeedEvent } from './fleet.js';
import type { Metrics } from './metrics.js';
import type { Operations } from './manager.js';
import { createTokenChecker } from './provisioning.js';
import { RolloutPolicySchema, parseTarget } from './rollout-plan.js';
import { summarize } from './rollout.js';
import { DASHBOARD_HTML } from './dashboard.js';

export interface RunningApi {
  url: string;
  port: number;
  close(): Promise<void>;
}

const TargetSchema = z
  .string()
  .min(1)
  .refine((t) => t === 'all' || /^(group:)?[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(t), 'expected a device id, group:NAME or all');

const schemas = {
  addDevice: z.object({ id: z.string().min(1), groups: z.array(z.string()).default([]) }).strict(),
  addModelPath: z
    .object({
      path: z.string().min(1),
      name: NameSchema,
      lineage: z
        .object({ dataset: z.string().optional(), metrics: z.record(z.string(), z.number()).optional(), notes: z.string().optional(), gitCommit: z.string().optional() })
        .strict()
        .optional(),
      processing: ProcessingSchema.optional(),
      minOnnxruntime: z.string().optional(),
    })
    .strict(),
  deploy: z.object({ model: NameSchema, version: VersionSchema.optional(), to: TargetSchema, policy: RolloutPolicySchema.optional() }).strict(),
  infer: z
    .object({
      model: NameSchema,
      version: VersionSchema.optional(),
      inputs: z.record(z.string(), TensorSchema).optional(),
      raw: z.union([z.object({ text: z.string() }), z.object({ imageBase64: z.string() })]).optional(),
      timeoutMs: z.number().int().min(1).max(600_000).optional(),
    })
    .strict(),
  exec: z.object({ to: TargetSchema, command: z.string().min(1), via: z.enum(['command', 'topic']).optional() }).strict(),
  rollback: z.object({ rollout: z.string().min(1).optional() }).strict(),
  sshDeliver: z
    .object({
      model: NameSchema,
      version: VersionSchema.optional(),
      host: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$|^[0-9A-Fa-f:.]{2,45}$/, 'expected a host name, an IPv4 or an IPv6 address (without brackets)'),
      port: z.number().int().min(1).max(65535).optional(),
      username: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$/, 'expected a user name of letters, digits, ".", "_" or "-"'),
      /** A private key file on the controller host (absolute). The key itself is never sent. */
      keyPath: z.string().min(1).max(4096),
      remotePath: z.string().min(1).max(4096).optional(),
      hostKeyFingerprint: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'expected SHA256:<43 base64 characters>, as `ssh-keygen -lf <host key>.pub` prints it').optional(),
    })
    .strict(),
  enrol: z.object({ id: z.string().min(1).max(64) }).strict(),
};

function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const r = schema.safeParse(body);
  if (!r.success) throw new FleetError('invalid_params', describe(r.error));
  return r.data;
}

type Handler = (req: IncomingMessage, params: Record<string, string>, ctx: { actor: string; url: URL; body: () => Promise<unknown> }) => Promise<unknown> | unknown;
interface Route {
  method: string;
  path: RegExp;
  name: string;
  auth: boolean;
  handler: Handler;
  /** Status for a successful answer (default 200). */
  created?: boolean;
}

const JSON_LIMIT = 8 * 1024 * 1024;

async function readJson(req: IncomingMessage): Promise<unknown> {
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

function intParam(value: string | null, what: string, fallback: number): number {
  if (value === null) return fallback;
  if (!/^\d+$/.test(value)) throw new FleetError('invalid_params', `${what} must be a whole number`);
  return Number(value);
}

export async function startApi(opts: {
  ops: Operations;
  db: FleetDb;
  fleet: Fleet;
  metrics: Metrics;
  logger: Logger;
  host: string;
  port: number;
}): Promise<RunningApi> {
  const { ops, fleet, metrics, logger: log } = opts;
  const checkToken = createTokenChecker(opts.db);
  const version = (s: string | undefined): number => {
    if (!s || !/^\d+$/.test(s) || Number(s) < 1) throw new FleetError('invalid_params', `version must be a positive whole number, got "${s}"`);
    return Number(s);
  };

  const routes: Route[] = [];
  const route = (method: string, path: string, handler: Handler, extra: { auth?: boolean; created?: boolean } = {}): void => {
    const pattern = new RegExp(`^${path.replace(/:([a-zA-Z]+)/g, '(?<$1>[^/]+)')}$`);
    routes.push({ method, path: pattern, name: path, handler, auth: extra.auth ?? true, ...(extra.created ? { created: true } : {}) });
  };

  route('GET', '/health', () => ops.health(), { auth: false });
  // Enrolment: authenticated by the fleet provisioning key instead of the operator token (404 when off).
  route('POST', '/enrol', async (req, _p, c) => {
    const body = parseBody(schemas.enrol, await c.body());
    const result = await ops.enrol({ id: body.id, key: bearer(req) });
    if (!result) throw new FleetError('unauthorized', 'wrong or missing provisioning key: send Authorization: Bearer <enrolment key>');
    return result;
  }, { auth: false, created: true });
  route('GET', '/api/devices', () => ops.listDevices());
  route('POST', '/api/devices', async (_req, _p, c) => {
    const body = parseBody(schemas.addDevice, await c.body());
    return ops.addDevice({ id: body.id, groups: body.groups, actor: c.actor });
  }, { created: true });
  route('GET', '/api/devices/:id', (_r, p) => ops.showDevice(p['id']!));
  route('DELETE', '/api/devices/:id', (_r, p, c) => ops.removeDevice({ id: p['id']!, actor: c.actor }));
  route('GET', '/api/devices/:id/logs', (_r, p, c) => ops.logs({ device: p['id']!, lines: Math.min(5000, Math.max(1, intParam(c.url.searchParams.get('lines'), 'lines', 100))) }));
  route('POST', '/api/devices/:id/infer', async (_r, p, c) => {
    const body = parseBody(schemas.infer, await c.body());
    const { timeoutMs, ...params } = body;
    return ops.infer({ device: p['id']!, params, actor: c.actor, ...(timeoutMs ? { timeoutMs } : {}) });
  });
  route('GET', '/api/groups', () => ops.listGroups());
  route('GET', '/api/models', (_r, _p, c) => ops.listModels(c.url.searchParams.get('name') ?? undefined));
  route('POST', '/api/models', async (req, _p, c) => {
    if ((req.headers['content-type'] ?? '').includes('application/octet-stream')) return uploadModel(req, c);
    const body = parseBody(schemas.addModelPath, await c.body());
    return ops.addModel({
      file: body.path,
      opts: { name: body.name, ...(body.lineage ? { lineage: body.lineage } : {}), ...(body.processing ? { processing: body.processing } : {}), ...(body.minOnnxruntime ? { minOnnxruntime: body.minOnnxruntime } : {}) },
      actor: c.actor,
    });
  }, { created: true });
  route('GET', '/api/models/:name', (_r, p) => ops.showModel(p['name']!));
  route('GET', '/api/models/:name/:version', (_r, p) => ops.showModel(p['name']!, version(p['version'])));
  route('DELETE', '/api/models/:name/:version', (_r, p, c) => ops.removeModel({ name: p['name']!, version: version(p['version']), actor: c.actor }));
  route('POST', '/api/deliveries/ssh', async (_r, _p, c) => {
    const { version: v, port, remotePath, hostKeyFingerprint, ...body } = parseBody(schemas.sshDeliver, await c.body());
    return ops.deliverSsh({
      ...body,
      ...(v !== undefined ? { version: v } : {}),
      ...(port !== undefined ? { port } : {}),
      ...(remotePath !== undefined ? { remotePath } : {}),
      ...(hostKeyFingerprint !== undefined ? { hostKeyFingerprint } : {}),
      actor: c.actor,
    });
  });
  route('GET', '/api/rollouts', () => ops.listRollouts().map(summarize));
  route('POST', '/api/rollouts', async (_r, _p, c) => {
    const body = parseBody(schemas.deploy, await c.body());
    return ops.deploy({
      model: body.model,
      ...(body.version !== undefined ? { version: body.version } : {}),
      to: parseTarget(body.to),
      ...(body.policy ? { policy: body.policy } : {}),
      actor: c.actor,
    });
  }, { created: true });
  route('GET', '/api/rollouts/:id', (_r, p) => ops.showRollout(p['id']!));
  route('POST', '/api/rollouts/:id/abort', (_r, p, c) => ops.abortRollout(p['id']!, c.actor));
  route('POST', '/api/rollouts/:id/resume', (_r, p, c) => ops.resumeRollout(p['id']!, c.actor));
  route('POST', '/api/rollouts/:id/rollback', (_r, p, c) => ops.rollbackRollout(p['id']!, c.actor));
  route('POST', '/api/rollback', async (_r, _p, c) => ops.rollbackRollout(parseBody(schemas.rollback, await c.body()).rollout, c.actor));
  route('POST', '/api/exec', async (_r, _p, c) => {
    const body = parseBody(schemas.exec, await c.body());
    if (!LegacyCommandSchema.safeParse(body.command).success) {
      throw new FleetError('invalid_params', `unknown command "${body.command}"; use one of start, stop, update, install, done, exit`);
    }
    return ops.exec({ to: parseTarget(body.to), command: body.command, actor: c.actor, ...(body.via ? { via: body.via } : {}) });
  });
  route('GET', '/api/keys', () => ops.keys());
  route('GET', '/api/audit', (_r, _p, c) => ops.audit(intParam(c.url.searchParams.get('limit'), 'limit', 100)));

  async function uploadModel(req: IncomingMessage, c: { actor: string; url: URL }): Promise<unknown> {
    const name = c.url.searchParams.get('name');
    if (!name) throw new FleetError('invalid_params', 'give the model a name: POST /api/models?name=NAME');
    const header = (h: string): unknown => {
      const v = req.headers[h];
      if (typeof v !== 'string') return undefined;
      try {
        return JSON.parse(Buffer.from(v, 'base64').toString('utf8'));
      } catch {
        throw new FleetError('bad_request', `${h} must be base64 of JSON`);
      }
    };
    const lineage = header('x-model-lineage');
    const processing = header('x-model-processing');
    const dir = join(ops.dataDir, 'uploads');
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `${randomBytes(8).toString('hex')}.onnx`);
    try {
      await pipeline(req, createWriteStream(tmp, { mode: 0o600 }));
      return await ops.addModel({
        file: tmp,
        opts: { name, ...(lineage ? { lineage: lineage as never } : {}), ...(processing ? { processing: processing as never } : {}) },
        actor: c.actor,
      });
    } finally {
      await rm(tmp, { force: true });
    }
  }

  function send(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
    const text = type === 'application/json' ? JSON.stringify(body) : String(body);
    res.writeHead(status, { 'content-type': type === 'application/json' ? 'application/json; charset=utf-8' : type, 'cache-control': 'no-store' });
    res.end(text);
  }

  function bearer(req: IncomingMessage): string | undefined {
    const h = req.headers.authorization;
    const m = typeof h === 'string' ? /^Bearer\s+(\S+)$/i.exec(h) : null;
    return m?.[1];
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    let routeName = 'unknown';
    const finish = (status: number, body: unknown, type?: string): void => {
      metrics.httpRequests.inc({ method: req.method ?? '', route: routeName, status: String(status) });
      send(res, status, body, type);
    };
    void (async () => {
      try {
        if (req.method === 'GET' && (url.pathname === '/' || url.pathname === '/index.html')) {
          routeName = '/';
          return finish(200, DASHBOARD_HTML, 'text/html; charset=utf-8');
        }
        if (req.method === 'GET' && url.pathname === '/metrics') {
          routeName = '/metrics';
          return finish(200, await metrics.registry.metrics(), metrics.registry.contentType);
        }
        const matches = routes.filter((r) => r.path.test(url.pathname));
        if (matches.length === 0) throw new FleetError('not_found', `no such endpoint ${url.pathname}; see the API table in host-manager/README.md`);
        const matched = matches.find((r) => r.method === req.method);
        if (!matched) throw new FleetError('method_not_allowed', `${req.method} is not allowed on ${url.pathname}; use ${matches.map((r) => r.method).join(', ')}`);
        routeName = matched.name;
        let actor = 'anonymous';
        if (matched.auth) {
          const operator = await checkToken(bearer(req));
          if (!operator) throw new FleetError('unauthorized', 'missing or wrong operator token: send Authorization: Bearer <token> (see <data dir>/operator.token)');
          actor = `operator:${operator}`;
        }
        const params = Object.fromEntries(
          Object.entries(matched.path.exec(url.pathname)?.groups ?? {}).map(([k, v]) => {
            try {
              return [k, decodeURIComponent(v)];
            } catch {
              throw new FleetError('bad_request', `malformed percent-encoding in the path: ${v}`);
            }
          }),
        );
        const result = await matched.handler(req, params, { actor, url, body: () => readJson(req) });
        finish(matched.created ? 201 : 200, result ?? {});
      } catch (error) {
        if (!(error instanceof FleetError)) log.error({ err: error }, 'API handler failed');
        const { status, body } = errorResponse(error);
        finish(status, body);
      }
    })();
  });

  // ---------------------------------------------------------------- live feed
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  const sockets = new Set<WebSocket>();
  const onFeed = (event: FeedEvent): void => {
    if (sockets.size === 0) return;
    const text = JSON.stringify(event.type === 'device' ? { ...event, record: stripSecret(event.record) } : event);
    for (const ws of sockets) if (ws.bufferedAmount < 4 * 1024 * 1024) ws.send(text); // a reader that stopped reading misses events, nobody else does
  };
  fleet.on('feed', onFeed);
  const snapshot = (): string => JSON.stringify({ type: 'snapshot', devices: ops.listDevices(), rollouts: ops.listRollouts().map(summarize) });
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== '/ws') {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const admit = (): void => {
        sockets.add(ws);
        ws.send(snapshot());
      };
      ws.on('close', () => sockets.delete(ws));
      ws.on('error', () => sockets.delete(ws));
      void checkToken(bearer(req)).then((op) => {
        if (op) return admit();
        // Browsers cannot set headers on a WebSocket: the first message may carry the token instead.
        const timer = setTimeout(() => ws.close(4401, 'unauthorized'), 5000);
        ws.once('message', (data) => {
          clearTimeout(timer);
          let token: string | undefined;
          try {
            token = (JSON.parse(String(data)) as { token?: string }).token;
          } catch {
            token = undefined;
          }
          void checkToken(token).then((ok) => (ok ? admit() : ws.close(4401, 'unauthorized')));
        });
      });
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const hostForUrl = opts.host === '0.0.0.0' || opts.host === '::' ? '127.0.0.1' : opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  return {
    url: `http://${hostForUrl}:${port}`,
    port,
    async close() {
      fleet.off('feed', onFeed);
      for (const ws of sockets) ws.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function stripSecret<T extends { tokenHash?: string }>(record: T): Omit<T, 'tokenHash'> {
  const { tokenHash: _omit, ...rest } = record;
  return rest;
}
