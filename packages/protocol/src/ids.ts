/**
 * One namespace of ids for devices and operators. An id is an MQTT user name, and
 * a client id: a device's client id is its id, an operator's is its id or
 * `<operator>-<anything>` (the controller connects as `<operator>-controller-<hex>`).
 * A device whose id equalled an operator's, or fell in an operator's client-id
 * range, would shadow that operator's logins; ids the system itself uses are
 * never a device's.
 */
import { isValidName } from './topics.js';

/**
 * Ids the system uses for itself: `admin` (the default operator), `anonymous` (the
 * broker's development-mode clients), `controller` and `enrolment` (actors in the
 * audit log), `broker` and `system`. Ids starting with `$` (MQTT's system topics) are
 * already outside the name pattern.
 */
export const RESERVED_IDS: readonly string[] = ['admin', 'anonymous', 'broker', 'controller', 'enrolment', 'system'];

/** Operators every fleet is assumed to have, whatever the caller knows: their client-id ranges are reserved too. */
const ALWAYS_OPERATORS: readonly string[] = ['admin'];

export interface DeviceIdContext {
  /** Ids of the operators that exist (their ids and `<id>-…` are theirs). */
  operators?: Iterable<string>;
}

/** Why `id` cannot be a device id, as a sentence that says what to do; undefined when it can. */
export function deviceIdProblem(id: string, context: DeviceIdContext = {}): string | undefined {
  if (!isValidName(id)) return `invalid device id "${id}": use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`;
  // compared without case: `Admin` next to `admin` reads as the operator in every log and audit entry
  const lower = id.toLowerCase();
  if (RESERVED_IDS.includes(lower)) {
    return `device id "${id}" is reserved (the system uses "${lower}" itself); choose another id`;
  }
  for (const operator of [...ALWAYS_OPERATORS, ...(context.operators ?? [])]) {
    const op = operator.toLowerCase();
    if (lower === op) return `device id "${id}" is the id of an operator; devices and operators share one namespace: choose another id`;
    if (lower.startsWith(`${op}-`)) {
      return `device id "${id}" falls in operator "${operator}"'s client ids ("${operator}" and "${operator}-…"); choose an id that does not start with "${operator}-"`;
    }
  }
  return undefined;
}

/** Returns `id` when it may be a device's id; throws a TypeError that says why not and what to do. */
export function assertDeviceId(id: string, context: DeviceIdContext = {}): string {
  const problem = deviceIdProblem(id, context);
  if (problem) throw new TypeError(problem);
  return id;
}
