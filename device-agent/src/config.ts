/**
 * The agent's configuration: one table of keys. From it come the zod schema
 * (types, defaults, validation), the environment variable names
 * (EDGEFLEET_<KEY>) and the command-line flags (--<key>), so the three never
 * drift apart. Sources merge as: JSON config file < environment < flags.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { z } from 'zod';
import { NAME_PATTERN } from '@edgefleet/protocol';

const BROKER_URL = /^(mqtts?|wss?):\/\/[^/\s]+/;
/** `a, b,,c` -> ['a', 'b', 'c'] (lists in the environment, flags and the config file). */
function splitList(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
const name = z.string().regex(NAME_PATTERN, 'use 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit');
const port = z.number().int().min(0).max(65535);
const commandLine = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

type Kind = 'string' | 'number' | 'boolean' | 'list' | 'command';

interface KeySpec {
  schema: z.ZodType;
  kind: Kind;
  describe: string;
  secret?: boolean;
  /** The environment variable, when it is not EDGEFLEET_<KEY>. */
  env?: string;
  /** An older name still read (after `env`), with a warning. */
  deprecatedEnv?: string;
}

/** Every configuration key, its type, default and meaning. */
export const CONFIG_KEYS = {
  broker: {
    kind: 'list',
    describe:
      'broker URL: mqtt://host:1883, mqtts://host:8883 or ws://host:8080; or several, comma separated, ' +
      'instances of one cluster: each reconnect goes to the next (each device starts at its own place in the list)',
    schema: z
      .preprocess((v) => (typeof v === 'string' ? splitList(v) : v), z.array(z.string().refine((v) => BROKER_URL.test(v), 'expected a URL starting with mqtt://, mqtts://, ws:// or wss://')))
      .default(['mqtt://127.0.0.1:1883'])
      .refine((list) => list.length > 0, 'expected at least one broker URL')
      .refine((list) => list.length === 1 || list.every((u) => /^[a-z]+:\/\/[^/]+\/?$/i.test(u)), 'a list of brokers cannot carry paths: give scheme://host:port for each'),
  },
  device: { kind: 'string', describe: 'this device id (also the MQTT client id and username)', schema: name },
  token: {
    kind: 'string',
    secret: true,
    describe: 'the device token (prefer EDGEFLEET_DEVICE_TOKEN or tokenFile: flags are visible in ps)',
    env: 'EDGEFLEET_DEVICE_TOKEN',
    deprecatedEnv: 'EDGEFLEET_TOKEN',
    schema: z.string().min(1, 'expected the non-empty device token').optional(),
  },
  tokenFile: { kind: 'string', describe: 'file holding the device token', schema: z.string().min(1).optional() },
  fleetPublicKey: {
    kind: 'string',
    describe: "the fleet's ed25519 public key: a PEM file path or the PEM text itself",
    schema: z.string().min(1).optional(),
  },
  dataDir: {
    kind: 'string',
    describe: 'directory for models, logs, the telemetry buffer and all state needed to resume',
    schema: z.string().min(1).default('/var/lib/edgefleet-agent'),
  },
  groups: { kind: 'list', describe: 'groups this device belongs to (comma separated)', schema: z.array(name).default([]) },
  http: { kind: 'boolean', describe: 'serve the local HTTP inference API', schema: z.boolean().default(true) },
  httpHost: { kind: 'string', describe: 'address the HTTP inference API binds to', schema: z.string().min(1).default('127.0.0.1') },
  httpPort: { kind: 'number', describe: 'port of the HTTP inference API (0 = any free port)', schema: port.default(8470) },
  httpMaxBodyMb: {
    kind: 'number',
    describe: 'largest HTTP inference request body in MB (MiB); larger ones get 413',
    schema: z.number().positive().max(4096).default(64),
  },
  inferenceThreads: {
    kind: 'number',
    describe: 'onnxruntime intra-op threads (default: cores - 1, at least 1)',
    schema: z.number().int().min(1).max(256).default(Math.max(1, availableParallelism() - 1)),
  },
  workerSessionMb: {
    kind: 'number',
    describe: 'models of at least this many MB (MiB) are loaded and run on a worker thread of their own, so loading one does not pause the agent (0 = every model)',
    schema: z.number().min(0).max(1_048_576).default(8),
  },
  keepVersions: {
    kind: 'number',
    describe: 'model versions kept on disk per model (the active one included)',
    schema: z.number().int().min(1).max(100).default(2),
  },
  transferExpiryS: {
    kind: 'number',
    describe: 'a staged transfer neither offered again nor sent a chunk for this many seconds is removed with its files (at start and periodically)',
    schema: z.number().int().min(1).max(30 * 86_400).default(86_400),
  },
  dockerSocket: {
    kind: 'string',
    describe: "the Docker engine's unix socket (default: DOCKER_HOST, else /var/run/docker.sock); an engine that does not answer turns containers off, nothing else",
    schema: z.string().min(1).optional(),
  },
  dockerRoot: {
    kind: 'string',
    describe: "the engine's data root as this agent sees it, for the free-space check before an image loads (default: the engine's DockerRootDir)",
    schema: z.string().min(1).optional(),
  },
  telemetryIntervalMs: {
    kind: 'number',
    describe: 'milliseconds between telemetry samples',
    schema: z.number().int().min(100).max(86_400_000).default(10_000),
  },
  telemetryBufferMax: {
    kind: 'number',
    describe: 'samples kept on disk while offline (oldest dropped beyond)',
    schema: z.number().int().min(1).max(1_000_000).default(8640),
  },
  legacyTopic: {
    kind: 'string',
    describe: 'enable the original plain-text command channel on this topic (e.g. hello)',
    schema: z.string().min(1).max(256).refine((t) => !/[+#]/.test(t), 'expected a topic without wildcards').optional(),
  },
  legacyProgram: {
    kind: 'command',
    describe: 'the program `start` launches, e.g. "python3 infer.py --camera 0"',
    schema: commandLine.optional(),
  },
  legacyInstall: { kind: 'command', describe: 'the command `install` runs', schema: commandLine.optional() },
  legacyStopTimeoutMs: {
    kind: 'number',
    describe: 'milliseconds between SIGTERM and SIGKILL for `stop`',
    schema: z.number().int().min(0).max(600_000).default(5000),
  },
  caFile: { kind: 'string', describe: 'CA certificate (PEM) for mqtts://', schema: z.string().min(1).optional() },
  certFile: { kind: 'string', describe: 'client certificate (PEM) for mqtts://', schema: z.string().min(1).optional() },
  keyFile: { kind: 'string', describe: 'client key (PEM) for mqtts://', schema: z.string().min(1).optional() },
  keepaliveS: { kind: 'number', describe: 'MQTT keepalive in seconds', schema: z.number().int().min(1).max(3600).default(30) },
  reconnectMinMs: {
    kind: 'number',
    describe: 'first reconnect backoff ceiling in milliseconds',
    schema: z.number().int().min(1).max(3_600_000).default(1000),
  },
  reconnectMaxMs: {
    kind: 'number',
    describe: 'largest reconnect backoff in milliseconds',
    schema: z.number().int().min(1).max(3_600_000).default(60_000),
  },
  shutdownTimeoutMs: {
    kind: 'number',
    describe: 'how long SIGTERM waits for in-flight requests before giving up',
    schema: z.number().int().min(0).max(600_000).default(20_000),
  },
  logLevel: {
    kind: 'string',
    describe: 'log level',
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  },
} satisfies Record<string, KeySpec>;

export type ConfigKey = keyof typeof CONFIG_KEYS;

const shape = Object.fromEntries(Object.entries(CONFIG_KEYS).map(([k, spec]) => [k, spec.schema])) as {
  [K in ConfigKey]: (typeof CONFIG_KEYS)[K]['schema'];
};

export const ConfigSchema = z
  .object(shape)
  .strict()
  .superRefine((c, ctx) => {
    if (c.reconnectMaxMs < c.reconnectMinMs) {
      ctx.addIssue({ code: 'custom', path: ['reconnectMaxMs'], message: `expected at least reconnectMinMs (${c.reconnectMinMs})` });
    }
    if (c.token === undefined && c.tokenFile === undefined) {
      ctx.addIssue({ code: 'custom', path: ['token'], message: 'expected a device token (EDGEFLEET_DEVICE_TOKEN, tokenFile or --token)' });
    }
    if ((c.certFile === undefined) !== (c.keyFile === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['keyFile'], message: 'expected certFile and keyFile together' });
    }
  });

type RawConfig = z.output<typeof ConfigSchema>;

/** The validated configuration, with files read: token and PEMs are their contents. */
export interface AgentConfig extends Omit<RawConfig, 'token' | 'tokenFile' | 'fleetPublicKey' | 'legacyProgram' | 'legacyInstall'> {
  token: string;
  fleetPublicKeyPem: string | undefined;
  legacyProgram: string[] | undefined;
  legacyInstall: string[] | undefined;
  tls: { ca?: Buffer; cert?: Buffer; key?: Buffer };
}

/** A configuration error: names the key, where it came from, and what is expected. Exit code 2. */
export class ConfigError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function envName(key: string): string {
  const spec = (CONFIG_KEYS as Record<string, KeySpec>)[key];
  return spec?.env ?? `EDGEFLEET_${key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`;
}

export function flagName(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();
}

/** Splits a command line on blanks, honouring single and double quotes (no other shell syntax). */
export function splitCommandLine(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  let current = '';
  let last = -1;
  for (const m of line.matchAll(re)) {
    const piece = m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3] ?? '');
    if (last === m.index && out.length > 0) {
      current += piece; // adjacent pieces form one word: a"b c" is `ab c`
      out[out.length - 1] = current;
    } else {
      current = piece;
      out.push(piece);
    }
    last = m.index + m[0].length;
  }
  return out;
}

