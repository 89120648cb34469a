/**
 * Running the controller from the command line: as a daemon (no terminal: logs to
 * stderr, stops on SIGTERM/SIGINT) or with the interactive console (console.ts; a
 * terminal: logs go to <data-dir>/controller.log).
 */
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { createManager } from '../main.js';
import type { Manager } from '../main.js';
import { brokerUrlsOf } from '../broker-link.js';
import { DEFAULTS, defaultDataDir } from '../defaults.js';
import { enrolmentKeyPath, operatorTokenPath } from '../access/tokens.js';
import { readBrokerPassword } from '../broker-setup/password-file.js';
import { runConsole } from './console.js';
import { EXIT, invocation } from './io.js';
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
  'broker-accounts'?: 'auto' | 'mosquitto-dynsec' | 'none';
  'legacy-topic'?: string;
  advertise?: string;
  'log-level'?: string;
  console?: boolean;
  'request-timeout'?: number;
  enrolment?: boolean;
  'enrolment-group'?: string[];
  'http-allowed-hosts'?: string[];
  'max-model-mb'?: number;
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

  const maxModelMb = args['max-model-mb'];
  if (maxModelMb !== undefined && !(Number.isFinite(maxModelMb) && maxModelMb > 0)) {
    io.err(`hostManager: --max-model-mb must be a positive number of MiB (got ${String(maxModelMb)}); the default is ${DEFAULTS.maxModelBytes / (1024 * 1024)}`);
    return EXIT.usage;
  }
  const target = args.broker ? brokerUrlsOf(args.broker).join(', ') : 'the embedded broker';
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
      brokerPassword: args['broker-password'] ?? env['EDGEFLEET_BROKER_PASSWORD'] ?? (args.broker ? await readBrokerPassword(dataDir) : undefined),
      brokerAccounts: args['broker-accounts'] ?? 'auto',
      legacyTopic: args['legacy-topic'] ?? DEFAULTS.legacyTopic,
      advertiseUrl: args.advertise,
      logger,
      requestTimeoutMs: args['request-timeout'] ?? DEFAULTS.requestTimeoutMs,
      enrolment: args.enrolment ? { groups: (args['enrolment-group'] ?? []).flatMap((g) => g.split(',')).filter(Boolean) } : false,
      httpAllowedHosts: (args['http-allowed-hosts'] ?? []).flatMap((h) => h.split(',')).map((h) => h.trim()).filter(Boolean),
      maxModelBytes: Math.round((args['max-model-mb'] ?? DEFAULTS.maxModelBytes / (1024 * 1024)) * 1024 * 1024),
    });
  } catch (error) {
    io.err(`hostManager: ${startErrorText(error, args)}`);
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
  io.out(nextSteps(manager));

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

/** What a new operator does next, printed on every start (the token itself only on the first). */
function nextSteps(manager: Manager): string {
  const run = invocation();
  const lines = [`The CLI on this host reads the operator token from ${operatorTokenPath(manager.dataDir)}; the dashboard asks for it (cat that file).`];
  const setup: string[] = [];
  if (run !== 'hostManager') setup.push(`  alias hostManager="node ${resolve(process.argv[1] ?? 'host-manager/dist/bin/hostManager.js')}"`);
  if (manager.dataDir !== defaultDataDir({})) setup.push(`  export EDGEFLEET_DATA=${manager.dataDir}      # this controller's data directory, for the CLI`);
  const devices = manager.state.devices().length;
  if (devices > 0) {
    lines.push(`${devices} device(s) in the fleet: hostManager devices list | devices watch | rollouts watch, or the dashboard.`, ...setup);
    return lines.join('\n');
  }
  lines.push(
    'Next, in another terminal:',
    ...setup,
    "  hostManager devices add pi-1 --group lab     # prints the command that starts pi-1's agent (on the device, or here to try)",
    '  hostManager models demo                      # writes demo.onnx and demo-input.json (or use your own .onnx)',
    '  hostManager models add demo.onnx',
    '  hostManager deploy demo --to group:lab --wait',
    '  hostManager --help                           # every command; `hostManager completion >> ~/.bashrc` adds tab completion',
  );
  return lines.join('\n');
}

/** A start failure in the user's terms: a port in use names the flag that moves it; anything else its sentence. */
export function startErrorText(error: unknown, args: ControllerArgs): string {
  const message = (error as Error)?.message ?? String(error);
  if (!/EADDRINUSE/.test(message) && (error as { code?: string })?.code !== 'EADDRINUSE') return message;
  const port = Number((error as { port?: number }).port ?? /:(\d+)(?!.*:\d)/.exec(message)?.[1]);
  const uses: [number | undefined, string, string][] = [
    [args['http-port'] ?? DEFAULTS.httpPort, '--http-port', 'the HTTP API and dashboard'],
    [args['mqtt-port'] ?? DEFAULTS.mqttPort, '--mqtt-port', 'the embedded MQTT broker'],
    [args['mqtt-ws-port'] ?? DEFAULTS.mqttWsPort, '--mqtt-ws-port', 'MQTT over WebSocket (-1 turns it off)'],
  ];
  const use = uses.find(([p]) => p === port);
  if (!use) return `port ${port || '?'} is already in use (${message}); stop what listens there or choose other ports (see --help)`;
  const [, flag, what] = use;
  const other = port + 1;
  return `port ${port} is already in use, so ${what} cannot listen there; stop what uses it (another hostManager?) or choose another port: ${flag} ${other} (with npm: npm start -- ${flag} ${other})`;
}
