/** The embedded broker's credentials, read live from the fleet state: a device added now can connect now. */
import type { Credential, CredentialStore } from '@edgefleet/broker';
import type { FleetRepository } from '../state/repository.js';

export function stateCredentials(state: FleetRepository): CredentialStore {
  return {
    find(username: string): Credential | undefined {
      // operators first: a device that shares an operator's id (a state from before the rule) never shadows it
      const op = state.operator(username);
      if (op) return { role: 'operator', id: op.id, groups: [], secretHash: op.tokenHash };
      const device = state.device(username);
      if (device && device.tokenHash) return { role: 'device', id: device.id, groups: [...device.groups], secretHash: device.tokenHash };
      return undefined;
    },
  };
}