/** Turns a text value (from the environment or a flag) into what the key's schema expects. */
function coerce(kind: Kind, value: unknown): unknown {
  if (typeof value !== 'string') return value;
  switch (kind) {
    case 'number':
      return value.trim() === '' || Number.isNaN(Number(value)) ? value : Number(value);
    case 'boolean':
      if (/^(1|true|yes|on)$/i.test(value)) return true;
      if (/^(0|false|no|off)$/i.test(value)) return false;
      return value;
    case 'list':
      return splitList(value);
    default:
      return value;
  }
}

export interface ConfigSources {
  /** Command-line arguments, without `node` and the script. */
  argv?: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** Base directory for relative paths (default: the current directory). */
  cwd?: string;
}

export interface LoadedConfig {
  config: AgentConfig;
  /** Where each key's value came from (for the startup log; no values). */
  origin: Partial<Record<ConfigKey, 'file' | 'env' | 'flag'>>;
  warnings: string[];
}

/** Parses flags with yargs, generated from the key table. Exported for `--help`. */
export async function parseFlags(argv: readonly string[]): Promise<{ values: Record<string, unknown>; configFile?: string }> {
  const { default: yargs } = await import('yargs');
  let parser = yargs([...argv])
    .scriptName('deviceAgent')
    .usage('$0 [options]\n\nThe edgefleet device agent. Every option is also read from EDGEFLEET_<OPTION> and from a JSON config file.')
    .option('config', { type: 'string', describe: `JSON config file (env ${envName('config')})` })
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      throw new ConfigError(err?.message ?? msg);
    })
    .version(false)
    .help(true);
  for (const [key, spec] of Object.entries(CONFIG_KEYS) as [ConfigKey, KeySpec][]) {
    const type = spec.kind === 'boolean' ? 'boolean' : 'string';
    parser = parser.option(flagName(key), {
      type,
      describe: `${spec.describe} (env ${envName(key)})`,
      ...(spec.kind === 'list' ? { type: 'string' } : {}),
    });
  }
  const parsed = (await parser.parseAsync()) as Record<string, unknown>;
  const values: Record<string, unknown> = {};
  for (const key of Object.keys(CONFIG_KEYS)) {
    const v = parsed[flagName(key)];
    if (v !== undefined) values[key] = Array.isArray(v) ? v.join(',') : v;
  }
  const configFile = typeof parsed.config === 'string' ? parsed.config : undefined;
  return configFile === undefined ? { values } : { values, configFile };
}

