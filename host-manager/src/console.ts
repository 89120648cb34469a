/**
 * Running the controller from the command line: as a daemon (no terminal:
 * logs to stderr, stops on SIGTERM/SIGINT) or with the interactive console
 * (a terminal: logs go to <data-dir>/controller.log, and the console keeps the
 * original C host manager's manners: "Connecting to broker at ...",
 * "Connected", "Press Q<Enter> to quit", and its plain-text commands
 * start|stop|update|install|done|exit sent to a device, group:NAME or all;
 * every CLI command can be typed too).
 */
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { LEGACY_COMMANDS } from '@edgefleet/protocol';
import { createManager, defaultDataDir, brokerUrlOf } from './manager.js';
import type { Manager } from './manager.js';
import type { FeedEvent } from './fleet.js';
import { runCli, EXIT } from './cli.js';
import type { CliIO } from './cli.js';
import { parseTarget } from './rollout-plan.js';
import { operatorTokenPath } from './provisioning.js';

export interface ControllerArgs {
  broker?: string;
  'data-dir'?: string;
  'mqtt-host'?: string;
  'mqtt-port'?: number;
  'mqtt-ws-port'?: number;
  'http-host'?: string;
  'http-port'?: number;
  operator?: string;
  'broker-username'?: string;
  'broker-password'?: string;
  'legacy-topic'?: string;
  advertise?: string;
  'log-level'?: string;
  console?: boolean;
  'request-timeout'?: number;
  enrolment?: boolean;
  'enrolment-group'?: string[];
}

/** Splits a typed line into words, honouring double and single quotes. */
export function splitWords(line: string): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3] ?? ''));
  return out;
}

export async function runController(args: ControllerArgs, io: CliIO, opts: { stdin?: NodeJS.ReadableStream & { isTTY?: boolean }; env?: NodeJS.ProcessEnv } = {}): Promise<number> {
  const env = opts.env ?? process.env;
  const stdin = opts.stdin ?? process.stdin;
  const interactive = args.console ?? Boolean(stdin.isTTY);
  const dataDir = args['data-dir'] ?? defaultDataDir(env);
  const level = args['log-level'] ?? 'info';
  const logger: Logger = interactive
    ? pino({ name: 'hostManager', level }, pino.destination({ dest: join(dataDir, 'controller.log'), mkdir: true, sync: false }))
    : pino({ name: 'hostManager', level }, pino.destination(2));

  const target = args.broker ? brokerUrlOf(args.broker) : 'the embedded broker';
  if (interactive) io.out(`Connecting to broker at ${target}...`);
  let manager: Manager;
  try {
    manager = await createManager({
      dataDir,
      broker: args.broker,
      mqttHost: args['mqtt-host'] ?? '0.0.0.0',
      mqttPort: args['mqtt-port'] ?? 1883,
      mqttWsPort: args['mqtt-ws-port'] === undefined ? 8083 : args['mqtt-ws-port'] < 0 ? false : args['mqtt-ws-port'],
      httpHost: args['http-host'] ?? '127.0.0.1',
      httpPort: args['http-port'] ?? 7420,
      operatorId: args.operator ?? 'admin',
      brokerUsername: args['broker-username'],
      brokerPassword: args['broker-password'] ?? env['EDGEFLEET_BROKER_PASSWORD'],
      legacyTopic: args['legacy-topic'] ?? 'hello',
      advertiseUrl: args.advertise,
      logger,
      requestTimeoutMs: args['request-timeout'] ?? 10_000,
      enrolment: args.enrolment ? { groups: (args['enrolment-group'] ?? []).flatMap((g) => g.split(',')).filter(Boolean) } : false,
    });
  } catch (error) {
    io.err(`hostManager: ${(error as Error).message}`);
    logger.flush?.();
    return EXIT.failed;
  }
  if (interactive) io.out(`Connected to ${manager.brokerUrl}${manager.broker ? ' (embedded broker)' : ''}`);
  if (manager.operator.created) {
    io.out(
      `Operator token (shown once; the local CLI reads it from ${operatorTokenPath(manager.dataDir)}, mode 0600):\n  ${manager.operator.token}`,
    );
  }
  if (manager.enrolment?.created) {
    io.out(`Fleet provisioning key (shown once; also in ${join(manager.dataDir, 'enrolment.key')}, mode 0600):\n  ${manager.enrolment.key}`);
  }
  if (manager.enrolment) {
    io.out(`Enrolment is on: a new device runs  curl -s -X POST -H 'Authorization: Bearer <key>' -H 'content-type: application/json' -d '{"id":"<id>"}' ${manager.url}/enrol`);
  }
  io.out(`API and dashboard at ${manager.url}  (devices connect to ${manager.advertisedBrokerUrl})`);

  let stopping: Promise<number> | null = null;
  const stop = (code: number): Promise<number> =>
    (stopping ??= (async () => {
      await manager.close();
      logger.flush?.();
      return code;
    })());

  const signals = new Promise<number>((resolve) => {
    const onSignal = (): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      void stop(EXIT.ok).then(resolve);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  if (!interactive) return signals;

  const consoleDone = runConsole(manager, io, stdin, env).then(() => stop(EXIT.ok));
  return Promise.race([signals, consoleDone]);
}

async function runConsole(manager: Manager, io: CliIO, stdin: NodeJS.ReadableStream, env: NodeJS.ProcessEnv): Promise<void> {
  const onFeed = (e: FeedEvent): void => {
    if (e.type === 'device') io.out(`${e.device} ${e.online ? 'online' : 'offline'}`);
    else if (e.type === 'rollout' && e.status !== 'running') io.out(`rollout ${e.id} ${e.status}`);
  };
  manager.fleet.on('feed', onFeed);
  const cliEnv = { ...env, EDGEFLEET_URL: manager.url, EDGEFLEET_TOKEN: manager.operator.token, EDGEFLEET_DATA: manager.dataDir };
  io.out('Press Q<Enter> to quit');
  io.out(`Commands: ${LEGACY_COMMANDS.join('|')} [device|group:NAME|all], or any hostManager command (devices list, deploy m@2 --to pi-1 --wait, ...); help`);
  const rl = createInterface({ input: stdin, terminal: false });
  try {
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === '') continue;
      if (line === 'q' || line === 'Q' || line === 'quit') break;
      const words = splitWords(line);
      const [first, ...rest] = words;
      if (first === 'help') {
        await runCli(['--help'], io, { env: cliEnv, inConsole: false });
        io.out(`Also: ${LEGACY_COMMANDS.join('|')} [device|group:NAME|all] (default all), and Q to quit.`);
        continue;
      }
      if (first && (LEGACY_COMMANDS as readonly string[]).includes(first) && rest.length <= 1) {
        const to = rest[0] ?? 'all';
        try {
          const r = await manager.ops.exec({ to: parseTarget(to), command: first, actor: `operator:${manager.operator.id}` });
          if (r.results.length === 0) io.out('no devices');
          for (const x of r.results) io.out(`${x.device}: ${x.ok ? x.message : `error ${x.error?.code}: ${x.error?.message}`}`);
        } catch (error) {
          io.out(`error: ${(error as Error).message}`);
        }
        continue;
      }
      const code = await runCli(words, io, { env: cliEnv, inConsole: true });
      if (code !== 0) io.out(`(exit ${code})`);
    }
  } finally {
    manager.fleet.off('feed', onFeed);
    rl.close();
  }
  io.out('Disconnecting');
}
