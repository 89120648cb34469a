/**
 * What every command of the `hostManager` command line shares: exit codes, output, the
 * usage error, the wrapper that prints a result (text or JSON) and maps errors to exit
 * codes, and the parsers of the small arguments.
 *
 * Exit codes: 0 ok, 1 the operation failed, 2 usage error (or a request the controller
 * refused as invalid), 3 controller unreachable, 4 wrong or missing operator token,
 * 5 not found.
 */
import { basename, relative } from 'node:path';
import { ClientError, createClient, resolveConnection, tokenProblem } from './client.js';
import type { Client, TokenSource } from './client.js';

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

/** What a command prints: `json` with --json (undefined: nothing, it printed its own lines), `text` otherwise; `code` is its exit code (default 0). */
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
  let source: TokenSource | undefined;
  const api = async (a: Common): Promise<Client> => {
    if (client) return client;
    const conn = await resolveConnection({ url: a.url, token: a.token, dataDir: a['data-dir'], env });
    for (const note of conn.notes) io.err(`hostManager: note: ${note}`);
    source = conn.source;
    client = createClient(conn.url, conn.token);
    return client;
  };
  const report = (json: boolean, raw: unknown): void => {
    // a refused token is told in the user's terms: which flag, variable or file it came from
    const error = raw instanceof ClientError && raw.status === 401 && source && client ? new ClientError(401, raw.code, tokenProblem(source, client.url)) : raw;
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
          // a streaming command (watch, logs -f) has printed its own lines and returns no json
          if (a.json && result.json !== undefined) io.out(JSON.stringify(result.json, null, 2));
          else if (!a.json && result.text !== undefined) io.out(result.text);
          code = result.code ?? EXIT.ok;
        } catch (error) {
          report(a.json, error);
        }
      },
  };
}

/**
 * Rows as aligned columns. Cells are one line each; when the table is wider than `width`
 * (the terminal's, default 100), the widest columns are cut with "…" until it fits, so a
 * long reason never breaks the layout (`--json` has every value whole).
 */
export function table(rows: Record<string, unknown>[], columns: string[], width = terminalWidth(), fit: TableFit = { shrinkFirst: ['reason'] }): string {
  const cells = rows.map((r) => rowCells(r, columns));
  const widths = columnWidths(cells, columns, width, fit);
  return [formatRow(columns.map((c) => c.toUpperCase()), widths), ...cells.map((c) => formatRow(c, widths))].join('\n');
}

/** A row's cells as single-line text. */
export function rowCells(row: Record<string, unknown>, columns: readonly string[]): string[] {
  return columns.map((c) => (row[c] === undefined || row[c] === null ? '' : String(row[c]).replace(/\s*\n\s*/g, ' ')));
}

/** The terminal's width, else $COLUMNS (set it when piping), else 100. */
export function terminalWidth(): number {
  return process.stdout.columns || Number(process.env['COLUMNS']) || 100;
}

/** How a table gives way when it is too wide: which columns shrink first, and the widths some must keep. */
export interface TableFit {
  shrinkFirst?: readonly string[];
  minimums?: Readonly<Record<string, number>>;
}

/**
 * Column widths for these cells: columns named in `shrinkFirst` (the free text, e.g. reasons) are
 * cut first, then the widest other column but the first (the id people copy), never below 8 or its
 * header, until the row fits `width`.
 */
export function columnWidths(cells: readonly string[][], columns: readonly string[], width: number, fit: TableFit = {}): number[] {
  const widths = columns.map((c, i) => Math.max(c.length, fit.minimums?.[c] ?? 0, ...cells.map((row) => row[i]!.length)));
  const budget = Math.max(width, columns.length * 8) - 2 * (columns.length - 1);
  const sum = (): number => widths.reduce((a, b) => a + b, 0);
  const floor = (i: number): number => (i === 0 ? widths[0]! : Math.max(columns[i]!.length, 8));
  for (const name of fit.shrinkFirst ?? []) {
    const i = columns.indexOf(name);
    if (i > 0 && sum() > budget) widths[i] = Math.max(floor(i), widths[i]! - (sum() - budget));
  }
  while (sum() > budget) {
    const shrinkable = widths.map((w, i) => (w > floor(i) ? w : -1));
    const widest = shrinkable.indexOf(Math.max(...shrinkable));
    if (shrinkable[widest]! < 0) break;
    widths[widest] = Math.max(floor(widest), widths[widest]! - (sum() - budget));
  }
  return widths;
}

/** One line of a table: each cell padded to its width, or cut with "…". */
export function formatRow(cells: readonly string[], widths: readonly number[]): string {
  return cells.map((v, i) => (v.length > widths[i]! ? `${v.slice(0, widths[i]! - 1)}…` : v.padEnd(widths[i]!))).join('  ').trimEnd();
}

/** How the user ran this program, to print commands they can paste: `hostManager` when installed, else `node <path>`. */
export function invocation(argv1: string | undefined = process.argv[1], cwd = process.cwd()): string {
  if (!argv1 || basename(argv1) === 'hostManager') return 'hostManager';
  const rel = relative(cwd, argv1);
  return `node ${rel.startsWith('..') ? argv1 : rel}`;
}

/** `12 s`, `4 min 05 s`, `2 h 10 min`: a duration for people. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
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
