/**
 * Access rules derived from the topic tree. The broker asks these questions
 * and nothing else decides who may publish, subscribe or retain; anything not
 * granted here is denied.
 */
import { TOPIC_ROOT, parseTopic, topics } from './topics.js';

export type Principal =
  | { role: 'device'; id: string; groups: readonly string[] }
  | { role: 'operator'; id: string };

export interface AccessOptions {
  /**
   * The original plain-text command topic (`hello`). Operators publish on it; devices may
   * only subscribe (a device that could publish `exit` there would stop the whole fleet).
   * It never holds a retained message (see mayRetain).
   */
  legacyTopic?: string | undefined;
}

export type Qos = 0 | 1 | 2;

/** A subscription grant: the filter it covers and the highest QoS the broker grants under it. */
interface SubscribeGrant {
  filter: string;
  maxQos: Qos;
}

/** Topic filters a principal may publish to (concrete topics must fall inside one). */
export function publishGrants(who: Principal, options: AccessOptions = {}): string[] {
  if (who.role === 'operator') return [`${TOPIC_ROOT}/#`, ...(options.legacyTopic ? [options.legacyTopic] : [])];
  return [
    topics.device(who.id, 'status'),
    topics.device(who.id, 'telemetry'),
    topics.device(who.id, 'events'),
    topics.device(who.id, 'replies'),
  ];
}

function subscribeGrantList(who: Principal, options: AccessOptions): SubscribeGrant[] {
  const legacy: SubscribeGrant[] = options.legacyTopic ? [{ filter: options.legacyTopic, maxQos: 2 }] : [];
  if (who.role === 'operator') return [{ filter: `${TOPIC_ROOT}/#`, maxQos: 2 }, { filter: '$SYS/#', maxQos: 2 }, ...legacy];
  // Chunks are granted at QoS 0 only: the sender resends whatever a device reports missing, and
  // a device subscribed at QoS 1 with a persistent session would make the broker queue every
  // chunk of every group transfer while it stays away (memory the whole fleet shares).
  const transfers = (kind: 'device' | 'group', name: string): SubscribeGrant => ({ filter: topics.transferFilter({ kind, name }), maxQos: 0 });
  return [
    { filter: topics.device(who.id, 'commands'), maxQos: 2 },
    transfers('device', who.id),
    ...who.groups.flatMap((group): SubscribeGrant[] => [{ filter: topics.group(group, 'commands'), maxQos: 2 }, transfers('group', group)]),
    ...legacy,
  ];
}

/** Topic filters a principal may subscribe to (requested filters must be covered by one). */
export function subscribeGrants(who: Principal, options: AccessOptions = {}): string[] {
  return subscribeGrantList(who, options).map((g) => g.filter);
}

export function mayPublish(who: Principal, topic: string, options?: AccessOptions): boolean {
  if (topic.includes('+') || topic.includes('#')) return false; // [MQTT-3.3.2-2]
  return publishGrants(who, options).some((grant) => filterCovers(grant, topic));
}

/**
 * Whether `who` may subscribe to `filter` at `qos`. A device's transfer filters allow QoS 0
 * only (see maxSubscribeQos); a higher request is refused rather than quietly downgraded,
 * because Aedes would still acknowledge the QoS that was asked for.
 */
export function maySubscribe(who: Principal, filter: string, options?: AccessOptions, qos: Qos = 0): boolean {
  const max = maxSubscribeQos(who, filter, options);
  return max !== undefined && qos <= max;
}

/** The highest QoS `who` may subscribe to `filter` with, or undefined when the filter is not granted at all. */
export function maxSubscribeQos(who: Principal, filter: string, options: AccessOptions = {}): Qos | undefined {
  let max: Qos | undefined;
  for (const grant of subscribeGrantList(who, options)) {
    if (filterCovers(grant.filter, filter) && (max === undefined || grant.maxQos > max)) max = grant.maxQos;
  }
  return max;
}

/**
 * Whether a publish to `topic` may be retained (asked in addition to mayPublish, for
 * publishes and wills with the retain flag). Presence is the only retained state of the
 * tree: a retained message elsewhere would be acted on again by every later subscriber
 * (a retained `exit` on the legacy topic stops every agent on each restart; a retained
 * event or reply replays into the controller on each of its restarts).
 */
export function mayRetain(topic: string, options: AccessOptions = {}): boolean {
  if (options.legacyTopic !== undefined && topic === options.legacyTopic) return false;
  const parsed = parseTopic(topic);
  return parsed?.kind === 'device' && parsed.channel === 'status';
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
