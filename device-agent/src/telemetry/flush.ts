/**
 * Telemetry from sampler to broker: every interval a sample goes into the disk buffer,
 * and the buffer is flushed in order while connected. A buffer entry goes only once the
 * broker acknowledged it (QoS 1 on one connection keeps the order).
 */
import type { Logger } from 'pino';
import type { TelemetryMessage, TelemetrySample } from '@edgefleet/protocol';

/** What the flusher needs of a buffer: the agent's is on disk (buffer.ts); a simulator's may live in memory. */
export interface TelemetryQueue {
  /** Stores a sample as the next message (next seq) and returns it. */
  append(sample: TelemetrySample): Promise<TelemetryMessage>;
  /** The oldest `n` pending messages, oldest first. */
  peek(n: number): TelemetryMessage[];
  /** Removes every message up to and including `seq`. */
  ack(seq: number): Promise<void>;
  readonly size: number;
  close(): Promise<void>;
}

export class TelemetryFlusher {
  #flushing = false;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(
    readonly buffer: TelemetryQueue,
    private readonly publish: (message: TelemetryMessage) => Promise<void>,
    private readonly connected: () => boolean,
    private readonly logger: Logger,
  ) {}

  /** Takes a sample every `intervalMs` until stop(). */
  start(sampler: () => Promise<TelemetrySample>, intervalMs: number): void {
    this.#timer = setInterval(() => void this.takeSample(sampler), intervalMs);
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
  }

  async takeSample(sampler: () => Promise<TelemetrySample>): Promise<void> {
    if (this.#stopped) return;
    try {
      const message = await this.buffer.append(await sampler());
      this.logger.debug({ seq: message.seq, pending: this.buffer.size, connected: this.connected() }, 'telemetry sample');
      await this.flush();
    } catch (error) {
      this.logger.error({ err: error }, 'telemetry sample failed');
    }
  }

  /** Publishes what the buffer holds, 32 at a time, while connected; resumes on the next connection when interrupted. */
  async flush(): Promise<void> {
    if (this.#flushing || !this.connected()) return;
    this.#flushing = true;
    const { buffer } = this;
    try {
      while (this.connected() && buffer.size > 0) {
        const batch = buffer.peek(32);
        const last = batch[batch.length - 1];
        if (!last) break;
        await Promise.all(batch.map((m) => this.publish(m)));
        await buffer.ack(last.seq);
      }
    } catch (error) {
      this.logger.warn({ err: error, pending: buffer.size }, 'telemetry flush interrupted; will retry on reconnect');
    } finally {
      this.#flushing = false;
    }
  }
}
