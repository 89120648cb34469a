/**
 * The HTTP API (node:http) and the live feed (ws): the one surface the CLI, the
 * dashboard and scripts use. Bound to 127.0.0.1 by default. Every request must name
 * this API in its Host header and come from no foreign page (host-check.ts), before
 * anything else. Every route but /health, /metrics and the dashboard's static page
 * needs the operator token as `Authorization: Bearer <token>` (never in a URL). Errors
 * are the protocol's `{"error":{"code","message"}}` with the status of its error table.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { FleetError, errorResponse } from '@edgefleet/protocol';
import { createTokenChecker } from '../access/token-checker.js';
import type { TokenChecker } from '../access/token-checker.js';
import type { Fleet } from '../devices/presence.js';
import type { FleetRepository } from '../state/repository.js';
import type { Operations } from './contract.js';
import { serveDashboard } from './dashboard.js';
import { attachFeed } from './feed.js';
import { createHostCheck } from './host-check.js';
import type { HostCheck } from './host-check.js';
import { bearer, pathParams, readJson, send } from './http.js';
import { BinaryAnswer, sendBinary } from './bodies.js';
import type { Route } from './http.js';
import type { Metrics } from './metrics.js';
import { apiRoutes } from './routes.js';

export interface RunningApi {
  url: string;
  port: number;
  close(): Promise<void>;
}

export interface ApiOptions {
  ops: Operations;
  state: FleetRepository;
  fleet: Fleet;
  metrics: Metrics;
  logger: Logger;
  host: string;
  port: number;
  /** Names besides the listening addresses that requests may use in Host (--http-allowed-hosts). */
  allowedHosts?: readonly string[];
  /** The largest model upload, in bytes. */
  maxModelBytes: number;
}

interface AnswerContext {
  routes: Route[];
  checkToken: TokenChecker;
  hostCheck: HostCheck;
  metrics: Metrics;
  log: Logger;
}

export async function startApi(opts: ApiOptions): Promise<RunningApi> {
  const checkToken = createTokenChecker(opts.state);
  const hostCheck = createHostCheck({ host: opts.host, ...(opts.allowedHosts ? { allowedHosts: opts.allowedHosts } : {}) });
  const routes = apiRoutes(opts.ops, { maxModelBytes: opts.maxModelBytes });
  const server = createServer((req, res) => void answer(req, res, { routes, checkToken, hostCheck, metrics: opts.metrics, log: opts.logger }));
  const feed = attachFeed(server, { ops: opts.ops, fleet: opts.fleet, checkToken, hostCheck });
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
      feed.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** One request: the dashboard, /metrics, or a route (authenticated unless it is open); every answer is counted. */
async function answer(req: IncomingMessage, res: ServerResponse, ctx: AnswerContext): Promise<void> {
  const { metrics } = ctx;
  const url = new URL(req.url ?? '/', 'http://localhost');
  const source = req.socket.remoteAddress ?? 'unknown';
  let routeName = 'unknown';
  const finish = (status: number, body: unknown, type?: string): void => {
    metrics.httpRequests.inc({ method: req.method ?? '', route: routeName, status: String(status) });
    send(res, status, body, type);
  };
  try {
    const refused = ctx.hostCheck.refusal(req.headers);
    if (refused) throw refused;
    if (req.method === 'GET' && (await serveDashboard(res, url.pathname))) {
      metrics.httpRequests.inc({ method: 'GET', route: '/dashboard', status: '200' });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/metrics') {
      routeName = '/metrics';
      return finish(200, await metrics.registry.metrics(), metrics.registry.contentType);
    }
    const matches = ctx.routes.filter((r) => r.path.test(url.pathname));
    if (matches.length === 0) throw new FleetError('not_found', `no such endpoint ${url.pathname}; see the API table in host-manager/README.md`);
    const matched = matches.find((r) => r.method === req.method);
    if (!matched) throw new FleetError('method_not_allowed', `${req.method} is not allowed on ${url.pathname}; use ${matches.map((r) => r.method).join(', ')}`);
    routeName = matched.name;
    let actor = 'anonymous';
    if (matched.auth) {
      const operator = await ctx.checkToken(bearer(req), source);
      if (!operator) throw new FleetError('unauthorized', 'missing or wrong operator token: send Authorization: Bearer <token> (see <data dir>/operator.token)');
      actor = `operator:${operator}`;
    }
    const result = await matched.handler(req, pathParams(matched, url.pathname), { actor, url, source, body: (limit) => readJson(req, limit) });
    if (result instanceof BinaryAnswer) {
      metrics.httpRequests.inc({ method: req.method ?? '', route: routeName, status: '200' });
      return sendBinary(res, 200, result);
    }
    finish(matched.created ? 201 : 200, result ?? {});
  } catch (error) {
    if (!(error instanceof FleetError)) ctx.log.error({ err: error }, 'API handler failed');
    const { status, body } = errorResponse(error);
    finish(status, body);
  }
}
