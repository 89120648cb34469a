/**
 * Access rules derived from the topic tree. The broker asks these two questions
 * and nothing else decides who may publish or subscribe; anything not granted
 * here is denied.
 */
import { TOPIC_ROOT, topics } from './topics.js';

export type Principal =
  | { role: 'device'; id: string; groups: readonly string[] }
  | { role: 'operator'; id: string };

export interface AccessOptions {
  /** The original plain-text command topic (`hello`), granted to everyone when set. */
  legacyTopic?: string | undefined;
}

/** Topic filters a principal may publish to (concrete topics must fall inside one). */
export function publishGrants(who: Principal, options: AccessOptions = {}): string[] {
  const legacy = options.legacyTopic ? [options.legacyTopic] : [];
  if (who.role === 'operator') return [`${TOPIC_ROOT}/#`, ...legacy];
  return [
    topics.device(who.id, 'status'),
    topics.device(who.id, 'telemetry'),
    topics.device(who.id, 'events'),
    topics.device(who.id, 'replies'),
    ...legacy,
  ];
}

/** Topic filters a principal may subscribe to (requested filters must be covered by one). */
export function subscribeGrants(who: Principal, options: AccessOptions = {}): string[] {
  const legacy = options.legacyTopic ? [options.legacyTopic] : [];
  if (who.role === 'operator') return [`${TOPIC_ROOT}/#`, '$SYS/#', ...legacy];
  return [
    topics.device(who.id, 'commands'),
    topics.transferFilter({ kind: 'device', name: who.id }),
    ...who.groups.flatMap((group) => [
      topics.group(group, 'commands'),
      topics.transferFilter({ kind: 'group', name: group }),
    ]),
    ...legacy,
  ];
}

export function mayPublish(who: Principal, topic: string, options?: AccessOptions): boolean {
  if (topic.includes('+') || topic.includes('#')) return false; // [MQTT-3.3.2-2]
  return publishGrants(who, options).some((grant) => filterCovers(grant, topic));
}

export function maySubscribe(who: Principal, filter: string, options?: AccessOptions): boolean {
  return subscribeGrants(who, options).some((grant) => filterCovers(grant, filter));
}

/**
 * True when every topic matched by `requested` is also matched by `granted`.
 * A concrete topic is a filter without wildcards, so this also answers publishes.
 */
export function filterCovers(granted: string, requested: string): boolean {
  const g = granted.split('/');
  const r = requested.split('/');
  for (let i = 0; i < g.length; i++) {
    const level = g[i];
    if (level === '#') return !(r[0]?.startsWith('$') && i === 0 && !granted.startsWith('$')); // [MQTT-4.7.2-1]
    const asked = r[i];
    if (asked === undefined || asked === '#') return false;
    if (level === '+') {
      if (i === 0 && asked.startsWith('$')) return false;
      continue;
    }
    if (asked !== level) return false; // a literal grant never covers a wildcard request
  }
  return g.length === r.length;
}
