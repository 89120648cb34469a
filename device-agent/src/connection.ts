/**
 * The agent's one MQTT connection, under the device's own identity: a persistent
 * session, a retained last will "offline", and reconnects of its own (exponential
 * backoff with full jitter) that keep the unacknowledged QoS 1 messages.
 */
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
    const c = mqtt.connect(config.broker, options);
    c.on('connect', (connack) => {
      this.#backoff.reset();
      // requests and replies are small packets: without this, Nagle + delayed ACK add ~40 ms per hop
      (c.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
      this.logger.info({ broker: config.broker, sessionPresent: connack.sessionPresent }, 'connected');
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
