/**
 * The protocol's access rules (packages/protocol's publishGrants/subscribeGrants) as Mosquitto
 * understands them, pure: the dynamic security plugin's role ACLs, and the `acl_file` lines of a
 * broker without it. Nothing here decides who may do what: it only translates the protocol.
 *
 * What Mosquitto cannot say, and the embedded broker enforces: only presence may be retained
 * (Mosquitto has no retain ACL), and a device's transfer subscriptions are capped at QoS 0
 * (Mosquitto ACLs have no QoS; the agent asks for QoS 0 itself).
 */
import { publishGrants, subscribeGrants } from '@edgefleet/protocol';
import type { Principal } from '@edgefleet/protocol';

export interface DynsecAcl {
  acltype: 'publishClientSend' | 'publishClientReceive' | 'subscribePattern' | 'unsubscribePattern';
  topic: string;
  allow: boolean;
  priority?: number;
}

/** The dynamic-security role name of a device, and of the operator. */
export const deviceRoleName = (device: string): string => `edgefleet-device-${device}`;
export const OPERATOR_ROLE = 'edgefleet-operator';
/** What the controller needs to manage clients and roles over `$CONTROL/dynamic-security/v1`. */
export const DYNSEC_ADMIN_ROLE = 'edgefleet-dynsec-admin';
export const DYNSEC_TOPIC = '$CONTROL/dynamic-security/v1';

/** Everything the protocol grants `who`: send on its publish grants; subscribe to, and receive on, its subscribe grants. */
export function roleAcls(who: Principal, legacyTopic?: string): DynsecAcl[] {
  const options = legacyTopic ? { legacyTopic } : {};
  return [
    ...publishGrants(who, options).map((topic): DynsecAcl => ({ acltype: 'publishClientSend', topic, allow: true })),
    ...subscribeGrants(who, options).flatMap((topic): DynsecAcl[] => [
      { acltype: 'subscribePattern', topic, allow: true },
      { acltype: 'publishClientReceive', topic, allow: true },
    ]),
  ];
}

export function dynsecAdminAcls(): DynsecAcl[] {
  return [
    { acltype: 'publishClientSend', topic: `${DYNSEC_TOPIC}`, allow: true },
    { acltype: 'subscribePattern', topic: `${DYNSEC_TOPIC}/response`, allow: true },
    { acltype: 'publishClientReceive', topic: `${DYNSEC_TOPIC}/response`, allow: true },
  ];
}

/** Everything denied unless a role allows it (unsubscribing is harmless and stays allowed). */
export const DEFAULT_ACL_ACCESS = { publishClientSend: false, publishClientReceive: false, subscribe: false, unsubscribe: true } as const;

/**
 * An `acl_file` for a Mosquitto without dynamic security: the operator's rules and one section per
 * device (`user <id>`), each from the protocol's grants. Regenerate it when devices or groups
 * change (`hostManager broker acl`).
 */
export function aclFile(operator: string, devices: readonly { id: string; groups: readonly string[] }[], legacyTopic?: string): string {
  const section = (who: Principal): string[] => {
    const options = legacyTopic ? { legacyTopic } : {};
    const pub = new Set(publishGrants(who, options));
    const sub = new Set(subscribeGrants(who, options));
    const lines = [`user ${who.id}`];
    for (const t of [...new Set([...pub, ...sub])]) lines.push(`topic ${pub.has(t) && sub.has(t) ? 'readwrite' : pub.has(t) ? 'write' : 'read'} ${t}`);
    return lines;
  };
  return [
    '# edgefleet: generated from the protocol\'s access rules (hostManager broker acl); anything not listed is denied.',
    ...section({ role: 'operator', id: operator }),
    ...devices.flatMap((d) => ['', ...section({ role: 'device', id: d.id, groups: d.groups })]),
    '',
  ].join('\n');
}
