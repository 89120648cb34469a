/**
 * Running the controller from the command line: as a daemon (no terminal: logs to
 * stderr, stops on SIGTERM/SIGINT) or with the interactive console (console.ts; a
 * terminal: logs go to <data-dir>/controller.log).
 */
import { join } from 'node:path';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { createManager } from '../main.js';
import type { Manager } from '../main.js';
import { brokerUrlOf } from '../broker-link.js';
import { DEFAULTS, defaultDataDir } from '../defaults.js';
import { enrolmentKeyPath, operatorTokenPath } from '../access/tokens.js';
import { runConsole } from './console.js';
import { EXIT } from './io.js';
import type { CliIO } from './io.js';

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

export async function runController(args: ControllerArgs, io: CliIO, opts: { stdin?: NodeJS.ReadableStream & { isTTY?: boolean }; env?: NodeJS.ProcessEnv } = {}): Promise<number> {
  const env = opts.env ?? process.env;
  const stdin = opts.stdin ?? process.stdin;
  const interactive = args.console ?? Boolean(stdin.isTTY);
  const dataDir = args['data-dir'] ?? defaultDataDir(env);
  const level = args['log-level'] ?? DEFAULTS.logLevel;
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
      mqttHost: args['mqtt-host'] ?? DEFAULTS.mqttHost,
      mqttPort: args['mqtt-port'] ?? DEFAULTS.mqttPort,
      mqttWsPort: args['mqtt-ws-port'] === undefined ? DEFAULTS.mqttWsPort : args['mqtt-ws-port'] < 0 ? false : args['mqtt-ws-port'],
      httpHost: args['http-host'] ?? DEFAULTS.httpHost,
      httpPort: args['http-port'] ?? DEFAULTS.httpPort,
      operatorId: args.operator ?? DEFAULTS.operatorId,
      brokerUsername: args['broker-username'],
      brokerPassword: args['broker-password'] ?? env['EDGEFLEET_BROKER_PASSWORD'],
      legacyTopic: args['legacy-topic'] ?? DEFAULTS.legacyTopic,
      advertiseUrl: args.advertise,
      logger,
      requestTimeoutMs: args['request-timeout'] ?? DEFAULTS.requestTimeoutMs,
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
    io.out(`Fleet provisioning key (shown once; also in ${enrolmentKeyPath(manager.dataDir)}, mode 0600):\n  ${manager.enrolment.key}`);
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
