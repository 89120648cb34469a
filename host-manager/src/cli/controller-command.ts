/** `hostManager [broker]` with no sub-command: the controller's flags (defaults from defaults.ts); running it is bin/hostManager.ts's runner. */
import type { Argv } from 'yargs';
import { DEFAULTS } from '../defaults.js';
import { EXIT, UsageError } from './io.js';
import type { CliContext, CliIO } from './io.js';

/** Runs the controller; provided by bin/hostManager.ts (keeps the command line free of process-wide effects). */
export type ControllerRunner = (args: Record<string, unknown>, io: CliIO) => Promise<number>;

export function controllerCommand<T>(y: Argv<T>, ctx: CliContext, controller: ControllerRunner | undefined): Argv<T> {
  return y.command(
    '$0 [broker]',
    'run the controller (embedded broker unless a broker is given)',
    (yy) =>
      yy
        .positional('broker', { type: 'string', describe: 'external broker: IP, host:port or URL (mqtt://, mqtts://, ws://); several, comma separated, for the instances of a cluster' })
        .option('mqtt-host', { type: 'string', default: DEFAULTS.mqttHost, describe: 'embedded broker: address to listen on' })
        .option('mqtt-port', { type: 'number', default: DEFAULTS.mqttPort, describe: 'embedded broker: MQTT TCP port (0 = any free port)' })
        .option('mqtt-ws-port', { type: 'number', default: DEFAULTS.mqttWsPort, describe: 'embedded broker: MQTT over WebSocket port (-1 = off)' })
        .option('http-host', { type: 'string', default: DEFAULTS.httpHost, describe: 'API and dashboard address' })
        .option('http-port', { type: 'number', default: DEFAULTS.httpPort, describe: 'API and dashboard port (0 = any free port)' })
        .option('http-allowed-hosts', { type: 'string', array: true, default: [], describe: 'names (besides the addresses it listens on) requests may use in Host, e.g. fleet.example.com (comma separated)' })
        .option('max-model-mb', { type: 'number', default: DEFAULTS.maxModelBytes / (1024 * 1024), describe: 'largest model file the registry takes (uploads and paths), in MiB' })
        .option('operator', { type: 'string', default: DEFAULTS.operatorId, describe: 'operator id (MQTT user name of the controller)' })
        .option('broker-username', { type: 'string', describe: 'external broker user name (default: the operator id)' })
        .option('broker-password', { type: 'string', describe: 'external broker password (env EDGEFLEET_BROKER_PASSWORD; default: <data-dir>/broker.password from `broker setup`, else the operator token)' })
        .option('broker-accounts', { choices: ['auto', 'mosquitto-dynsec', 'none'] as const, default: 'auto' as const, describe: "external broker: manage each device's client and role in Mosquitto's dynamic security (auto: when the broker answers it)" })
        .option('legacy-topic', { type: 'string', default: DEFAULTS.legacyTopic, describe: "the original plain-text command topic ('' = off)" })
        .option('advertise', { type: 'string', describe: "broker URL devices are told to use (default: this host's address)" })
        .option('log-level', { type: 'string', default: DEFAULTS.logLevel, choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] })
        .option('console', { type: 'boolean', describe: 'interactive console (default: when stdin is a terminal)' })
        .option('enrolment', { type: 'boolean', default: false, describe: 'let new devices exchange the fleet provisioning key for their own credential (POST /enrol)' })
        .option('enrolment-group', { type: 'string', array: true, default: [], describe: 'group(s) enrolled devices join' })
        .option('request-timeout', { type: 'number', default: DEFAULTS.requestTimeoutMs, describe: 'ms to wait for a device to answer a command' }),
    async (a) => {
      if (ctx.inConsole) {
        ctx.io.err(`unknown command "${String((a as { broker?: unknown }).broker ?? '')}"; type \`help\` for the commands`);
        ctx.setCode(EXIT.usage);
        return;
      }
      if (!controller) throw new UsageError('no controller runner in this context');
      ctx.setCode(await controller(a as Record<string, unknown>, ctx.io));
    },
  );
}