function readText(path: string, key: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`${key}: cannot read ${what} "${path}" (${(error as NodeJS.ErrnoException).code ?? String(error)}); expected a readable file`);
  }
}

function describeIssues(error: z.ZodError, origin: LoadedConfig['origin'], input: Record<string, unknown>): string {
  return error.issues
    .slice(0, 8)
    .map((issue) => {
      const key = String(issue.path[0] ?? '(root)');
      if (issue.code === 'unrecognized_keys') {
        return `unknown key(s) ${issue.keys.join(', ')} in the config file; known: ${Object.keys(CONFIG_KEYS).join(', ')}`;
      }
      const spec = (CONFIG_KEYS as Record<string, KeySpec>)[key];
      const from = origin[key as ConfigKey];
      const where = spec ? ` (flag --${flagName(key)}, env ${envName(key)}${from ? `; given by ${from}` : ''})` : '';
      const given = input[key];
      const message =
        issue.code === 'invalid_type' && given === undefined
          ? `required: ${spec?.describe ?? 'a value'}`
          : `${issue.message}${given !== undefined && typeof given !== 'object' && !spec?.secret ? ` (got ${JSON.stringify(given)})` : ''}`;
      return `${key}${where}: ${message}`;
    })
    .join('\n');
}

/** Reads file < env < flags, validates, reads referenced files. Throws ConfigError (exit code 2). */
export async function loadConfig(sources: ConfigSources = {}): Promise<LoadedConfig> {
  const env = sources.env ?? process.env;
  const cwd = sources.cwd ?? process.cwd();
  const flags = await parseFlags(sources.argv ?? []);
  const merged: Record<string, unknown> = {};
  const origin: LoadedConfig['origin'] = {};
  const warnings: string[] = [];

  const configFile = flags.configFile ?? env[envName('config')];
  if (configFile !== undefined && configFile !== '') {
    const text = readText(resolve(cwd, configFile), 'config', 'config file');
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new ConfigError(`config: "${configFile}" is not valid JSON (${(error as Error).message}); expected a JSON object of keys`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new ConfigError(`config: "${configFile}" must hold a JSON object of keys (${Object.keys(CONFIG_KEYS).join(', ')})`);
    }
    for (const [k, v] of Object.entries(json)) {
      merged[k] = v;
      origin[k as ConfigKey] = 'file';
    }
  }
  for (const [key, spec] of Object.entries(CONFIG_KEYS) as [ConfigKey, KeySpec][]) {
    let v = env[envName(key)];
    if ((v === undefined || v === '') && spec.deprecatedEnv && env[spec.deprecatedEnv]) {
      v = env[spec.deprecatedEnv];
      warnings.push(`${spec.deprecatedEnv} is deprecated for the device token; use ${envName(key)} (the operator's token is EDGEFLEET_OPERATOR_TOKEN)`);
    }
    if (v !== undefined && v !== '') {
      merged[key] = coerce(spec.kind, v);
      origin[key] = 'env';
    }
  }
  for (const [key, v] of Object.entries(flags.values)) {
    const spec = CONFIG_KEYS[key as ConfigKey] as KeySpec;
    merged[key] = coerce(spec.kind, v);
    origin[key as ConfigKey] = 'flag';
  }
  if (origin.token === 'flag') warnings.push(`token given as a flag is visible to every user in ps; use ${envName('token')} or tokenFile`);

  const result = ConfigSchema.safeParse(merged);
  if (!result.success) {
    let text = describeIssues(result.error, origin, merged);
    // cross-key rules only run once every key is valid; say the token is missing right away anyway
    if (merged.token === undefined && merged.tokenFile === undefined && !text.includes('\ntoken ')) {
      text += `\ntoken (flag --token, env ${envName('token')}): expected a device token (${envName('token')}, tokenFile or --token)`;
    }
    throw new ConfigError(`invalid configuration:\n${text}`);
  }
  const raw = result.data;

  const token = raw.token ?? readText(resolve(cwd, raw.tokenFile as string), 'tokenFile', 'token file').trim();
  if (token === '') throw new ConfigError('tokenFile: the token file is empty; expected the device token');
  let fleetPublicKeyPem: string | undefined;
  if (raw.fleetPublicKey !== undefined) {
    fleetPublicKeyPem = raw.fleetPublicKey.includes('-----BEGIN')
      ? raw.fleetPublicKey
      : readText(resolve(cwd, raw.fleetPublicKey), 'fleetPublicKey', 'public key file');
    if (!fleetPublicKeyPem.includes('-----BEGIN PUBLIC KEY-----')) {
      throw new ConfigError('fleetPublicKey: expected a PEM public key ("-----BEGIN PUBLIC KEY-----"), as written by the host manager');
    }
  } else {
    warnings.push('no fleetPublicKey: model transfers will be refused until one is configured');
  }
  const toArgv = (c: string | string[] | undefined, key: string): string[] | undefined => {
    if (c === undefined) return undefined;
    const argv = Array.isArray(c) ? c : splitCommandLine(c);
    if (argv.length === 0) throw new ConfigError(`${key}: expected a command line, got nothing`);
    return argv;
  };
  if (raw.legacyProgram !== undefined && raw.legacyTopic === undefined) {
    warnings.push('legacyProgram is set but legacyTopic is not: the plain-text channel is off (the legacy request command still works)');
  }
  const tls: AgentConfig['tls'] = {};
  if (raw.caFile) tls.ca = Buffer.from(readText(resolve(cwd, raw.caFile), 'caFile', 'CA file'));
  if (raw.certFile) tls.cert = Buffer.from(readText(resolve(cwd, raw.certFile), 'certFile', 'certificate file'));
  if (raw.keyFile) tls.key = Buffer.from(readText(resolve(cwd, raw.keyFile), 'keyFile', 'key file'));

  const { token: _t, tokenFile: _tf, fleetPublicKey: _k, legacyProgram, legacyInstall, ...rest } = raw;
  const config: AgentConfig = {
    ...rest,
    dataDir: resolve(cwd, raw.dataDir),
    token,
    fleetPublicKeyPem,
    legacyProgram: toArgv(legacyProgram, 'legacyProgram'),
    legacyInstall: toArgv(legacyInstall, 'legacyInstall'),
    tls,
  };
  return { config, origin, warnings };
}

/** The configuration as it may be logged: secrets and key material left out. */
export function redactConfig(config: AgentConfig): Record<string, unknown> {
  const { token: _t, tls, fleetPublicKeyPem, ...rest } = config;
  return { ...rest, token: '[redacted]', fleetPublicKey: fleetPublicKeyPem ? '[configured]' : null, tls: Object.keys(tls) };
}

/** Builds a config programmatically (tests, embedding): same schema, same defaults. */
export function makeConfig(values: Partial<Record<ConfigKey, unknown>> & { device: string; token: string }): AgentConfig {
  const result = ConfigSchema.safeParse(values);
  if (!result.success) throw new ConfigError(`invalid configuration:\n${describeIssues(result.error, {}, values)}`);
  const { token, tokenFile: _tf, fleetPublicKey, legacyProgram, legacyInstall, ...rest } = result.data;
  const split = (c: string | string[] | undefined) => (c === undefined ? undefined : Array.isArray(c) ? c : splitCommandLine(c));
  return {
    ...rest,
    token: token as string,
    fleetPublicKeyPem: fleetPublicKey,
    legacyProgram: split(legacyProgram),
    legacyInstall: split(legacyInstall),
    tls: {},
  };
}
