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
import type { Server } from 'node:http';
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';
import type { TokenChecker } from '../access/token-checker.js';
import type { FeedEvent, Fleet } from '../devices/presence.js';
import { summarize } from '../rollouts/summary.js';
import type { Operations } from './contract.js';
import { bearer } from './http.js';

export function attachFeed(server: Server, ctx: { ops: Operations; fleet: Fleet; checkToken: TokenChecker }): { close(): void } {
  const { ops, fleet, checkToken } = ctx;
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  const sockets = new Set<WebSocket>();
  let pending: string[] = [];
  const flush = (): void => {
    const texts = pending;
    pending = [];
    const frame = texts.length === 1 ? texts[0]! : `{"type":"batch","events":[${texts.join(',')}]}`;
    for (const ws of sockets) if (ws.bufferedAmount < 4 * 1024 * 1024) ws.send(frame); // a reader that stopped reading misses events, nobody else does
  };
  const onFeed = (event: FeedEvent): void => {
    if (sockets.size === 0) return;
    if (pending.length === 0) setImmediate(flush);
    pending.push(JSON.stringify(event.type === 'device' ? { ...event, record: stripSecret(event.record) } : event));
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
            token = undefined; // not JSON: no token, refused below
          }
          void checkToken(token).then((ok) => (ok ? admit() : ws.close(4401, 'unauthorized')));
        });
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

function stripSecret<T extends { tokenHash?: string }>(record: T): Omit<T, 'tokenHash'> {
  const { tokenHash: _omit, ...rest } = record;
  return rest;
}
