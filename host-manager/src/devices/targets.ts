/** The devices a command to a target (a device, a group, the whole fleet) goes to, as the fleet records them. */
import { FleetError } from '@edgefleet/protocol';
import type { FleetRepository } from '../state/repository.js';
import type { DeviceRecord, RolloutTarget } from '../state/schema.js';

/** The target's devices; not_found for an unknown device or a group with none. */
export function targetMembers(state: FleetRepository, target: RolloutTarget): DeviceRecord[] {
  const all = state.devices();
  if (target.kind === 'all') return all;
  if (target.kind === 'device') return [state.requireDevice(target.name)];
  const members = all.filter((d) => d.groups.includes(target.name));
  if (members.length === 0) throw new FleetError('not_found', `group ${target.name} has no devices; see \`hostManager groups\``);
  return members;
}
