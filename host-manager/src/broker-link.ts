/**
 * The controller's link to the broker: the embedded broker started in this process
 * (credentials read live from the fleet state) with the controller as an in-process
 * client of it, or any MQTT 3.1.1 broker given by address with the controller's own MQTT
 * client; and the URL devices are told to use.
 */
import { randomBytes } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { createBroker } from '@edgefleet/broker';
import type { RunningBroker } from '@edgefleet/broker';
import { FleetError, topics } from '@edgefleet/protocol';
import { stateCredentials } from './access/broker-credentials.js';
import { InProcessClient } from './broker-client.js';
import type { BrokerClient } from './broker-client.js';
import { DEFAULTS } from './defaults.js';
import type { FleetRepository } from './state/repository.js';

export interface BrokerLinkOptions {
  /**
   * An external broker (IP, host:port or URL), or several, comma separated (instances of one
   * cluster: the controller fails over from one to the next). Omitted: the embedded broker
   * starts in this process.
   */
  broker?: string | undefined;
  mqttHost?: string;
  mqttPort?: number;
  /** MQTT over WebSocket for the embedded broker; false = off. */
  mqttWsPort?: number | false;
  /** Credentials for an external broker (defaults: the operator id and token). */
  brokerUsername?: string | undefined;
  brokerPassword?: string | undefined;
  advertiseUrl?: string | undefined;
  /**
   * How the controller reaches the embedded broker: 'in-process' (default: Aedes' own
   * subscribe/publish, no loopback connection) or 'mqtt' (an MQTT client over loopback, the
   * path an external broker takes; for comparison in benchmarks).
   */
  intake?: 'in-process' | 'mqtt';
}

export interface BrokerLink {
  broker: RunningBroker | null;
  client: BrokerClient;
  /** Where the controller's client connects (several URLs comma separated for a cluster); with the embedded broker, its TCP listener (for devices on this host). */
  brokerUrl: string;
  /** What devices are told to use (the same list, unless advertised otherwise). */
  advertised: string;
  /** Closes the connection of a client of the embedded broker now (a removed device); nothing on an external broker. */
  disconnect(clientId: string): void;
  close(): Promise<void>;
}

