/**
 * Records keyed by names users choose (devices, groups, models, rollouts, operators):
 * a plain object answers `constructor`, `toString` or `hasOwnProperty` from its
 * prototype. These records have no prototype, and lookups ask for own entries only.
 */

/** An empty record without a prototype, optionally filled from entries. */
export function nameRecord<T>(entries: Iterable<readonly [string, T]> = []): Record<string, T> {
  const record = Object.create(null) as Record<string, T>;
  for (const [key, value] of entries) record[key] = value;
  return record;
}

/** The record's own entry for `key`, never something inherited. */
export function ownEntry<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}
