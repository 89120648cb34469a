/**
 * Test fixture: a real `redis-server` on a free loopback port, and real broker processes
 * (`node broker/dist/bin/broker.js`) that may share it, so a test can `kill -9` one
 * instance of a cluster. Waits on the processes' own announcements with deadlines.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { hashSecret } from '@edgefleet/node-io';
import { eventually, freePort } from './manager-process.js';

export const BROKER_BIN = fileURLToPath(new URL('../../broker/dist/bin/broker.js', import.meta.url));

export interface RedisProcess {
  port: number;
  /** redis://127.0.0.1:<port> */
  url: string;
  child: ChildProcess;
  /** Empties every database (between tests that share one server). */
  flush(): Promise<void>;
  /** One redis-cli command; its output, trimmed. */
  cli(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Pub/sub output buffers raised from Redis' default (32 MB hard, 8 MB for 60 s), which would
 * disconnect a broker instance that falls a few 1 MiB chunks behind (see broker/README.md).
 */
export const REDIS_CLUSTER_ARGS = ['--client-output-buffer-limit', 'pubsub 512mb 256mb 60'];

export async function startRedis(): Promise<RedisProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'redis-'));
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', ...REDIS_CLUSTER_ARGS], {
    stdio: 'ignore',
  });
  const stop = async () => {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await eventually('redis-server listening', () => portOpen(port));
  } catch (error) {
    await stop();
    throw error;
  }
  const cli = (...args: string[]) =>
    new Promise<string>((resolve, reject) => {
      const c = spawn('redis-cli', ['-p', String(port), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr.on('data', (d: Buffer) => (err += d.toString()));
      c.once('error', reject);
      c.once('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`redis-cli ${args.join(' ')} exited with ${code}: ${err.trim()}`))));
    });
  const flush = async () => void (await cli('flushall'));
  return { port, url: `redis://127.0.0.1:${port}`, child, flush, cli, stop };
}

function portOpen(port: number): Promise<true | undefined> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(undefined));
  });
}

export interface BrokerCredentials {
  devices?: { id: string; token: string; groups?: string[] }[];
  operators?: { id: string; token: string }[];
}

/** A credentials file for the broker bin, tokens hashed as `broker hash-token` would. */
export async function writeCredentials(dir: string, creds: BrokerCredentials): Promise<string> {
  const path = join(dir, 'credentials.json');
  await writeFile(
    path,
    JSON.stringify({
      devices: (creds.devices ?? []).map((d) => ({ id: d.id, tokenHash: hashSecret(d.token), groups: d.groups ?? [] })),
      operators: (creds.operators ?? []).map((o) => ({ id: o.id, tokenHash: hashSecret(o.token) })),
    }),
  );
  return path;
}

export interface BrokerProcess {
  child: ChildProcess;
  pid: number;
  port: number;
  url: string;
  /** Log lines (JSON, from stderr) so far. */
  logs(): Record<string, unknown>[];
  /** Resident memory in bytes, from /proc. */
  rss(): Promise<number>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts the broker bin on 127.0.0.1 (a free port unless `port` is given) and waits for its JSON line. */
export async function startBrokerProcess(opts: { credentials: string; port?: number; args?: string[]; logLevel?: string }): Promise<BrokerProcess> {
  const child = spawn(
    process.execPath,
    [BROKER_BIN, '--credentials', opts.credentials, '--host', '127.0.0.1', '--port', String(opts.port ?? 0), '--log-level', opts.logLevel ?? process.env.TEST_BROKER_LOG_LEVEL ?? 'info', ...(opts.args ?? [])],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  createInterface({ input: child.stderr! }).on('line', (line) => {
    try {
      logs.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      stderr += `${line}\n`; // not a log line: a crash or a config error, kept for the failure message
    }
    if (process.env.TEST_BROKER_LOGS) process.stderr.write(`[broker ${child.pid}] ${line}\n`);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const announced = await Promise.race([
    new Promise<{ url: string; ports: { tcp: number } }>((resolve) => createInterface({ input: child.stdout! }).once('line', (l) => resolve(JSON.parse(l)))),
    exited.then((e) => Promise.reject(new Error(`broker exited (${e.code ?? e.signal}) before listening: ${stderr}`))),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('broker did not listen within 15 s')), 15_000).unref()),
  ]).catch((error: unknown) => {
    child.kill('SIGKILL');
    throw error;
  });
  return {
    child,
    pid: child.pid!,
    port: announced.ports.tcp,
    url: announced.url,
    logs: () => logs,
    rss: async () => Number(/VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${child.pid}/status`, 'utf8'))![1]) * 1024,
    exited,
    kill: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
