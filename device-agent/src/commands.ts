/**
 * Request/response: one dispatch table from command name to handler, and the
 * rules every request follows: exactly one reply (ok, or error with a code and
 * a sentence), the deadline honoured (already past: deadline_exceeded without
 * running; running past it: deadline_exceeded at the deadline), thrown errors
 * turned into error replies, duplicates (QoS 1 redelivery) answered once.
 */
import type { Logger } from 'pino';
import { errorReply, okReply, parseRequest, toErrorBody } from '@edgefleet/protocol';
import type { CommandName, CommandResult, ErrorBody, ParsedParams, Reply, Request } from '@edgefleet/protocol';

export interface CommandContext {
  request: Request;
  /** Aborted when the deadline passes; long handlers may stop early. */
  signal: AbortSignal;
}

/** An ok reply's data with binary parts (e.g. binary output tensors), sent as one framed payload. */
export class BinaryReply<T> {
  constructor(
    readonly data: T,
    readonly binary: readonly Uint8Array[],
  ) {}

  /** From an answer that carries its binary parts beside its result (e.g. an inference's). */
  static of<T>(answer: { result: T; binary: readonly Uint8Array[] }): BinaryReply<T> {
    return new BinaryReply(answer.result, answer.binary);
  }
}

export type Handler<C extends CommandName> = (params: ParsedParams<C>, ctx: CommandContext) => Promise<CommandResult<C> | BinaryReply<CommandResult<C>>>;
export type HandlerTable = { [C in CommandName]?: Handler<C> };

export interface DispatcherOptions {
  handlers: HandlerTable;
  /** Publishes one reply (framed with its binary parts, if any); resolves when the broker has it (QoS 1 PUBACK). */
  send: (reply: Reply, binary?: readonly Uint8Array[]) => Promise<void>;
  logger: Logger;
  now?: () => number;
  /** Called after a handler of this command succeeded (e.g. to republish status). */
  onSuccess?: (command: CommandName) => void;
}

export interface DispatchStats {
  received: number;
  accepted: number;
  ok: number;
  errors: number;
  refused: number;
}

const RECENT_IDS = 2048;

export class Dispatcher {
  private readonly inFlight = new Set<Promise<void>>();
  private readonly recent = new Set<string>();
  private accepting = true;
  readonly stats: DispatchStats = { received: 0, accepted: 0, ok: 0, errors: 0, refused: 0 };

  constructor(private readonly options: DispatcherOptions) {}

  /** Handles one request payload. Resolves when its reply has been sent. */
  handle(payload: Buffer | string): Promise<void> {
    const task = this.run(payload);
    this.inFlight.add(task);
    void task.finally(() => this.inFlight.delete(task));
    return task;
  }

  /** Stops accepting: requests arriving from now on are refused with `unavailable`. */
  close(): void {
    this.accepting = false;
  }

  /** Waits until every accepted request has been answered (or the timeout). Returns true when drained. */
  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.inFlight.size > 0) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) return false;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.inFlight]),
        new Promise((r) => {
          timer = setTimeout(r, remaining);
        }),
      ]);
      clearTimeout(timer);
    }
    return true;
  }

  get pending(): number {
    return this.inFlight.size;
  }

  private async reply(reply: Reply, binary?: readonly Uint8Array[]): Promise<void> {
    if (reply.status === 'ok') this.stats.ok++;
    else this.stats.errors++;
    try {
      await this.options.send(reply, binary);
    } catch (error) {
      this.options.logger.error({ err: error, corr: reply.corr }, 'could not publish a reply');
    }
  }

  private async run(payload: Buffer | string): Promise<void> {
    const { logger } = this.options;
    const now = this.options.now ?? Date.now;
    this.stats.received++;
    const parsed = parseRequest(payload);
    if (!parsed.ok) {
      if (parsed.corr === undefined) {
        logger.warn({ error: parsed.error.message, bytes: payload.length }, 'dropped a request without a usable id (no reply possible)');
        return;
      }
      if (this.seen(parsed.corr)) return;
      logger.warn({ corr: parsed.corr, code: parsed.error.code, error: parsed.error.message }, 'bad request');
      return this.reply(errorReply(parsed.corr, parsed.error.toJSON()));
    }
    const request = parsed.request;
    if (this.seen(request.id)) {
      logger.debug({ id: request.id }, 'duplicate request ignored (already answered or running)');
      return;
    }
    if (!this.accepting) {
      this.stats.refused++;
      return this.reply(errorReply(request.id, { code: 'unavailable', message: 'the agent is shutting down; retry when it is back online' }));
    }
    const remaining = request.deadline - now();
    if (remaining <= 0) {
      return this.reply(
        errorReply(request.id, {
          code: 'deadline_exceeded',
          message: `${request.command}: the deadline passed ${-remaining} ms before the request arrived; check clocks or raise the timeout`,
        }),
      );
    }
    const handler = this.options.handlers[request.command] as Handler<CommandName> | undefined;
    if (!handler) {
      return this.reply(errorReply(request.id, { code: 'unavailable', message: `${request.command} is not available on this device` }));
    }
    this.stats.accepted++;
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const started = now();
    type Outcome = { ok: true; data: unknown } | { ok: false; error: ErrorBody };
    const work: Promise<Outcome> = (async () => handler(request.params as never, { request, signal: controller.signal }))().then(
      (data) => ({ ok: true as const, data }),
      (error: unknown) => ({ ok: false as const, error: toErrorBody(error) }),
    );
    const expiry = new Promise<Outcome>((resolve) => {
      timer = setTimeout(() => {
        controller.abort();
        resolve({
          ok: false,
          error: { code: 'deadline_exceeded', message: `${request.command} did not finish before its deadline (${remaining} ms); it may still complete` },
        });
      }, remaining);
    });
    const outcome = await Promise.race([work, expiry]);
    clearTimeout(timer);
    logger.debug({ id: request.id, command: request.command, ok: outcome.ok, ms: now() - started }, 'request handled');
    if (outcome.ok) {
      this.options.onSuccess?.(request.command);
      if (outcome.data instanceof BinaryReply) {
        return this.reply(okReply(request, outcome.data.data as CommandResult<CommandName>), outcome.data.binary);
      }
      return this.reply(okReply(request, outcome.data as CommandResult<CommandName>));
    }
    if (outcome.error.code === 'internal') logger.error({ id: request.id, command: request.command, error: outcome.error.message }, 'handler failed');
    return this.reply(errorReply(request.id, outcome.error));
  }

  /** Remembers request ids so a redelivered request is answered only once. */
  private seen(id: string): boolean {
    if (this.recent.has(id)) return true;
    this.recent.add(id);
    if (this.recent.size > RECENT_IDS) {
      const oldest = this.recent.values().next().value;
      if (oldest !== undefined) this.recent.delete(oldest);
    }
    return false;
  }
}