/** `10.0.0.5`, `10.0.0.5:1884`, `mqtt://host:1883`, `ws://host:8083` → a URL. */
export function brokerUrlOf(text: string): string {
  if (/^[a-z]+:\/\//i.test(text)) return text;
  if (/:\d+$/.test(text)) return `mqtt://${text}`;
  return `mqtt://${text}:${DEFAULTS.mqttPort}`;
}

/** `a, b:1884, mqtt://c:1883` → one URL per broker (brokerUrlOf each). */
export function brokerUrlsOf(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(brokerUrlOf);
}

function lanAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

export async function connectBroker(
  options: BrokerLinkOptions,
  ctx: { state: FleetRepository; operator: { id: string; token: string }; legacyTopic: string; log: Logger },
): Promise<BrokerLink> {
  const { log } = ctx;
  let broker: RunningBroker | null = null;
  let brokerUrl: string;
  let advertised: string;
  /** Clients of the embedded broker by id, from its public connect/disconnect events. */
  const clients = new Map<string, { close(): void }>();
  if (options.broker === undefined) {
    const host = options.mqttHost ?? DEFAULTS.mqttHost;
    broker = await createBroker({
      credentials: stateCredentials(ctx.state),
      tcp: { host, port: options.mqttPort ?? DEFAULTS.mqttPort },
      ...(options.mqttWsPort === false ? {} : { ws: { host, port: options.mqttWsPort ?? DEFAULTS.mqttWsPort } }),
      ...(ctx.legacyTopic ? { legacyTopic: ctx.legacyTopic } : {}),
      logger: log,
    });
    broker.aedes.on('client', (c) => clients.set(c.id, c));
    broker.aedes.on('clientDisconnect', (c) => {
      if (clients.get(c.id) === c) clients.delete(c.id);
    });
    brokerUrl = `mqtt://127.0.0.1:${broker.ports.tcp}`;
    const advHost = host === '0.0.0.0' || host === '::' ? lanAddress() : host;
    advertised = options.advertiseUrl ?? `mqtt://${advHost}:${broker.ports.tcp}`;
  } else {
    const urls = brokerUrlsOf(options.broker);
    if (urls.length === 0) throw new FleetError('bad_request', 'no broker address given; give an IP, host:port or URL (several: comma separated)');
    brokerUrl = urls.join(',');
    advertised = options.advertiseUrl ?? brokerUrl;
  }
  const client: BrokerClient & { endAsync(): Promise<unknown> } =
    broker && options.intake !== 'mqtt'
      ? // subscribed before any device can publish: nothing arrives while the controller starts (broker-client.ts)
        new InProcessClient(broker.aedes, { hold: (['status', 'telemetry', 'events', 'replies'] as const).map((c) => topics.allDevices(c)) })
      : await connectClient(brokerUrl, options, ctx).catch(async (error: Error) => {
          await broker?.close();
          throw new FleetError('unavailable', `cannot connect to the broker at ${brokerUrl}: ${error.message}; check the address and the operator credentials`);
        });
  return {
    broker,
    client,
    brokerUrl,
    advertised,
    disconnect: (clientId) => clients.get(clientId)?.close(),
    async close() {
      await client.endAsync().catch(() => undefined); // closing anyway: a broker that is gone changes nothing
      await broker?.close();
    },
  };
}

async function connectClient(brokerUrl: string, options: BrokerLinkOptions, ctx: { operator: { id: string; token: string }; log: Logger }): Promise<MqttClient> {
  const { log } = ctx;
  const clientId = `${options.brokerUsername ?? ctx.operator.id}-controller-${randomBytes(3).toString('hex')}`;
  log.info({ broker: brokerUrl }, `Connecting to broker at ${brokerUrl}`);
  const urls = brokerUrl.split(',');
  const clientOptions: IClientOptions = {
    clientId,
    username: options.brokerUsername ?? ctx.operator.id,
    password: options.brokerPassword ?? ctx.operator.token,
    protocolVersion: 4,
    clean: true,
    reconnectPeriod: 2000,
    connectTimeout: 10_000,
  };
  const client =
    urls.length === 1
      ? await mqtt.connectAsync(brokerUrl, clientOptions)
      : // a cluster: MQTT.js walks `servers`, one per (re)connect, from the first
        await firstConnect(mqtt.connect({ ...clientOptions, servers: urls.map(serverOf), protocol: serverOf(urls[0]!).protocol }), 12_000 * urls.length);
  client.on('error', (error) => log.warn({ err: error.message }, 'broker connection error'));
  client.on('offline', () => log.warn('lost the broker connection; reconnecting'));
  client.on('connect', () => log.info('Connected'));
  log.info({ clientId }, 'Connected');
  return client;
}

type Protocol = 'mqtt' | 'mqtts' | 'ws' | 'wss';
function serverOf(url: string): { host: string; port: number; protocol: Protocol } {
  const u = new URL(url);
  const protocol = u.protocol.slice(0, -1) as Protocol;
  const port = u.port ? Number(u.port) : { mqtt: DEFAULTS.mqttPort, mqtts: 8883, ws: 80, wss: 443 }[protocol];
  return { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port, protocol };
}

/** Resolves on the first CONNACK while MQTT.js tries one instance after the other; rejects with the last error after `ms`. */
function firstConnect(client: MqttClient, ms: number): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    let last: Error | undefined;
    const onError = (error: Error) => (last = error); // an instance that is down: MQTT.js goes on to the next
    const timer = setTimeout(() => {
      client.off('error', onError);
      client.end(true);
      reject(last ?? new Error(`no broker of the list answered within ${ms} ms`));
    }, ms);
    client.on('error', onError);
    client.once('connect', () => {
      clearTimeout(timer);
      client.off('error', onError);
      resolve(client);
    });
  });
}
