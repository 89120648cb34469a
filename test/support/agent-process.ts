/**
 * Test fixture: real device-agent processes (`node device-agent/dist/bin/deviceAgent.js`)
 * with a temporary data directory, plus an operator MQTT client that watches
 * them. Waits on events (status messages, log lines, stdout lines) with
 * deadlines; never sleeps.
 */
import { spawn } from 'node:child_process';
import { track } from './children.js';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { StatusMessageSchema, parseTopic, topics } from '@edgefleet/protocol';
import type { StatusMessage } from '@edgefleet/protocol';
import { testManifest } from './onnx-models.js';

export const AGENT_BIN = fileURLToPath(new URL('../../device-agent/dist/bin/deviceAgent.js', import.meta.url));

export interface AgentProcessOptions {
  /** Broker URL (mqtt://127.0.0.1:port). */
  broker: string;
  id: string;
  token: string;
  groups?: string[];
  /** Reuse a data directory (restart tests); default: a fresh temporary one, removed by cleanup(). */
  dataDir?: string;
  telemetryIntervalMs?: number;
  /** Start the HTTP inference API on an ephemeral port (default off). */
  http?: boolean;
  /** Extra flags, e.g. ['--legacy-topic', 'hello']. */
  args?: string[];
  env?: Record<string, string>;
  /** A command the agent runs under, e.g. ['ip', 'netns', 'exec', 'ns1'] (it must exec, keeping the pid). */
  wrap?: string[];
}

export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

