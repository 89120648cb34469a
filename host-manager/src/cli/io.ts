/**
 * What every command of the `hostManager` command line shares: exit codes, output, the
 * usage error, the wrapper that prints a result (text or JSON) and maps errors to exit
 * codes, and the parsers of the small arguments.
 *
 * Exit codes: 0 ok, 1 the operation failed, 2 usage error (or a request the controller
 * refused as invalid), 3 controller unreachable, 4 wrong or missing operator token,
 * 5 not found.
 */
import { ClientError, createClient, resolveConnection } from './client.js';
import type { Client } from './client.js';

export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3, unauthorized: 4, notFound: 5 } as const;

export interface CliIO {
  out(text: string): void;
  err(text: string): void;
  /** Whether progress bars may be drawn. */
  isTTY: boolean;
}

export const processIO: CliIO = {
  out: (t) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
  isTTY: Boolean(process.stdout.isTTY),
};

/** A mistake in the command line: exit code 2, printed as `{"error":{"code":"usage",...}}` with --json. */
export class UsageError extends Error {}

/** The flags every command has. */
export interface Common {
  url?: string;
  token?: string;
  'data-dir': string;
  json: boolean;
}

/** What a command prints: `json` with --json, `text` otherwise; `code` is its exit code (default 0). */
export interface CommandOutput {
  json: unknown;
  text?: string;
  code?: number;
}

export type CommandFn<A> = (a: A & Common, c: Client) => Promise<CommandOutput>;

/** What the command groups need from the run they are part of. */
export interface CliContext {
  io: CliIO;
  env: NodeJS.ProcessEnv;
  inConsole: boolean;
  /** Wraps a command: prints its output (JSON or text), maps errors to exit codes. */
  run<A>(fn: CommandFn<A>): (raw: Record<string, unknown>) => Promise<void>;
  /** The client of the running controller, from the flags, the environment or the data directory. */
  api(a: Common): Promise<Client>;
  setCode(code: number): void;
}

export function exitCodeOf(error: unknown): number {
  if (error instanceof ClientError) {
    if (error.status === 0) return EXIT.unreachable;
    if (error.status === 401) return EXIT.unauthorized;
    if (error.status === 404) return EXIT.notFound;
    if (error.status === 400 || error.status === 415) return EXIT.usage;
    return EXIT.failed;
  }
  return EXIT.failed;
}

export function createCliContext(io: CliIO, env: NodeJS.ProcessEnv, inConsole: boolean): CliContext & { code(): number } {
  let code: number = EXIT.ok;
  let client: Client | undefined;
  const api = async (a: Common): Promise<Client> => {
    if (client) return client;
    const conn = await resolveConnection({ url: a.url, token: a.token, dataDir: a['data-dir'], env });
    client = createClient(conn.url, conn.token);
    return client;
  };
  const report = (json: boolean, error: unknown): void => {
    if (error instanceof UsageError) {
      code = EXIT.usage;
      if (json) io.out(JSON.stringify({ error: { code: 'usage', message: error.message } }));
      else io.err(`hostManager: ${error.message}`);
      return;
    }
    code = exitCodeOf(error);
    const body = error instanceof ClientError ? { code: error.code, message: error.message } : { code: 'internal', message: (error as Error).message };
    if (json) io.out(JSON.stringify({ error: body }, null, 2));
    else io.err(`hostManager: ${body.message}`);
  };
  return {
    io,
    env,
    inConsole,
    api,
    setCode: (c) => (code = c),
    code: () => code,
    run:
      <A>(fn: CommandFn<A>) =>
      async (raw: Record<string, unknown>): Promise<void> => {
        const a = raw as unknown as A & Common;
        try {
          const result = await fn(a, await api(a));
          if (a.json) io.out(JSON.stringify(result.json, null, 2));
          else if (result.text !== undefined) io.out(result.text);
          code = result.code ?? EXIT.ok;
        } catch (error) {
          report(a.json, error);
        }
      },
  };
}

export function table(rows: Record<string, unknown>[], columns: string[]): string {
  const cells = rows.map((r) => columns.map((c) => (r[c] === undefined || r[c] === null ? '' : String(r[c]))));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (values: string[]): string => values.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...cells.map(line)].join('\n');
}

/** `m`, `m@3` → name and optional version. */
export function parseModelRef(text: string): { model: string; version?: number } {
  const m = /^([^@]+)(?:@(\d+))?$/.exec(text);
  if (!m) throw new UsageError(`"${text}" is not a model reference; use NAME or NAME@VERSION`);
  return m[2] ? { model: m[1]!, version: Number(m[2]) } : { model: m[1]! };
}

/** `user@host`, `user@host:2222`, `user@[fe80::1]:2222` → its parts (for `deploy --via ssh`). */
export function parseSshTarget(text: string): { username: string; host: string; port?: number } {
  const m = /^([^@\s]+)@(?:\[([0-9A-Fa-f:.]+)\]|([^:@\s[\]]+))(?::(\d{1,5}))?$/.exec(text);
  const port = m?.[4] === undefined ? undefined : Number(m[4]);
  if (!m || (port !== undefined && (port < 1 || port > 65535))) {
    throw new UsageError(`"${text}" is not an SSH target; with --via ssh, --to takes USER@HOST[:PORT] (IPv6: USER@[ADDR]:PORT)`);
  }
  return { username: m[1]!, host: (m[2] ?? m[3])!, ...(port !== undefined ? { port } : {}) };
}
