/**
 * The `broker` command's configuration: flags (yargs) and the credentials file (zod).
 * The bin is a thin wrapper around `parseBrokerArgs` + `createBroker`.
 */
import { readFileSync } from 'node:fs';
import yargs from 'yargs';
import { z } from 'zod';
import { BrokerConfigError, type BrokerOptions } from './broker.js';
import { hashSecret, isSecretHash } from '@edgefleet/node-io';
import { assertCredential, staticCredentials, type Credential, type CredentialStore } from './credentials.js';


const Name = z.string().min(1);
const Secret = z
  .object({ id: Name, tokenHash: z.string().optional(), token: z.string().min(16, 'tokens must be at least 16 characters').optional() })
  .refine((c) => (c.token === undefined) !== (c.tokenHash === undefined), { message: 'give exactly one of "tokenHash" (preferred) or "token"' });
const CredentialsFileSchema = z
  .object({
    devices: z.array(Secret.and(z.object({ groups: z.array(Name).default([]) }))).default([]),
    operators: z.array(Secret).default([]),
  })
  .strict();

/**
 * Reads `{ devices: [{ id, tokenHash | token, groups }], operators: [{ id, tokenHash | token }] }`.
 * Plain tokens are hashed on load and reported in `warnings` (store `broker hash-token` output instead).
 */
export function loadCredentialsFile(path: string): { store: CredentialStore; count: number; warnings: string[] } {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new BrokerConfigError(`cannot read credentials file "${path}": ${(err as Error).message}`);
  }
  const parsed = CredentialsFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new BrokerConfigError(`credentials file "${path}": ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const warnings: string[] = [];
  const list: Credential[] = [];
  const add = (role: Credential['role'], e: { id: string; token?: string | undefined; tokenHash?: string | undefined }, groups: string[]) => {
    if (e.tokenHash !== undefined && !isSecretHash(e.tokenHash)) {
      throw new BrokerConfigError(`credentials file "${path}": ${role} "${e.id}": tokenHash is not a scrypt hash; make one with \`broker hash-token\``);
    }
    if (e.token !== undefined) warnings.push(`${role} "${e.id}" has a plain-text token in ${path}; store its tokenHash instead (broker hash-token)`);
    const credential: Credential = { role, id: e.id, groups, secretHash: e.tokenHash ?? hashSecret(e.token!) };
    try {
      list.push(assertCredential(credential));
    } catch (err) {
      throw new BrokerConfigError(`credentials file "${path}": ${(err as Error).message}`);
    }
  };
  for (const d of parsed.data.devices) add('device', d, d.groups);
  for (const o of parsed.data.operators) add('operator', o, []);
  try {
    return { store: staticCredentials(list), count: list.length, warnings };
  } catch (err) {
    throw new BrokerConfigError(`credentials file "${path}": ${(err as Error).message}`);
  }
}

export function brokerCli(argv: string[]) {
  return yargs(argv)
    .scriptName('broker')
    .usage('$0 [options]\n\nRuns the edgefleet MQTT broker alone (Aedes with authentication, ACL and packet validation).\n$0 hash-token < token.txt   prints the tokenHash of a token read from stdin')
    .option('host', { type: 'string', default: '0.0.0.0', describe: 'address of every listener' })
    .option('port', { type: 'number', default: 1883, describe: 'MQTT over TCP (0 = any free port)' })
    .option('tls-port', { type: 'number', describe: 'MQTT over TLS; needs --tls-key and --tls-cert' })
    .option('tls-key', { type: 'string', describe: 'PEM private key file' })
    .option('tls-cert', { type: 'string', describe: 'PEM certificate file' })
    .option('tls-ca', { type: 'string', describe: 'PEM CA file: clients must present a certificate it signed' })
    .option('ws-port', { type: 'number', describe: 'MQTT over WebSocket, for browsers' })
    .option('credentials', { type: 'string', describe: 'JSON file {devices:[{id,tokenHash,groups}],operators:[{id,tokenHash}]}' })
    .option('allow-anonymous', { type: 'boolean', default: false, describe: 'DEVELOPMENT ONLY: clients without a user name get operator rights' })
    .option('max-packet-size', { type: 'number', describe: 'bytes, enforced before a packet is buffered (default 4194304)' })
    .option('max-topic-length', { type: 'number', describe: 'bytes (default 1024)' })
    .option('max-topic-levels', { type: 'number', describe: 'levels (default 32)' })
    .option('max-queued-bytes', { type: 'number', describe: "bytes queued for one connection beyond which its QoS 0 messages are dropped (default 67108864)" })
    .option('stall-ms', { type: 'number', describe: 'stop waiting for a subscriber that takes no byte for this long (default 2000)' })
    .option('stall-timeout-ms', { type: 'number', describe: 'close a stalled connection that takes no byte for this long (default 30000)' })
    .option('legacy-topic', { type: 'string', describe: "plain-text channel granted to everyone (e.g. 'hello')" })
    .option('redis', { type: 'string', describe: 'redis://host:port: share sessions and messages with other broker instances' })
    .option('heartbeat-ms', { type: 'number', describe: 'with --redis: how often this instance tells the others it is alive (default 10000)' })
    .option('log-level', { type: 'string', default: 'info', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] })
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      throw new BrokerConfigError(msg ?? err?.message ?? 'invalid arguments');
    })
    .help();
}

