/**
 * The agent's one MQTT connection, under the device's own identity: a persistent
 * session, a retained last will "offline", and reconnects of its own (exponential
 * backoff with full jitter) that keep the unacknowledged QoS 1 messages. Given several
 * brokers (instances of one cluster), each reconnect goes to the next one in the list.
 */
import { createHash } from 'node:crypto';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { FleetError, encodePayload, makeOffline, topics } from '@edgefleet/protocol';
import { Backoff } from './backoff.js';
import type { AgentConfig } from './config.js';

export interface ConnectionEvents {
  /** After every (re)connection: subscribe, publish status, flush telemetry. */
  onConnected(client: MqttClient): Promise<void>;
  /** `retained`: the broker delivered a stored retained message (sent before we subscribed). */
  onMessage(topic: string, payload: Buffer, retained: boolean): void;
}

const DEFAULT_PORTS: Record<string, number> = { mqtt: 1883, mqtts: 8883, ws: 80, wss: 443 };

/**
 * The brokers in the order this device tries them: the list, rotated to start at a place
 * of the device's own (from a hash of its id), so that a fleet given one list spreads over
 * the instances, and a device always starts at the same one.
 */
export function brokerOrder(urls: readonly string[], device: string): string[] {
  if (urls.length < 2) return [...urls];
  const start = createHash('sha256').update(device).digest().readUInt32BE(0) % urls.length;
  return [...urls.slice(start), ...urls.slice(0, start)];
}

type Protocol = 'mqtt' | 'mqtts' | 'ws' | 'wss';
/** One entry of MQTT.js's `servers` list (which it walks, one per (re)connect). */
function serverOf(url: string): { host: string; port: number; protocol: Protocol } {
  const u = new URL(url);
  const protocol = u.protocol.slice(0, -1) as Protocol;
  return { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: u.port ? Number(u.port) : DEFAULT_PORTS[protocol]!, protocol };
}

export class DeviceConnection {
  #client: MqttClient | undefined;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #stopping = false;
  readonly #backoff: Backoff;

  constructor(
    private readonly config: AgentConfig,
    private readonly logger: Logger,
    private readonly events: ConnectionEvents,
    random?: () => number,
  ) {
    this.#backoff = new Backoff({ minMs: config.reconnectMinMs, maxMs: config.reconnectMaxMs }, random);
  }

  get client(): MqttClient | undefined {
    return this.#client;
  }

  get connected(): boolean {
    return this.#client?.connected ?? false;
  }

  /** QoS 1 publish of a JSON body; rejects with `unavailable` before the first connect. */
  /** Publishes a message as JSON, or framed with its binary parts (packages/protocol frames.ts). */
  publishJson(topic: string, body: unknown, retain = false, binary?: readonly Uint8Array[]): Promise<void> {
    if (!this.#client) return Promise.reject(new FleetError('unavailable', 'the agent has no MQTT connection'));
    return this.#client.publishAsync(topic, encodePayload(body, binary), { qos: 1, retain }).then(() => undefined);
  }

  connect(): void {
    const { config } = this;
    const id = config.device;
    const will = makeOffline('connection lost');
    const options: IClientOptions = {
      clientId: id,
      username: id,
      password: config.token,
      protocolVersion: 4,
      // a persistent session: QoS 1 commands sent during a short disconnect arrive after it
      clean: false,
      keepalive: config.keepaliveS,
      reconnectPeriod: 0, // reconnects are ours: exponential backoff with full jitter
      connectTimeout: 10_000,
      resubscribe: false,
      will: { topic: topics.device(id, 'status'), payload: Buffer.from(JSON.stringify(will)), qos: 1, retain: true },
      ...(config.tls.ca ? { ca: config.tls.ca } : {}),
      ...(config.tls.cert ? { cert: config.tls.cert } : {}),
      ...(config.tls.key ? { key: config.tls.key } : {}),
    };
    const brokers = brokerOrder(config.broker, id);
    // one broker: its URL as given (a WebSocket path included); several: MQTT.js's `servers`, one per (re)connect
    const c =
      brokers.length === 1
        ? mqtt.connect(brokers[0]!, options)
        : mqtt.connect({ ...options, servers: brokers.map(serverOf), protocol: serverOf(brokers[0]!).protocol });
    c.on('connect', (connack) => {
      this.#backoff.reset();
      // requests and replies are small packets: without this, Nagle + delayed ACK add ~40 ms per hop
      (c.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
      const { protocol, host, port } = c.options;
      this.logger.info({ broker: brokers.length === 1 ? brokers[0] : `${protocol}://${host}:${port}`, sessionPresent: connack.sessionPresent }, 'connected');
      this.events.onConnected(c).catch((error: unknown) => this.logger.warn({ err: error }, 'connection setup interrupted'));
    });
    c.on('message', (topic, payload, packet) => this.events.onMessage(topic, payload, packet.retain));
    c.on('close', () => {
      if (!this.#stopping) this.logger.warn('disconnected from the broker');
      this.#scheduleReconnect();
    });
    c.on('error', (error) => {
      this.logger.warn({ err: { message: error.message, code: (error as { code?: unknown }).code } }, 'MQTT error');
    });
    this.#client = c;
  }

  /** No more reconnects from now on (the agent is stopping). */
  stopReconnecting(): void {
    this.#stopping = true;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
  }

  /** Publishes the retained offline status (while connected), then a clean DISCONNECT: the broker discards the will. */
  async close(reason: string): Promise<void> {
    const c = this.#client;
    if (!c) return;
    if (c.connected) {
      await withTimeout(this.publishJson(topics.device(this.config.device, 'status'), makeOffline(reason), true), 3000, undefined).catch((error: unknown) =>
        this.logger.warn({ err: error }, 'could not publish offline status'),
      );
    }
    await withTimeout(c.endAsync(false), 3000, undefined).catch(() => undefined); // a broker that does not answer: forced below
    if (!c.disconnected) await c.endAsync(true).catch(() => undefined); // already gone: nothing left to close
  }

  #scheduleReconnect(): void {
    if (this.#stopping || this.#reconnectTimer || !this.#client) return;
    const delay = this.#backoff.next();
    this.logger.info({ delayMs: delay, attempt: this.#backoff.attempts }, 'reconnecting after backoff');
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      const client = this.#client;
      if (this.#stopping || !client) return;
      // keep the stores: QoS 1 messages not yet acknowledged are resent after the reconnect
      client.reconnect({ incomingStore: client.incomingStore, outgoingStore: client.outgoingStore });
    }, delay);
  }
}

export function withTimeout<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((r) => {
      timer = setTimeout(() => r(fallback), ms);
    }),
  ]);
}
