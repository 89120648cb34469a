/**
 * The state file on disk. Written atomically and durably (node-io's writeFileAtomic:
 * tmp, fsync, rename, fsync of the directory), so a `kill -9` or a power cut leaves
 * either the previous or the new state, never half of one. Concurrent writes coalesce:
 * a caller's `await write()` resolves only once a write that includes its change is on
 * disk. After every successful load and write the same bytes go to
 * `<file>.last-good`; a file that does not validate is refused, never overwritten,
 * and the error says how to go back to that copy.
 */
import { access, mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Low } from 'lowdb';
import type { Adapter } from 'lowdb';
import { writeFileAtomic } from '@edgefleet/node-io';
import { FleetStateSchema, durableView, emptyState } from './schema.js';
import type { FleetState } from './schema.js';

export const LAST_GOOD_SUFFIX = '.last-good';

/** A lowdb adapter that writes atomically and durably, coalescing bursts of writes, and keeps a last-good copy. */
export class DurableJsonFile<T> implements Adapter<T> {
  readonly #file: string;
  readonly #lastGood: string | undefined;
  #writing: Promise<void> | null = null;
  /** The next write: serialized only when it starts, so a burst of changes costs one JSON.stringify. */
  #queued: { data: T; waiters: { resolve(): void; reject(e: unknown): void }[] } | null = null;

  readonly #onWritten: ((bytes: number) => void) | undefined;
  readonly #serialize: (data: T) => string;

  constructor(file: string, opts: { lastGood?: string; onWritten?: (bytes: number) => void; serialize?: (data: T) => string } = {}) {
    this.#file = file;
    this.#lastGood = opts.lastGood;
    this.#onWritten = opts.onWritten;
    this.#serialize = opts.serialize ?? ((data) => JSON.stringify(data));
  }

  async read(): Promise<T | null> {
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
    return JSON.parse(text) as T;
  }

  write(data: T): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#queued) {
        // A write is running and another is queued: the queued one now carries the newest data.
        this.#queued.data = data;
        this.#queued.waiters.push({ resolve, reject });
        return;
      }
      this.#queued = { data, waiters: [{ resolve, reject }] };
      if (!this.#writing) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    while (this.#queued) {
      const job = this.#queued;
      this.#queued = null;
      this.#writing = this.#writeNow(this.#serialize(job.data));
      try {
        await this.#writing;
        for (const w of job.waiters) w.resolve();
      } catch (error) {
        for (const w of job.waiters) w.reject(error);
      }
    }
    this.#writing = null;
  }

  async #writeNow(text: string): Promise<void> {
    await writeFileAtomic(this.#file, text, { mode: 0o600 });
    if (this.#lastGood) await writeFileAtomic(this.#lastGood, text, { mode: 0o600 });
    this.#onWritten?.(Buffer.byteLength(text) * (this.#lastGood ? 2 : 1));
  }
}

export interface StateFileOptions {
  /** Bytes written per durable write (the file and its last-good copy), e.g. for a metric. */
  onWritten?: (bytes: number) => void;
}

/**
 * Reads and validates the state file (a missing file is a new fleet). Refuses to go on
 * with one that is not JSON or does not match the schema: the error names the file and
 * the first problem, and how to restore the last good copy.
 */
export async function openStateFile(file: string, opts: StateFileOptions = {}): Promise<Low<FleetState>> {
  await mkdir(dirname(file), { recursive: true });
  const lastGood = `${file}${LAST_GOOD_SUFFIX}`;
  const serialize = (data: FleetState): string => JSON.stringify(durableView(data));
  const adapter = new DurableJsonFile<FleetState>(file, { lastGood, serialize, ...(opts.onWritten ? { onWritten: opts.onWritten } : {}) });
  let raw: unknown;
  try {
    raw = await adapter.read();
  } catch (error) {
    throw await refusal(file, lastGood, `it is not JSON (${(error as Error).message})`);
  }
  const db = new Low<FleetState>(adapter, emptyState());
  if (raw === null && !(await exists(file))) return db;
  const parsed = FleetStateSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : '(the whole file)';
    throw await refusal(file, lastGood, `${where}: ${issue?.message ?? 'does not match the state schema'}`);
  }
  db.data = parsed.data;
  await writeFileAtomic(lastGood, serialize(db.data), { mode: 0o600 });
  return db;
}

async function refusal(file: string, lastGood: string, problem: string): Promise<Error> {
  const restore = (await exists(lastGood))
    ? `The copy from the last time it loaded is ${lastGood}: stop here, keep the bad file for inspection, and restore with \`cp ${lastGood} ${file}\`.`
    : `There is no last-good copy (${lastGood}); fix the file by hand, or move it away to start with an empty fleet.`;
  return new Error(`the state file ${file} is not a valid fleet state: ${problem}. It was left as it is; the controller does not start on it. ${restore}`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false; // missing (or unreadable, which the read reports itself)
  }
}
