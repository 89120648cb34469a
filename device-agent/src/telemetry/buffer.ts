/**
 * The telemetry buffer on disk: every sample is appended (one JSON line, the
 * exact message that will be published) and stays until the broker has
 * acknowledged it (QoS 1 PUBACK), so samples taken while offline survive
 * reconnects and agent restarts and are delivered in order.
 *
 * Bounded: beyond `max` entries the oldest are dropped, and their number is
 * added to the `dropped` count of the entry that becomes the oldest, so the
 * receiver learns how many samples are missing before it (and its seq gap
 * agrees).
 *
 *   <dataDir>/telemetry/buffer.jsonl   pending messages, oldest first
 *   <dataDir>/telemetry/seq            next sequence number (when the buffer is empty)
 */
import { appendFile, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { TMP_MARK, writeFileAtomic } from '@edgefleet/node-io';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { TelemetryMessageSchema, makeTelemetry } from '@edgefleet/protocol';
import type { TelemetryMessage, TelemetrySample } from '@edgefleet/protocol';

export class TelemetryBuffer {
  private entries: TelemetryMessage[] = [];
  private seq = 0;
  /** Every file operation runs in this chain, so appends and compactions never interleave. */
  private chain: Promise<unknown> = Promise.resolve();
  private droppedTotal = 0;

  private constructor(
    private readonly dir: string,
    private readonly max: number,
    private readonly logger: Logger,
  ) {}

  static async open(dataDir: string, max: number, logger: Logger): Promise<TelemetryBuffer> {
    const buffer = new TelemetryBuffer(join(dataDir, 'telemetry'), max, logger);
    await buffer.load();
    return buffer;
  }

  private get file(): string {
    return join(this.dir, 'buffer.jsonl');
  }
  private get seqFile(): string {
    return join(this.dir, 'seq');
  }

  private async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    // a rewrite that a crash interrupted leaves its temporary file; the buffer itself is whole
    for (const entry of await readdir(this.dir)) if (entry.includes(TMP_MARK)) await rm(join(this.dir, entry), { force: true });
    try {
      this.seq = Number((await readFile(this.seqFile, 'utf8')).trim()) || 0;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    let text = '';
    try {
      text = await readFile(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    let bad = 0;
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      try {
        const parsed = TelemetryMessageSchema.safeParse(JSON.parse(line));
        if (parsed.success) this.entries.push(parsed.data);
        else bad++;
      } catch {
        bad++; // a line torn by a crash mid-append: nothing to recover from it
      }
    }
    if (bad > 0) this.logger.warn({ bad }, 'telemetry buffer: skipped unreadable lines');
    const last = this.entries[this.entries.length - 1];
    if (last) this.seq = Math.max(this.seq, last.seq + 1);
    if (this.entries.length > this.max) {
      this.dropOldest(this.entries.length - this.max);
      await this.rewrite();
    } else if (bad > 0) {
      await this.rewrite();
    }
    if (this.entries.length > 0) this.logger.info({ pending: this.entries.length }, 'telemetry buffer: samples waiting from before');
  }

  private run<T>(op: () => Promise<T>): Promise<T> {
    const next = this.chain.then(op, op);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private dropOldest(n: number): number {
    const removed = this.entries.splice(0, n);
    const carried = removed.reduce((sum, m) => sum + m.dropped + 1, 0);
    const head = this.entries[0];
    if (head) head.dropped += carried;
    this.droppedTotal += n;
    return carried;
  }

  /** Atomically replaces the file with the entries in memory (node-io's atomic write). */
  private async rewrite(): Promise<void> {
    await writeFileAtomic(this.file, this.entries.map((m) => `${JSON.stringify(m)}\n`).join(''));
    await writeFile(this.seqFile, String(this.seq));
  }

  /** Stores a sample as the next message; returns it. */
  append(sample: TelemetrySample): Promise<TelemetryMessage> {
    return this.run(async () => {
      let carried = 0;
      if (this.entries.length >= this.max) {
        carried = this.dropOldest(this.entries.length - this.max + 1);
      }
      // when every older entry was dropped (max 1), the new message carries the count itself
      const message = makeTelemetry(this.seq++, this.entries.length === 0 ? carried : 0, sample);
      this.entries.push(message);
      if (carried > 0) await this.rewrite();
      else await appendFile(this.file, `${JSON.stringify(message)}\n`);
      return message;
    });
  }

  /** The oldest `n` pending messages (copies: the caller publishes them). */
  peek(n: number): TelemetryMessage[] {
    return this.entries.slice(0, n).map((m) => ({ ...m }));
  }

  /** Removes every message up to and including `seq`: the broker acknowledged them. */
  ack(seq: number): Promise<void> {
    return this.run(async () => {
      const before = this.entries.length;
      this.entries = this.entries.filter((m) => m.seq > seq);
      if (this.entries.length === before) return;
      await this.rewrite();
    });
  }

  get size(): number {
    return this.entries.length;
  }
  get nextSeq(): number {
    return this.seq;
  }
  /** Samples dropped since this process opened the buffer. */
  get dropped(): number {
    return this.droppedTotal;
  }

  /** Waits for pending file operations. */
  async close(): Promise<void> {
    await this.run(async () => undefined);
  }
}
