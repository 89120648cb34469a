/**
 * What the agent remembers about the fleet's apps, in <dataDir>/containers/state.json (written atomically):
 * per app, the releases whose images are installed (image ID, the signed spec), the active version, the
 * previously active ones kept for rollback, the highest version ever accepted, and the last failure.
 * The engine is asked for what runs; this file says what should and what may be returned to.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ContainerSpecSchema, ErrorBodySchema, ImageIdSchema } from '@edgefleet/protocol';
import type { ErrorBody } from '@edgefleet/protocol';
import { writeFileAtomic } from '@edgefleet/node-io';
import type { Release } from './spec.js';

const InstalledSchema = z.object({
  image: ImageIdSchema,
  /** Absent for an image installed without a container spec (a runtime for models): it is never run as an app. */
  spec: ContainerSpecSchema.optional(),
  /** The image was on the engine before the agent installed it: the agent never deletes it, only its own tag. */
  preexisting: z.boolean(),
  installedAt: z.number().int(),
});
export type Installed = z.infer<typeof InstalledSchema>;

const AppRecordSchema = z.object({
  releases: z.record(z.string().regex(/^\d+$/), InstalledSchema),
  active: z.number().int().positive().nullable(),
  /** Previously active versions, oldest first; the last is what `containers.rollback` returns to. */
  history: z.array(z.number().int().positive()),
  highestAccepted: z.number().int().nonnegative(),
  /** Set by `containers.stop`: the agent does not start it again until `containers.start` or a deploy. */
  stopped: z.boolean(),
  /** Set when stop-then-download stopped the active container to make room: a failed update starts it again. */
  stoppedForUpdate: z.boolean(),
  lastFailure: z.object({ version: z.number().int().positive(), error: ErrorBodySchema, at: z.number().int() }).nullable(),
});
export type AppRecord = z.infer<typeof AppRecordSchema>;

const StateSchema = z.object({ version: z.literal(1), apps: z.record(z.string(), AppRecordSchema) });
type State = z.infer<typeof StateSchema>;

export const emptyRecord = (): AppRecord => ({
  releases: {},
  active: null,
  history: [],
  highestAccepted: 0,
  stopped: false,
  stoppedForUpdate: false,
  lastFailure: null,
});

/** The release of a version, if its image is installed and it has a spec to run. */
export function releaseOf(app: string, record: AppRecord, version: number | null): Release | undefined {
  if (version === null) return undefined;
  const installed = record.releases[String(version)];
  return installed?.spec ? { app, version, image: installed.image, spec: installed.spec } : undefined;
}

/**
 * The record after `version` became active. Pure; the plan uses it to know what pruning will leave, the
 * executor to write it. Activate pushes the previous version onto the history; rollback takes the target
 * off it. The history keeps `keepPrevious` entries.
 */
export function activated(record: AppRecord, version: number, mode: 'activate' | 'rollback', keepPrevious: number): AppRecord {
  const previous = record.active;
  const history = record.history.filter((v) => v !== version);
  if (mode === 'activate' && previous !== null && previous !== version) history.push(previous);
  return {
    ...record,
    active: version,
    history: keepPrevious > 0 ? history.slice(-keepPrevious) : [],
    highestAccepted: Math.max(record.highestAccepted, version),
    stopped: false,
    stoppedForUpdate: false,
  };
}

export function failed(record: AppRecord, version: number, error: ErrorBody, at: number): AppRecord {
  return { ...record, lastFailure: { version, error, at } };
}

export class AppStore {
  private constructor(
    private readonly dir: string,
    private state: State,
  ) {}

  static async open(dataDir: string): Promise<AppStore> {
    const dir = join(dataDir, 'containers');
    await mkdir(dir, { recursive: true });
    let state: State = { version: 1, apps: {} };
    try {
      const parsed = StateSchema.safeParse(JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')));
      if (!parsed.success) throw new Error(`containers/state.json is not valid: ${parsed.error.issues[0]?.message}`);
      state = parsed.data;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    return new AppStore(dir, state);
  }

  apps(): string[] {
    return Object.keys(this.state.apps).sort();
  }

  record(app: string): AppRecord {
    // own entries only: an app named like an Object.prototype member ("constructor") is just an app
    return Object.hasOwn(this.state.apps, app) ? this.state.apps[app]! : emptyRecord();
  }

  /** Every image ID some app's record still refers to (pruning one app must not take another's). */
  referencedImages(except?: { app: string; version: number }): Set<string> {
    const ids = new Set<string>();
    for (const [app, record] of Object.entries(this.state.apps)) {
      for (const [v, installed] of Object.entries(record.releases)) {
        if (except && app === except.app && Number(v) === except.version) continue;
        ids.add(installed.image);
      }
    }
    return ids;
  }

  async update(app: string, change: (record: AppRecord) => AppRecord): Promise<AppRecord> {
    const next = change(this.record(app));
    const state: State = { ...this.state, apps: { ...this.state.apps, [app]: next } };
    await writeFileAtomic(join(this.dir, 'state.json'), JSON.stringify(state, null, 1));
    this.state = state;
    return next;
  }
}
