/**
 * The broker's listeners: TCP, TLS and MQTT over WebSocket. Each hands every new
 * connection to `accept`, which puts the packet guard in front of Aedes.
 */
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { readOption } from './config.js';

export interface ListenerOptions {
  tcp: { host?: string; port: number } | false;
  tls?: { host?: string; port: number; key: string; cert: string; ca?: string; requestCert?: boolean } | undefined;
  ws?: { host?: string; port: number } | undefined;
  maxPacketSize: number;
}

/** `transport`: the socket under `stream` (the stream itself for TCP and TLS), for its write progress. */
export type Accept = (stream: Duplex, remote: string, req?: IncomingMessage, transport?: Socket) => void;

export interface Listeners {
  ports: { tcp?: number; tls?: number; ws?: number };
  /** mqtt://127.0.0.1:<tcp> (or the TCP listener's host when it is not a wildcard address); '' without TCP. */
  url: string;
  close(): Promise<void>;
}

interface Listener {
  port: number;
  close(): Promise<void>;
}

/** Starts every configured listener; if one fails, those already started are closed and the error is thrown. */
export async function startListeners(options: ListenerOptions, accept: Accept, log: Logger): Promise<Listeners> {
  const started: Listener[] = [];
  const ports: Listeners['ports'] = {};
  let url = '';
  try {
    if (options.tcp) {
      const host = options.tcp.host ?? '0.0.0.0';
      const tcp = await listenTcp(host, options.tcp.port, accept);
      started.push(tcp);
      ports.tcp = tcp.port;
      const reachable = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
      url = `mqtt://${reachable}:${tcp.port}`;
    }
    if (options.tls) {
      const tls = await listenTls(options.tls, accept, log);
      started.push(tls);
      ports.tls = tls.port;
    }
    if (options.ws) {
      const ws = await listenWs(options.ws, options.maxPacketSize, accept);
      started.push(ws);
      ports.ws = ws.port;
    }
  } catch (err) {
    await Promise.all(started.map((s) => s.close()));
    throw err;
  }
  return { ports, url, close: async () => void (await Promise.all(started.map((s) => s.close()))) };
}

async function listenTcp(host: string, port: number, accept: Accept): Promise<Listener> {
  // noDelay: MQTT packets are small; with Nagle + delayed ACK each request/reply hop waits ~40 ms
  const server = createNetServer({ noDelay: true }, (socket: Socket) => accept(socket, `${socket.remoteAddress}:${socket.remotePort}`, undefined, socket));
  return { port: await listen(server, port, host, 'tcp'), close: () => closeServer(server) };
}

async function listenTls(t: NonNullable<ListenerOptions['tls']>, accept: Accept, log: Logger): Promise<Listener> {
  const server = createTlsServer(
    {
      key: readOption(t.key, 'tls.key'),
      cert: readOption(t.cert, 'tls.cert'),
      ...(t.ca ? { ca: readOption(t.ca, 'tls.ca') } : {}),
      requestCert: t.requestCert === true,
      rejectUnauthorized: t.requestCert === true,
      noDelay: true,
    },
    (socket: TLSSocket) => accept(socket, `tls ${socket.remoteAddress}:${socket.remotePort}`, undefined, socket),
  );
  server.on('tlsClientError', (err) => log.warn({ err: err.message }, 'TLS handshake failed'));
  return { port: await listen(server, t.port, t.host ?? '0.0.0.0', 'tls'), close: () => closeServer(server) };
}

async function listenWs(w: NonNullable<ListenerOptions['ws']>, maxPacketSize: number, accept: Accept): Promise<Listener> {
  const http: HttpServer = createHttpServer((_req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain' }).end('MQTT over WebSocket: connect with a WebSocket client\n');
  });
  // ws buffers a whole message before emitting it: cap messages at the packet limit (+ framing slack)
  const wss = new WebSocketServer({ server: http, maxPayload: maxPacketSize + 16 });
  wss.on('connection', (socket, req) => {
    const stream = createWebSocketStream(socket);
    accept(stream, `ws ${req.socket.remoteAddress}:${req.socket.remotePort}`, req, req.socket as Socket);
  });
  const port = await listen(http, w.port, w.host ?? '0.0.0.0', 'ws');
  return {
    port,
    close: async () => {
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await closeServer(http);
    },
  };
}

async function listen(server: NetServer | HttpServer, port: number, host: string, what: string): Promise<number> {
  server.listen(port, host);
  try {
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err))]);
  } catch (err) {
    throw new Error(`cannot listen for ${what} on ${host}:${port}: ${(err as Error).message}`);
  }
  return (server.address() as AddressInfo).port;
}

function closeServer(server: NetServer | HttpServer): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}
