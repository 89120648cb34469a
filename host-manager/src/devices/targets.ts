/** The devices a command to a target (a device, a group, a selector, the whole fleet) goes to, as the fleet records them. */
import { FleetError } from '@edgefleet/protocol';
import type { FleetRepository } from '../state/repository.js';
import type { DeviceRecord, RolloutTarget } from '../state/schema.js';
import { formatTarget, groupNames, targetDevices, targetHint } from '../rollouts/target.js';

/** The target's devices; not_found (with a hint such as "did you mean group:lab?") when it names none. */
export function targetMembers(state: FleetRepository, target: RolloutTarget): DeviceRecord[] {
  const all = state.devices();
  if (target.kind === 'all') return all;
  if (target.kind === 'device') {
    const hint = state.device(target.name) ? undefined : targetHint(target.name, groupNames(state));
    if (hint) throw new FleetError('not_found', `no device ${target.name}; ${hint}`);
    return [state.requireDevice(target.name)];
  }
  const members = targetDevices(all, target);
  if (members.length === 0) {
    const what = target.kind === 'group' ? `group ${target.name} has no devices` : `no device matches ${formatTarget(target)}`;
    throw new FleetError('not_found', `${what}; see \`hostManager devices list\``);
  }
  return members;
}
