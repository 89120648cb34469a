/** Rollout targets: a device, a group or the whole fleet, as typed and as chosen from the fleet. */
import type { RolloutTarget } from '../state/schema.js';

/** `pi-1`, `group:lab`, `all` → a target. */
export function parseTarget(text: string): RolloutTarget {
  if (text === 'all') return { kind: 'all' };
  if (text.startsWith('group:')) return { kind: 'group', name: text.slice('group:'.length) };
  return { kind: 'device', name: text };
}

export function formatTarget(target: RolloutTarget): string {
  return target.kind === 'all' ? 'all' : target.kind === 'group' ? `group:${target.name}` : target.name;
}

export interface PlanDevice {
  id: string;
  groups: readonly string[];
  online: boolean;
}

export function targetDevices<D extends PlanDevice>(devices: readonly D[], target: RolloutTarget): D[] {
  const chosen =
    target.kind === 'all'
      ? devices
      : target.kind === 'group'
        ? devices.filter((d) => d.groups.includes(target.name))
        : devices.filter((d) => d.id === target.name);
  return [...chosen].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
