/**
 * The agent's log: pino to stderr (journald picks it up) and to
 * `<dataDir>/logs/agent.log`, which the `logs` command tails. The file is
 * rotated at start when it grew past a limit (one previous file kept).
 */
import { mkdirSync, openSync, readSync, closeSync, renameSync, statSync, fstatSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Logger } from 'pino';

export const LOG_FILE = 'agent.log';
const ROTATE_BYTES = 10 * 1024 * 1024;

/** Keys pino never prints, wherever they appear. */
export const REDACT_PATHS = ['token', 'password', '*.token', '*.password', 'config.token', 'options.password'];

export function logPath(dataDir: string): string {
  return join(dataDir, 'logs', LOG_FILE);
}

export interface AgentLogger {
  logger: Logger;
  file: string;
  /** Flushes the file stream (at exit). */
  flush(): void;
}

export function createAgentLogger(dataDir: string, level: string, stderr = true): AgentLogger {
  const file = logPath(dataDir);
  mkdirSync(join(dataDir, 'logs'), { recursive: true });
  try {
    if (statSync(file).size > ROTATE_BYTES) renameSync(file, `${file}.1`);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const fileStream = pino.destination({ dest: file, sync: true, mkdir: true });
  const streams: pino.StreamEntry[] = [{ level: 'trace', stream: fileStream }];
  if (stderr) streams.push({ level: 'trace', stream: pino.destination({ dest: 2, sync: true }) });
  const logger = pino(
    { level, base: { pid: process.pid }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
    pino.multistream(streams),
  );
  return { logger, file, flush: () => fileStream.flushSync() };
}

/** The last `lines` lines of a file, read backwards in blocks (the file may be large). */
export function tailFile(file: string, lines: number): string[] {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  try {
    const size = fstatSync(fd).size;
    const block = 64 * 1024;
    let position = size;
    let text = '';
    let count = 0;
    while (position > 0 && count <= lines) {
      const length = Math.min(block, position);
      position -= length;
      const buffer = Buffer.alloc(length);
      readSync(fd, buffer, 0, length, position);
      text = buffer.toString('utf8') + text;
      count = text.split('\n').length - 1;
    }
    const all = text.split('\n');
    if (all[all.length - 1] === '') all.pop();
    return all.slice(-lines);
  } finally {
    closeSync(fd);
  }
}
