/**
 * How the controller talks to the broker: the part of MQTT.js's client it uses
 * (`BrokerClient`), so that with the embedded broker the same code runs on an in-process
 * client instead of a loopback MQTT connection. In process, a device's message reaches the
 * controller as a call, not as a second PUBLISH over loopback with its own PUBACK (two
 * socket writes and two parses per message less); against an external broker the
 * controller keeps its MQTT client.
 */
import { EventEmitter } from 'node:events';
import type { RunningBroker } from '@edgefleet/broker';

type Aedes = RunningBroker['aedes'];
type Deliver = Parameters<Aedes['subscribe']>[1];
type DeliveredPacket = Parameters<Deliver>[0];
type PublishPacket = Parameters<Aedes['publish']>[0];

/** Messages kept for held filters at most (about 20 s of a 10,000-device fleet's telemetry). */
export const HOLD_LIMIT = 200_000;

export type Qos = 0 | 1;
export type MessageListener = (topic: string, payload: Buffer, packet: { retain: boolean }) => void;

/** What the controller needs of a broker connection (MQTT.js's MqttClient has all of it). */
export interface BrokerClient {
  readonly connected: boolean;
  on(event: 'message', listener: MessageListener): unknown;
  off(event: 'message', listener: MessageListener): unknown;
  subscribeAsync(filters: string | string[], opts: { qos: Qos }): Promise<unknown>;
  unsubscribeAsync(filters: string | string[]): Promise<unknown>;
  publish(topic: string, payload: string | Buffer, opts: { qos: Qos; retain?: boolean }): unknown;
  publishAsync(topic: string, payload: string | Buffer, opts: { qos: Qos; retain?: boolean }): Promise<unknown>;
}

/**
 * The controller as a subscriber inside the embedded broker (Aedes' own subscribe and
 * publish API). It has operator rights by construction: nothing it publishes passes the
 * device ACL, as nothing the operator's MQTT client published was refused by it either.
 * A subscription gets the retained messages that match it, as a broker sends them on SUBSCRIBE.
 */
export class InProcessClient extends EventEmitter<{ message: Parameters<MessageListener> }> implements BrokerClient {
  readonly #aedes: Aedes;
  readonly #subscriptions = new Map<string, Deliver>();
  /** Filters subscribed at construction whose messages wait here until someone subscribes to them. */
  readonly #held = new Map<string, { topic: string; payload: Buffer }[]>();
  #heldCount = 0;
  #heldDropped = 0;
  #closed = false;

  /**
   * `hold`: filters to subscribe to now, before the broker's first device can publish; what
   * arrives on them is kept (up to HOLD_LIMIT messages) until the controller's part that reads
   * them subscribes. A device that reconnects the moment a restarted broker listens loses no
   * telemetry to the controller's own start-up.
   */
  constructor(aedes: Aedes, opts: { hold?: readonly string[] } = {}) {
    super();
    this.setMaxListeners(100);
    this.#aedes = aedes;
    for (const filter of opts.hold ?? []) {
      const queue: { topic: string; payload: Buffer }[] = [];
      this.#held.set(filter, queue);
      const deliver: Deliver = (packet, done) => {
        if (!this.#held.has(filter)) this.emit('message', packet.topic, toBuffer(packet.payload), { retain: false });
        else if (this.#heldCount < HOLD_LIMIT) {
          queue.push({ topic: packet.topic, payload: toBuffer(packet.payload) });
          this.#heldCount++;
        } else this.#heldDropped++;
        done();
      };
      this.#subscriptions.set(filter, deliver);
      this.#aedes.subscribe(filter, deliver, () => undefined);
    }
  }

  /** Messages that arrived while held beyond HOLD_LIMIT and were dropped (0 unless start-up took very long). */
  get droppedWhileHeld(): number {
    return this.#heldDropped;
  }

  get connected(): boolean {
    return !this.#closed && !this.#aedes.closed;
  }

  async subscribeAsync(filters: string | string[], _opts: { qos: Qos }): Promise<void> {
    const all = Array.isArray(filters) ? filters : [filters];
    const live = all.filter((f) => this.#held.has(f) || !this.#subscriptions.has(f));
    for (const filter of all) this.#release(filter);
    const list = all.filter((f) => !this.#subscriptions.has(f));
    await Promise.all(
      list.map(
        (filter) =>
          new Promise<void>((resolve) => {
            const deliver: Deliver = (packet, done) => {
              this.emit('message', packet.topic, toBuffer(packet.payload), { retain: false });
              done();
            };
            this.#subscriptions.set(filter, deliver);
            this.#aedes.subscribe(filter, deliver, resolve);
          }),
      ),
    );
    if (live.length > 0) await this.#sendRetained(live);
  }

  async unsubscribeAsync(filters: string | string[]): Promise<void> {
    const list = Array.isArray(filters) ? filters : [filters];
    await Promise.all(
      list.map((filter) => {
        const deliver = this.#subscriptions.get(filter);
        if (!deliver) return undefined;
        this.#subscriptions.delete(filter);
        return new Promise<void>((resolve) => this.#aedes.unsubscribe(filter, deliver, resolve));
      }),
    );
  }

  publish(topic: string, payload: string | Buffer, opts: { qos: Qos; retain?: boolean }): void {
    void this.publishAsync(topic, payload, opts).catch(() => undefined); // fire and forget, as MQTT.js's publish without a callback
  }

  publishAsync(topic: string, payload: string | Buffer, opts: { qos: Qos; retain?: boolean }): Promise<void> {
    if (!this.connected) return Promise.reject(new Error('the embedded broker is closed'));
    const packet = { cmd: 'publish', topic, payload: toBuffer(payload), qos: opts.qos, retain: opts.retain ?? false, dup: false } as PublishPacket;
    return new Promise((resolve, reject) => this.#aedes.publish(packet, (error?: Error) => (error ? reject(error) : resolve())));
  }

  /** A held filter goes live: what waited is delivered first, in the order it arrived. */
  #release(filter: string): void {
    const queue = this.#held.get(filter);
    if (!queue) return;
    this.#held.delete(filter);
    this.#heldCount -= queue.length;
    for (const m of queue) this.emit('message', m.topic, m.payload, { retain: false });
  }

  /** Unsubscribes everything; publishing is refused from now on. */
  async endAsync(): Promise<void> {
    await this.unsubscribeAsync([...this.#subscriptions.keys()]);
    this.#closed = true;
  }

  async #sendRetained(filters: string[]): Promise<void> {
    const store = (this.#aedes as unknown as { persistence: { createRetainedStreamCombi(p: string[]): AsyncIterable<DeliveredPacket> } }).persistence;
    for await (const packet of store.createRetainedStreamCombi(filters)) {
      this.emit('message', packet.topic, toBuffer(packet.payload), { retain: true });
    }
  }
}

function toBuffer(payload: string | Buffer | Uint8Array): Buffer {
  return Buffer.isBuffer(payload) ? payload : Buffer.from(payload as string);
}
