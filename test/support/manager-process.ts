/**
 * Test fixture: the real controller process (`node host-manager/dist/bin/hostManager.js`)
 * with its embedded broker on an ephemeral (or given) port, a temporary data
 * directory, and a way to run one-shot CLI commands against it. Waits on the
 * controller's own announcement file (controller.json) with a deadline.
 */
import { spawn } from 'node:child_process';
import { track } from './children.js';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const MANAGER_BIN = fileURLToPath(new URL('../../host-manager/dist/bin/hostManager.js', import.meta.url));

export interface ManagerProcess {
  child: ChildProcess;
  dataDir: string;
  url: string;
  /** mqtt://127.0.0.1:<port> of the embedded broker. */
  broker: string;
  mqttPort: number;
  token: string;
  /** Fleet public key file (what agents get as --fleet-public-key). */
  publicKeyFile: string;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Kills it if running; removes the data dir unless `keepDataDir`. */
  cleanup(opts?: { keepDataDir?: boolean }): Promise<void>;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  json<T = unknown>(): T;
}

/** A TCP port that was free a moment ago (for restarts that must keep the broker's address). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function startManager(opts: { dataDir?: string; mqttPort?: number; args?: string[]; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<ManagerProcess> {
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'manager-')));
  const child = track(spawn(
    process.execPath,
    [
      MANAGER_BIN,
      '--data-dir', dataDir,
      '--mqtt-host', '127.0.0.1',
      '--mqtt-port', String(opts.mqttPort ?? 0),
      '--mqtt-ws-port', '-1',
      '--http-port', '0',
      '--log-level', process.env.TEST_MANAGER_LOGS ? 'debug' : 'info',
      '--request-timeout', '5000',
      ...(opts.args ?? []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } },
  ));
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    if (process.env.TEST_MANAGER_LOGS) process.stderr.write(`[manager] ${d}`);
  });
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve((exitInfo = { code, signal }))),
  );
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  type Announcement = { pid: number; url: string; broker: string; mqtt: { tcp: number } | null };
  let info: Announcement | undefined;
  while (!info) {
    if (exitInfo) throw new Error(`hostManager exited (${JSON.stringify(exitInfo)}) before it was ready: ${err.slice(-3000)}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`hostManager not ready within the deadline: ${err.slice(-3000)}`);
    }
    try {
      const parsed = JSON.parse(await readFile(join(dataDir, 'controller.json'), 'utf8')) as Announcement;
      if (parsed.pid === child.pid) info = parsed;
    } catch {
      // not written yet (or being written): look again shortly
    }
    if (!info) await new Promise((r) => setTimeout(r, 50));
  }
  const token = (await readFile(join(dataDir, 'operator.token'), 'utf8')).trim();
  const proc: ManagerProcess = {
    child,
    dataDir,
    url: info.url,
    broker: info.broker,
    mqttPort: info.mqtt?.tcp ?? 0,
    token,
    publicKeyFile: join(dataDir, 'keys', 'fleet-key.pub.pem'),
    stdout: () => out,
    stderr: () => err,
    exited,
    async kill(signal = 'SIGTERM') {
      if (!exitInfo) child.kill(signal);
      return exited;
    },
    async cleanup(o = {}) {
      if (!exitInfo) {
        child.kill('SIGKILL');
        await exited;
      }
      if (ownDir && !o.keepDataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
  return proc;
}

/** Runs `hostManager <args>` as a one-shot client of `m` (URL and token through the environment). */
export function runCli(m: Pick<ManagerProcess, 'url' | 'token' | 'dataDir'>, args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = track(spawn(process.execPath, [MANAGER_BIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, EDGEFLEET_URL: m.url, EDGEFLEET_OPERATOR_TOKEN: m.token, EDGEFLEET_DATA: m.dataDir, ...opts.env },
    }));
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`hostManager ${args.join(' ')} did not finish in time; stderr: ${stderr}`));
    }, opts.timeoutMs ?? 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({
        code,
        stdout,
        stderr,
        json<T>() {
          try {
            return JSON.parse(stdout) as T;
          } catch {
            throw new Error(`hostManager ${args.join(' ')} printed no JSON (exit ${code}): ${stdout}\n${stderr}`);
          }
        },
      });
    });
  });
}

/** Calls the controller's HTTP API with the operator token. */
export async function api<T = unknown>(m: Pick<ManagerProcess, 'url' | 'token'>, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`${m.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${m.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as T };
}

/** Polls `check` (an HTTP read, cheap) until it returns a value, with a deadline. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 15_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
