/** The controller's defaults, in one place: the CLI's flags, the console and createManager all read them here. */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { LEGACY_TOPIC } from '@edgefleet/protocol';

export const DEFAULTS = {
  /** Embedded broker listeners. */
  mqttHost: '0.0.0.0',
  mqttPort: 1883,
  mqttWsPort: 8083,
  /** The HTTP API and dashboard: loopback only unless told otherwise. */
  httpHost: '127.0.0.1',
  httpPort: 7420,
  operatorId: 'admin',
  /** The original plain-text command topic; '' turns it off. */
  legacyTopic: LEGACY_TOPIC,
  /** How long a command sent to a device waits for its reply. */
  requestTimeoutMs: 10_000,
  logLevel: 'info',
  /** The largest model the registry takes (uploads and files on the controller host): 2 GiB, protobuf's own limit for an ONNX file. */
  maxModelBytes: 2 * 1024 * 1024 * 1024,
} as const;

export const DEFAULT_MQTT_PORT = DEFAULTS.mqttPort;
export const DEFAULT_MQTT_WS_PORT = DEFAULTS.mqttWsPort;
export const DEFAULT_HTTP_PORT = DEFAULTS.httpPort;

/** Where the running controller announces its URL and pid (the CLI finds it there). */
export const CONTROLLER_FILE = 'controller.json';

/** `$EDGEFLEET_DATA`, or `~/.edgefleet`. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env['EDGEFLEET_DATA'] ?? join(homedir(), '.edgefleet'));
}
