/**
 * Processes a test file starts never outlive it. Support code registers every child it
 * spawns here; the Jest environment (jest-environment.cjs) SIGKILLs whatever is still
 * running when the file ends, so a failed `beforeAll` cannot leave agents behind that
 * keep Jest from exiting.
 */
import type { ChildProcess } from 'node:child_process';

const KEY = '__edgefleetChildren';

export function track<C extends ChildProcess>(child: C): C {
  const registry = ((globalThis as Record<string, unknown>)[KEY] ??= new Set<ChildProcess>()) as Set<ChildProcess>;
  registry.add(child);
  child.once('exit', () => registry.delete(child));
  return child;
}
