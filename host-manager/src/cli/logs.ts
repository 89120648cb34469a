/** `logs <device> [-f]`: the agent's pino lines made readable, and following a log by asking for its tail again. */

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** Fields every line has, not worth repeating after the message. */
const QUIET = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'device', 'v']);

/** `{"level":30,"time":…,"msg":"agent started","broker":"mqtt://…"}` → `12:01:02.345 INFO  agent started broker=mqtt://…`; other lines as they are. */
export function formatLogLine(line: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line; // not a pino line (a crash trace, a line from an older agent): shown as it is
  }
  if (entry === null || typeof entry !== 'object' || typeof entry['msg'] !== 'string') return line;
  const time = typeof entry['time'] === 'number' ? new Date(entry['time']).toISOString().slice(11, 23) : '';
  const level = LEVELS[entry['level'] as number] ?? String(entry['level'] ?? '');
  const extra = Object.entries(entry)
    .filter(([k]) => !QUIET.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  return `${time} ${level.padEnd(5)} ${entry['msg']}${extra ? ` ${extra}` : ''}`.trim();
}

/**
 * The lines of `next` (a newer tail of the same log) that come after what `seen` ended with:
 * the last place in `next` where `seen`'s last lines (3, else 2, else 1) stand is found, and
 * what follows it is new. When it is not there (more than a tail's worth was written between two looks, or
 * the log was rotated), every line of `next` is new. Agent lines carry a millisecond timestamp,
 * so three of them do not repeat.
 */
export function newLines(seen: readonly string[], next: readonly string[]): string[] {
  // the longest anchor first; a shorter one where the newer tail starts inside the last three lines
  for (let k = Math.min(3, seen.length); k > 0; k--) {
    const anchor = seen.slice(-k);
    for (let end = next.length - 1; end >= k - 1; end--) {
      if (anchor.every((line, i) => next[end - k + 1 + i] === line)) return next.slice(end + 1);
    }
  }
  return [...next];
}

/** Asks for the tail every `everyMs` and prints what is new, until SIGINT/SIGTERM (or `until`). */
export async function followLog(opts: { fetch: () => Promise<string[]>; print: (line: string) => void; last: string[]; everyMs?: number; until?: Promise<void> }): Promise<void> {
  let stopped = false;
  const stop = opts.until ?? new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  void stop.then(() => (stopped = true));
  let seen = opts.last;
  while (!stopped) {
    await Promise.race([new Promise((r) => setTimeout(r, opts.everyMs ?? 1000)), stop]);
    if (stopped) break;
    const next = await opts.fetch();
    for (const line of newLines(seen, next)) opts.print(line);
    seen = next;
  }
}
