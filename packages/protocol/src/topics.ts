/**
 * The topic tree, versioned under `fleet/v1`. Every topic string in the project
 * is built and parsed here; no other part writes one by hand.
 *
 *   fleet/v1/devices/{device}/status                 retained presence (last will: offline)
 *   fleet/v1/devices/{device}/telemetry              periodic samples
 *   fleet/v1/devices/{device}/events                 transfer progress, activation results
 *   fleet/v1/devices/{device}/commands               requests to one device
 *   fleet/v1/devices/{device}/replies                the device's replies
 *   fleet/v1/devices/{device}/transfers/{id}/{chunk} chunks for one device (binary)
 *   fleet/v1/groups/{group}/commands                 requests to every device of a group
 *   fleet/v1/groups/{group}/transfers/{id}/{chunk}   chunks fanned out to a group (binary)
 */

export const PROTOCOL_VERSION = 1 as const;

/** The original plain-text command topic (start, stop, update, install, done, exit), where the legacy channel is on. */
export const LEGACY_TOPIC = 'hello';
export const TOPIC_ROOT = `fleet/v${PROTOCOL_VERSION}`;

/** Device ids, group names, model names and transfer ids: one MQTT topic level, safe as a file name. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name) && !name.includes('..');
}

export function assertName(kind: string, name: string): string {
  if (!isValidName(name)) {
    throw new TypeError(
      `invalid ${kind} "${name}": use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
  return name;
}

export type DeviceChannel = 'status' | 'telemetry' | 'events' | 'commands' | 'replies';
export type GroupChannel = 'commands';

export const topics = {
  device(device: string, channel: DeviceChannel): string {
    return `${TOPIC_ROOT}/devices/${assertName('device id', device)}/${channel}`;
  },
  group(group: string, channel: GroupChannel): string {
    return `${TOPIC_ROOT}/groups/${assertName('group', group)}/${channel}`;
  },
  /** Where chunks of one transfer are published: a device's own subtree, or a group's. */
  transferChunk(target: TransferTarget, transferId: string, index: number): string {
    return `${transferBase(target)}/${assertName('transfer id', transferId)}/${index}`;
  },
  /** What a device subscribes to so that it receives every transfer meant for it. */
  transferFilter(target: TransferTarget): string {
    return `${transferBase(target)}/+/+`;
  },
  /** What the controller subscribes to so that it sees every device's channel. */
  allDevices(channel: DeviceChannel): string {
    return `${TOPIC_ROOT}/devices/+/${channel}`;
  },
} as const;

export interface TransferTarget {
  kind: 'device' | 'group';
  name: string;
}

function transferBase(target: TransferTarget): string {
  const kind = target.kind === 'device' ? 'devices' : 'groups';
  return `${TOPIC_ROOT}/${kind}/${assertName(target.kind, target.name)}/transfers`;
}

export type ParsedTopic =
  | { kind: 'device'; device: string; channel: DeviceChannel }
  | { kind: 'group'; group: string; channel: GroupChannel }
  | { kind: 'transfer'; target: TransferTarget; transferId: string; index: number };

const DEVICE_CHANNELS: ReadonlySet<string> = new Set(['status', 'telemetry', 'events', 'commands', 'replies']);

/** Parses a concrete topic of the tree; returns undefined for anything else. */
export function parseTopic(topic: string): ParsedTopic | undefined {
  const levels = topic.split('/');
  if (`${levels[0]}/${levels[1]}` !== TOPIC_ROOT) return undefined;
  const [, , scope, name, channel, transferId, index, ...rest] = levels;
  if (rest.length > 0 || name === undefined || channel === undefined || !isValidName(name)) return undefined;
  if (channel === 'transfers') {
    if (transferId === undefined || index === undefined || !isValidName(transferId) || !/^\d{1,9}$/.test(index)) {
      return undefined;
    }
    if (scope !== 'devices' && scope !== 'groups') return undefined;
    const target: TransferTarget = { kind: scope === 'devices' ? 'device' : 'group', name };
    return { kind: 'transfer', target, transferId, index: Number(index) };
  }
  if (transferId !== undefined) return undefined;
  if (scope === 'devices' && DEVICE_CHANNELS.has(channel)) {
    return { kind: 'device', device: name, channel: channel as DeviceChannel };
  }
  if (scope === 'groups' && channel === 'commands') return { kind: 'group', group: name, channel };
  return undefined;
}
