/**
 * The live feed for the dashboard (WebSocket on /ws): a snapshot of devices and
 * rollouts, then every feed event. The operator token comes as a Bearer header or, since
 * browsers cannot set headers on a WebSocket, as the first message.
 *
 * Events that happen in the same turn of the event loop go out as one frame,
 * `{"type":"batch","events":[…]}` (a lone event goes as itself): ten thousand devices
 * reporting every second are ten thousand events a second, and one socket write (and one
 * render in the browser) per event would cost more than everything else the controller does
 * with them.
 */
import { STATUS_CODES } from 'node:http';
import type { Server } from 'node:http';
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';
import { errorResponse, parseJson } from '@edgefleet/protocol';
import type { TokenChecker } from '../access/token-checker.js';
import type { FeedEvent, Fleet } from '../devices/presence.js';
import { summarize } from '../rollouts/summary.js';
import type { Operations } from './contract.js';
import type { HostCheck } from './host-check.js';
import { bearer } from './http.js';

/** Feed sockets open at once without a token yet. */
const MAX_PENDING = 64;

/** The first message carries only `{"token": "…"}`. */
const FIRST_MESSAGE_LIMITS = { maxBytes: 1024, maxDepth: 2 };

export function attachFeed(server: Server, ctx: { ops: Operations; fleet: Fleet; checkToken: TokenChecker; hostCheck: HostCheck }): { close(): void } {
  const { ops, fleet, checkToken } = ctx;
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  const sockets = new Set<WebSocket>();
  let queued: string[] = [];
  const flush = (): void => {
    const texts = queued;
    queued = [];
    const frame = texts.length === 1 ? texts[0]! : `{"type":"batch","events":[${texts.join(',')}]}`;
    for (const ws of sockets) if (ws.bufferedAmount < 4 * 1024 * 1024) ws.send(frame); // a reader that stopped reading misses events, nobody else does
  };
  /** Upgrades not yet authenticated. */
  let pending = 0;
  const onFeed = (event: FeedEvent): void => {
    if (sockets.size === 0) return;
    if (queued.length === 0) setImmediate(flush);
    queued.push(JSON.stringify(event.type === 'device' ? { ...event, record: stripSecret(event.record) } : event));
  };
  fleet.on('feed', onFeed);
  const snapshot = (): string => JSON.stringify({ type: 'snapshot', devices: ops.listDevices(), rollouts: ops.listRollouts().map(summarize) });
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== '/ws') {
      socket.destroy();
      return;
    }
    // The same Host and Origin rules as every request, before the upgrade: a foreign page gets no socket at all.
    const refused = ctx.hostCheck.refusal(req.headers);
    if (refused) {
      const { status, body } = errorResponse(refused);
      const text = JSON.stringify(body);
      socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
      return;
    }
    const source = req.socket.remoteAddress ?? 'unknown';
    const check = (token: string | undefined): Promise<string | undefined> => checkToken(token, source).catch(() => undefined); // rate_limited: refused like a wrong token
    if (pending >= MAX_PENDING) {
      // a peer opening sockets it never authenticates holds at most this many, each for 5 s
      socket.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    pending++;
    let counted = true;
    const settled = (): void => {
      if (counted) (counted = false), pending--;
    };
    socket.once('close', settled); // also when the upgrade itself is refused by ws
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('close', () => sockets.delete(ws));
      ws.on('error', () => sockets.delete(ws));
      authenticate(ws, bearer(req), check, () => {
        settled();
        sockets.add(ws);
        ws.send(snapshot());
      });
    });
  });
  return {
    close() {
      fleet.off('feed', onFeed);
      for (const ws of sockets) ws.terminate();
      wss.close();
    },
  };
}

/** The token from the Authorization header or, since browsers cannot set headers on a WebSocket, the first message (within 5 s). */
function authenticate(ws: WebSocket, header: string | undefined, check: (token: string | undefined) => Promise<string | undefined>, admit: () => void): void {
  void check(header).then((op) => {
    if (op) return admit();
    const timer = setTimeout(() => ws.close(4401, 'unauthorized'), 5000);
    ws.once('message', (data) => {
      clearTimeout(timer);
      let token: unknown;
      try {
        token = (parseJson(data as Buffer, FIRST_MESSAGE_LIMITS, 'the first message') as { token?: unknown } | null)?.token;
      } catch {
        token = undefined; // not JSON (or too long or deep): no token, refused below
      }
      void check(typeof token === 'string' ? token : undefined).then((ok) => (ok ? admit() : ws.close(4401, 'unauthorized')));
    });
  });
}

function stripSecret<T extends { tokenHash?: string }>(record: T): Omit<T, 'tokenHash'> {
  const { tokenHash: _omit, ...rest } = record;
  return rest;
}
