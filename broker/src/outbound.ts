/**
 * What the broker queues for one connection, and what it does when a peer stops reading.
 *
 * Aedes waits for a full socket to drain before it finishes a delivery. That wait is the
 * broker's flow control: Aedes reads a publisher's next packets only once the previous ones
 * were delivered, so a group transfer goes at the pace of its members. But a delivery that
 * waits also holds the publisher's whole connection and one of the emitter's 100 slots, so
 * one subscriber that stops reading used to stall its publisher, then everyone (for
 * Aedes' drainTimeout, 60 s). Here:
 *
 * - A delivery waits for a subscriber only while that subscriber takes bytes. One whose peer
 *   takes nothing for `stallMs` while a delivery waits is *stalled*: the waiting deliveries
 *   are released at once, and from then on no write to it waits. So a frozen device holds
 *   its group back once, for `stallMs`, and nobody else at all; a live slow one still paces
 *   its group, as before.
 * - A stalled connection with `maxQueuedBytes` or more queued (written, not yet taken by the
 *   peer) gets no more QoS 0 messages until it catches up: they are dropped and counted
 *   (transfer chunks are QoS 0 to devices, and the sender resends what a device reports
 *   missing). One that is waited for needs no such limit: Aedes' emitter has at most 100
 *   messages in flight, so that is the most it can queue.
 * - A QoS 1/2 delivery is never dropped (it is the subscriber's acknowledged queue); one that
 *   finds a stalled connection with twice `maxQueuedBytes` queued closes it, and a persistent
 *   session keeps the message for the next connection.
 * - A stalled connection is closed once it has taken nothing for `stallMs` with at least
 *   `maxQueuedBytes` queued, or for `stallTimeoutMs` with less. So what a frozen device holds
 *   is what it had queued when it stalled (at most the emitter's 100 messages in flight, whose
 *   buffers its group shares), for `stallMs`, or less than `maxQueuedBytes`.
 * - A stalled connection that catches up (queue empty) is waited for again.
 *
 * With `pace: false` (Redis: mqemitter-redis finishes a publish once Redis has it and has no
 * limit on messages in flight, so there is no flow control to keep) every connection is
 * treated as stalled from the start: no write waits, and the limits apply to everyone.
 */
import type { Duplex } from 'node:stream';
import type { Client } from 'aedes';
import type { Logger } from 'pino';

export interface OutboundLimits {
  /** Bytes queued for a connection (written, not yet taken by the peer) from which its QoS 0 deliveries are dropped. */
  maxQueuedBytes: number;
  /** A delivery waits at most this long for a peer that takes nothing; then that connection is stalled. */
  stallMs: number;
  /** A stalled connection with less than maxQueuedBytes queued whose peer takes nothing for this long is closed (with more: after stallMs). */
  stallTimeoutMs: number;
}

/**
 * 64 MiB: a group delivery of a 50 MB model fits whole, so a member that fell behind drops
 * nothing (group deliveries share their payload buffers). 2 s: longer than a live link goes
 * without taking a byte (the kernel hands a socket more room in steps of a third of its send
 * buffer). 30 s before a stalled connection is closed.
 */
export const DEFAULT_OUTBOUND_LIMITS: OutboundLimits = { maxQueuedBytes: 64 * 1024 * 1024, stallMs: 2_000, stallTimeoutMs: 30_000 };

export interface OutboundStats {
  /** QoS 0 deliveries dropped because their connection was stalled and over maxQueuedBytes. */
  droppedQos0: number;
  /** Connections found stalled (a delivery waited stallMs for a peer that took nothing). */
  stalled: number;
  /** Connections closed for being too far behind (stalled and taking nothing, or QoS 1 over twice the limit). */
  closedBehind: number;
}

/** The transport under the stream Aedes writes to: libuv's count of bytes the kernel has not taken yet shows progress. */
export interface Transport {
  _handle?: { writeQueueSize?: number } | null;
}

type Deliver = (packet: { qos: number }, cb: () => void) => void;
/** The two per-connection delivery functions Aedes 1.2 registers for a subscription (QoS 0, and QoS 1/2). */
interface DeliveringClient {
  id: string | null;
  deliver0: Deliver;
  deliverQoS: Deliver;
}

type Write = (chunk: unknown, encoding?: unknown, cb?: unknown) => boolean;

/** One timer for all connections that are behind (a timer per connection would be made and cleared at every full socket). */
export class StallWatch {
  private readonly queues = new Set<{ check(now: number): void }>();
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly everyMs: number) {}

  add(queue: { check(now: number): void }): void {
    this.queues.add(queue);
    if (this.timer) return;
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const q of this.queues) q.check(now); // a check may delete its queue: fine while iterating a Set
      if (this.queues.size === 0) this.stop();
    }, this.everyMs);
    this.timer.unref();
  }

  delete(queue: { check(now: number): void }): void {
    this.queues.delete(queue);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

export interface OutboundOptions {
  limits: OutboundLimits;
  /** Shared by the connections of one broker; ticks every stallMs / 4. */
  watch: StallWatch;
  /** Keep Aedes' flow control (wait for subscribers that take bytes). False where nothing waits on deliveries anyway. */
  pace: boolean;
  stats: OutboundStats;
  log: Logger;
}

/** Watches one connection: the bounded write and the per-connection delivery limits. */
export function watchOutbound(client: Client, stream: Duplex, transport: Transport | undefined, options: OutboundOptions): void {
  new OutboundQueue(client as unknown as DeliveringClient, stream, transport, options);
}

function byteLength(chunk: unknown, encoding: unknown): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  return (chunk as { byteLength?: number }).byteLength ?? 0;
}