export interface BrokerCliConfig {
  options: Omit<BrokerOptions, 'logger'>;
  logLevel: string;
  warnings: string[];
}

/** Parses the command line into createBroker options; throws BrokerConfigError with a sentence that says what to fix. */
export async function parseBrokerArgs(argv: string[]): Promise<BrokerCliConfig> {
  const a = await brokerCli(argv).parse();
  if (a._.length > 0) throw new BrokerConfigError(`unexpected argument "${String(a._[0])}"; see broker --help`);
  const port = (name: string, v: number | undefined): number | undefined => {
    if (v === undefined) return undefined;
    if (!Number.isInteger(v) || v < 0 || v > 65535) throw new BrokerConfigError(`--${name} must be a port number from 0 to 65535, got ${Number.isNaN(v) ? "something that is not a number" : String(v)}`);
    return v;
  };
  const positive = (name: string, v: number | undefined): number | undefined => {
    if (v === undefined) return undefined;
    if (!Number.isInteger(v) || v <= 0) throw new BrokerConfigError(`--${name} must be a positive integer, got ${Number.isNaN(v) ? "something that is not a number" : String(v)}`);
    return v;
  };
  const host = a.host;
  const warnings: string[] = [];
  const options: Omit<BrokerOptions, 'logger'> = {
    credentials: staticCredentials([]),
    allowAnonymous: a['allow-anonymous'],
    tcp: { host, port: port('port', a.port)! },
  };
  if (a.credentials) {
    const loaded = loadCredentialsFile(a.credentials);
    options.credentials = loaded.store;
    warnings.push(...loaded.warnings);
    if (loaded.count === 0 && !a['allow-anonymous']) throw new BrokerConfigError(`credentials file "${a.credentials}" lists nobody: add devices or operators`);
  } else if (!a['allow-anonymous']) {
    throw new BrokerConfigError('no client could connect: give --credentials <file> (or --allow-anonymous for development)');
  }
  const tlsPort = port('tls-port', a['tls-port']);
  if (tlsPort !== undefined) {
    if (!a['tls-key'] || !a['tls-cert']) throw new BrokerConfigError('--tls-port needs --tls-key <file> and --tls-cert <file>');
    options.tls = { host, port: tlsPort, key: a['tls-key'], cert: a['tls-cert'], ...(a['tls-ca'] ? { ca: a['tls-ca'], requestCert: true } : {}) };
  } else if (a['tls-key'] || a['tls-cert'] || a['tls-ca']) {
    throw new BrokerConfigError('--tls-key/--tls-cert/--tls-ca need --tls-port <port>');
  }
  const wsPort = port('ws-port', a['ws-port']);
  if (wsPort !== undefined) options.ws = { host, port: wsPort };
  const maxPacketSize = positive('max-packet-size', a['max-packet-size']);
  if (maxPacketSize !== undefined) options.maxPacketSize = maxPacketSize;
  const maxTopicLength = positive('max-topic-length', a['max-topic-length']);
  if (maxTopicLength !== undefined) options.maxTopicLength = maxTopicLength;
  const maxTopicLevels = positive('max-topic-levels', a['max-topic-levels']);
  if (maxTopicLevels !== undefined) options.maxTopicLevels = maxTopicLevels;
  const maxQueuedBytes = positive('max-queued-bytes', a['max-queued-bytes']);
  if (maxQueuedBytes !== undefined) options.maxQueuedBytes = maxQueuedBytes;
  const stallMs = positive('stall-ms', a['stall-ms']);
  if (stallMs !== undefined) options.stallMs = stallMs;
  const stallTimeoutMs = positive('stall-timeout-ms', a['stall-timeout-ms']);
  if (stallTimeoutMs !== undefined) options.stallTimeoutMs = stallTimeoutMs;
  if (a['legacy-topic'] !== undefined) options.legacyTopic = a['legacy-topic'];
  if (a.redis !== undefined) {
    if (!/^rediss?:\/\//.test(a.redis)) throw new BrokerConfigError(`--redis must be a redis:// or rediss:// URL, got "${a.redis}"`);
    options.persistence = { kind: 'redis', url: a.redis };
  }
  const heartbeatMs = positive('heartbeat-ms', a['heartbeat-ms']);
  if (heartbeatMs !== undefined) {
    if (a.redis === undefined) throw new BrokerConfigError('--heartbeat-ms is for a cluster: give --redis <url> too');
    options.heartbeatMs = heartbeatMs;
  }
  return { options, logLevel: a['log-level'], warnings };
}