export interface AgentProcess {
  id: string;
  dataDir: string;
  child: ChildProcess;
  stdout: string[];
  logs: LogLine[];
  /** Raw stderr text that was not a JSON log line (crashes, config errors). */
  stderrText(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForStdout(match: string | RegExp, timeoutMs?: number, from?: number): Promise<string>;
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** The port of the HTTP inference API (from the agent's log). */
  httpPort(timeoutMs?: number): Promise<number>;
  /** Sends a signal and waits for the exit. */
  kill(signal?: NodeJS.Signals, timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Kills (SIGKILL) if still running and removes a temporary data dir. */
  cleanup(): Promise<void>;
}

function waiter<T>(
  describe: string,
  timeoutMs: number,
  check: () => T | undefined,
  subscribe: (wake: () => void) => () => void,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const first = check();
    if (first !== undefined) return resolve(first);
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${describe}`));
    }, timeoutMs);
    const unsubscribe = subscribe(() => {
      const value = check();
      if (value !== undefined) {
        clearTimeout(timer);
        unsubscribe();
        resolve(value);
      }
    });
  });
}

export async function spawnAgent(opts: AgentProcessOptions): Promise<AgentProcess> {
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), `agent-${opts.id}-`)));
  const args = [
    AGENT_BIN,
    '--broker', opts.broker,
    '--device', opts.id,
    '--data-dir', dataDir,
    '--telemetry-interval-ms', String(opts.telemetryIntervalMs ?? 60_000),
    '--reconnect-min-ms', '100',
    '--reconnect-max-ms', '1000',
    '--log-level', 'debug',
    ...(opts.groups?.length ? ['--groups', opts.groups.join(',')] : []),
    ...(opts.http ? ['--http-port', '0'] : ['--no-http']),
    ...(opts.args ?? []),
  ];
  const [command, ...commandArgs] = opts.wrap?.length ? [...opts.wrap, process.execPath, ...args] : [process.execPath, ...args];
  const child = track(
    spawn(command!, commandArgs, {
      env: { ...process.env, EDGEFLEET_DEVICE_TOKEN: opts.token, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  const stdout: string[] = [];
  const logs: LogLine[] = [];
  let stderrRaw = '';
  const listeners = new Set<() => void>();
  const wake = (): void => {
    for (const l of [...listeners]) l();
  };
  const lines = (stream: NodeJS.ReadableStream, onLine: (line: string) => void): void => {
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      rest += chunk;
      const parts = rest.split('\n');
      rest = parts.pop() ?? '';
      for (const p of parts) onLine(p);
      wake();
    });
  };
  lines(child.stdout!, (line) => stdout.push(line));
  lines(child.stderr!, (line) => {
    try {
      logs.push(JSON.parse(line) as LogLine);
    } catch {
      stderrRaw += `${line}\n`;
    }
  });
  if (process.env.TEST_AGENT_LOGS) child.stderr!.on('data', (d: string) => process.stderr.write(`[${opts.id}] ${d}`));
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
      wake();
    });
  });
  const subscribe = (fn: () => void) => {
    listeners.add(fn);
    return () => listeners.delete(fn);
  };
  const failIfExited = (what: string): void => {
    if (exitInfo) throw new Error(`agent ${opts.id} exited (${JSON.stringify(exitInfo)}) while waiting for ${what}; stderr: ${stderrRaw.slice(-2000)}`);
  };

  const proc: AgentProcess = {
    id: opts.id,
    dataDir,
    child,
    stdout,
    logs,
    stderrText: () => stderrRaw,
    exited,
    waitForStdout(match, timeoutMs = 10_000, from = 0) {
      const test = (l: string) => (typeof match === 'string' ? l.includes(match) : match.test(l));
      return waiter(`stdout ${String(match)} from ${opts.id}`, timeoutMs, () => {
        const found = stdout.slice(from).find(test);
        if (found === undefined) failIfExited(`stdout ${String(match)}`);
        return found;
      }, subscribe);
    },
    waitForLog(predicate, timeoutMs = 10_000) {
      return waiter(`a log line from ${opts.id}`, timeoutMs, () => {
        const found = logs.find(predicate);
        if (found === undefined) failIfExited('a log line');
        return found;
      }, subscribe);
    },
    async httpPort(timeoutMs = 10_000) {
      const line = await proc.waitForLog((l) => l.msg === 'HTTP inference API listening', timeoutMs);
      return Number(line.port);
    },
    async kill(signal = 'SIGTERM', timeoutMs = 15_000) {
      if (!exitInfo) child.kill(signal);
      let timer: NodeJS.Timeout | undefined;
      const result = await Promise.race([
        exited,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`agent ${opts.id} did not exit within ${timeoutMs} ms after ${signal}`)), timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
      return result;
    },
    async cleanup() {
      if (!exitInfo) {
        child.kill('SIGKILL');
        await exited;
      }
      if (ownDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
  return proc;
}

// ---------------------------------------------------------------- the operator's view

let operatorSeq = 0;

/** An operator MQTT client (client id `<operator>-<n>`), connected. */
export async function connectOperator(broker: string, operator: { id: string; token: string }): Promise<MqttClient> {
  const client = mqtt.connect(broker, {
    clientId: `${operator.id}-${process.pid}-${++operatorSeq}`,
    username: operator.id,
    password: operator.token,
    protocolVersion: 4,
    reconnectPeriod: 200,
    connectTimeout: 5000,
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return client;
}

/**
 * Watches every device's retained status. `waitFor(device, online)` resolves with the first
 * status message (seen from now on, or already seen) that matches.
 */
export interface StatusWatcher {
  history: Map<string, StatusMessage[]>;
  waitFor(device: string, online: boolean, timeoutMs?: number, after?: number): Promise<StatusMessage>;
  close(): void;
}

export async function watchStatus(client: MqttClient): Promise<StatusWatcher> {
  const history = new Map<string, StatusMessage[]>();
  const listeners = new Set<() => void>();
  const onMessage = (topic: string, payload: Buffer): void => {
    const parsed = parseTopic(topic);
    if (parsed?.kind !== 'device' || parsed.channel !== 'status' || payload.length === 0) return;
    const result = StatusMessageSchema.safeParse(JSON.parse(payload.toString()));
    if (!result.success) return;
    const list = history.get(parsed.device) ?? [];
    list.push(result.data);
    history.set(parsed.device, list);
    for (const l of [...listeners]) l();
  };
  client.on('message', onMessage);
  await client.subscribeAsync(topics.allDevices('status'), { qos: 1 });
  return {
    history,
    waitFor(device, online, timeoutMs = 10_000, after = 0) {
      return waiter(
        `${device} ${online ? 'online' : 'offline'}`,
        timeoutMs,
        () => history.get(device)?.slice(after).find((m) => m.online === online),
        (fn) => {
          listeners.add(fn);
          return () => listeners.delete(fn);
        },
      );
    },
    close() {
      client.off('message', onMessage);
    },
  };
}

/** Spawns an agent and waits until the operator sees its retained online status. */
export async function startAgent(opts: AgentProcessOptions, watcher: StatusWatcher, timeoutMs = 15_000): Promise<AgentProcess> {
  const after = watcher.history.get(opts.id)?.length ?? 0;
  const proc = await spawnAgent(opts);
  try {
    await Promise.race([
      watcher.waitFor(opts.id, true, timeoutMs, after),
      proc.exited.then((e) => {
        throw new Error(`agent ${opts.id} exited before coming online (${JSON.stringify(e)}): ${proc.stderrText().slice(-2000)}`);
      }),
    ]);
  } catch (error) {
    await proc.cleanup();
    throw error;
  }
  return proc;
}

/** Kills and cleans every agent given; never throws. */
export async function cleanupAgents(...agents: (AgentProcess | undefined)[]): Promise<void> {
  await Promise.all(agents.map((a) => a?.cleanup().catch(() => undefined)));
}

// ---------------------------------------------------------------- models on disk before the agent starts

export interface PreinstalledModel {
  name: string;
  version: number;
  bytes: Uint8Array;
  /** Activate after install (default true). */
  activate?: boolean;
}

/**
 * Installs (and activates) models into a data directory through the agent's own model service,
 * as a finished transfer would, so an agent started on that directory serves them.
 */
export async function preinstallModels(dataDir: string, device: string, list: PreinstalledModel[]): Promise<void> {
  const { createModelService } = await import('@edgefleet/device-agent');
  const { pino } = await import('pino');
  const service = await createModelService({ dataDir, threads: 1, logger: pino({ level: 'silent' }) });
  try {
    for (const m of list) {
      const staged = join(dataDir, `staged-${m.name}-${m.version}.onnx`);
      await writeFile(staged, m.bytes);
      await service.install(testManifest(m.name, m.version, m.bytes, { target: { devices: [device] } }), staged);
      if (m.activate !== false) await service.activate(m.name, m.version);
    }
  } finally {
    await service.close();
  }
}
