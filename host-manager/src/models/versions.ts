/** What the model and image registries share: one change at a time, a version (or the newest), the next number. */

/** Runs tasks one at a time, in order, so two adds of one name cannot take the same number. */
export function serialQueue(): <T>(task: () => Promise<T>) => Promise<T> {
  let queue: Promise<unknown> = Promise.resolve();
  return <T>(task: () => Promise<T>): Promise<T> => {
    const run = queue.then(task, task);
    queue = run.catch(() => undefined); // the caller gets the failure; the queue goes on
    return run;
  };
}

/** The version asked for, or the newest when none is. */
export function pickVersion<V extends { version: number }>(versions: readonly V[], version?: number): V | undefined {
  if (versions.length === 0) return undefined;
  if (version === undefined) return versions.reduce((a, b) => (b.version > a.version ? b : a));
  return versions.find((v) => v.version === version);
}

/** The number the next version gets: above every one there is and every one ever given (removed ones included). */
export function nextVersion(highestEver: number, versions: readonly { version: number }[]): number {
  return Math.max(highestEver, ...versions.map((v) => v.version)) + 1;
}