class OutboundQueue {
  /** Bytes handed to the stream so far. */
  private written = 0;
  private stalled: boolean;
  private watch: { progress: string; progressAt: number; since: number; dropped: number } | undefined;
  private readonly limits: OutboundLimits;

  constructor(
    private readonly client: DeliveringClient,
    private readonly stream: Duplex,
    private readonly transport: Transport | undefined,
    private readonly options: OutboundOptions,
  ) {
    this.limits = options.limits;
    this.stalled = !options.pace;
    const write = stream.write as Write;
    // Aedes waits for 'drain' when write() says the socket is full; a stalled connection never says so.
    // A full socket is watched either way: with `pace: false` that is what closes a frozen peer under the limit.
    (stream as { write: Write }).write = (chunk, encoding, cb) => {
      this.written += byteLength(chunk, encoding);
      if (write.call(stream, chunk, encoding, cb)) return true;
      this.startWatching();
      return this.stalled;
    };
    const deliver0 = client.deliver0;
    const deliverQoS = client.deliverQoS;
    client.deliver0 = (packet, cb) => {
      // A connection that is waited for is bounded by Aedes' emitter (100 messages in flight)
      if (!this.stalled || this.queued() < this.limits.maxQueuedBytes) return deliver0(packet, cb);
      this.options.stats.droppedQos0++;
      this.startWatching();
      if (this.watch) this.watch.dropped++;
      setImmediate(cb); // as Aedes does for a packet it does not forward
    };
    client.deliverQoS = (packet, cb) => {
      // QoS 0 packets go on to client.deliver0, so the limit above applies to them
      if (packet.qos > 0 && this.stalled && this.queued() >= 2 * this.limits.maxQueuedBytes) {
        this.close(`${this.queued()} bytes queued and QoS 1 messages still coming (twice the limit)`);
      }
      deliverQoS(packet, cb);
    };
    stream.once('close', () => this.stopWatching());
  }

  private queued(): number {
    return this.stream.writableLength;
  }

  /**
   * Changes whenever the peer takes bytes: a write completed (written - writableLength grows), or
   * the kernel took part of the write in flight (libuv's write queue shrinks). Node hands all that
   * is buffered to one writev, so completions alone can be minutes apart on a slow link.
   */
  private progress(): string {
    return `${this.written - this.stream.writableLength}/${this.transport?._handle?.writeQueueSize ?? ''}`;
  }

  private startWatching(): void {
    if (this.watch || this.stream.destroyed) return;
    const now = Date.now();
    this.watch = { progress: this.progress(), progressAt: now, since: now, dropped: 0 };
    this.options.watch.add(this);
  }

  check(now: number): void {
    const watch = this.watch!;
    if (this.queued() === 0) return this.caughtUp();
    const progress = this.progress();
    if (progress !== watch.progress) {
      watch.progress = progress;
      watch.progressAt = now;
      return;
    }
    const idle = now - watch.progressAt;
    if (!this.stalled && idle >= this.limits.stallMs) this.stall(idle);
    if (!this.stalled) return;
    const over = this.queued() >= this.limits.maxQueuedBytes;
    if (idle >= (over ? this.limits.stallMs : this.limits.stallTimeoutMs)) {
      this.close(`took no byte for ${idle} ms with ${this.queued()} bytes queued${over ? ' (over the limit)' : ''}`);
    }
  }

  /** Stops waiting for this connection: what waits on it now is released; nothing waits on it again until it catches up. */
  private stall(idle: number): void {
    this.stalled = true;
    this.options.stats.stalled++;
    this.options.log.warn(
      { clientId: this.client.id, queuedBytes: this.queued(), idleMs: idle, limit: this.limits.maxQueuedBytes },
      'client takes nothing: no longer waiting for it; its QoS 0 messages are dropped beyond the limit',
    );
    // Aedes waits for a full socket with one once('drain') per connection: release those waits now
    this.stream.emit('drain');
  }

  private caughtUp(): void {
    const watch = this.watch!;
    const wasStalled = this.stalled && this.options.pace;
    this.stopWatching();
    if (wasStalled) this.stalled = false;
    if (wasStalled || watch.dropped > 0) {
      this.options.log.info({ clientId: this.client.id, droppedQos0: watch.dropped, behindMs: Date.now() - watch.since }, 'client caught up');
    }
  }

  private stopWatching(): void {
    if (!this.watch) return;
    this.options.watch.delete(this);
    this.watch = undefined;
  }

  private close(reason: string): void {
    if (this.stream.destroyed) return;
    this.options.stats.closedBehind++;
    this.options.log.warn({ clientId: this.client.id, droppedQos0: this.watch?.dropped ?? 0, reason }, 'closing a connection that is too far behind');
    this.stream.destroy();
  }
}
