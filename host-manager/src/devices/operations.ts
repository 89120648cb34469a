/** The device operations: list, show, provision (by the operator or by enrolment), remove, groups, and requests to one device. */
import { verifySecretAsync } from '@edgefleet/node-io';
import { FleetError, topics } from '@edgefleet/protocol';
import type { DeviceOperations, GroupView, PublicDevice } from '../api/contract.js';
import type { FleetRepository } from '../state/repository.js';
import type { DeviceRecord } from '../state/schema.js';
import type { DeviceContext } from './context.js';
import { createLegacyExec } from './legacy-exec.js';
import { MAX_BATCH, provisionDevice, provisionDevices } from './provisioning.js';
import type { ProvisionResult } from './provisioning.js';

function publicDevice(d: DeviceRecord): PublicDevice {
  const { tokenHash, ...rest } = d;
  return { ...rest, provisioned: d.provisioned ?? tokenHash !== '' };
}

export function createDeviceOperations(ctx: DeviceContext): DeviceOperations {
  const { state, fleet, requester, audit } = ctx;

  /** Creates a device's credential (by the operator or by enrolment); a bad id or group is the caller's error. */
  const shared = { brokerUrl: ctx.advertised, fleetPublicKeyPem: ctx.keys.publicKeyPem, legacyTopic: ctx.legacyTopic || undefined };
  async function provision(id: string, groups: string[]): Promise<ProvisionResult> {
    try {
      return await provisionDevice(state, { ...shared, id, groups });
    } catch (error) {
      if (error instanceof TypeError) throw new FleetError('invalid_params', error.message);
      throw error;
    }
  }

  /** Its credential is gone: forget it, disconnect it now and clear its retained presence. */
  function removeOne(id: string): void {
    state.removeDevice(id);
    fleet.forgetDevice(id);
    ctx.disconnect(id);
    ctx.client.publish(topics.device(id, 'status'), '', { qos: 1, retain: true });
  }

  return {
    listDevices: () =>
      state
        .devices()
        .sort((a, b) => (a.id < b.id ? -1 : 1))
        .map(publicDevice),
    showDevice: (id) => publicDevice(state.requireDevice(id)),
    async addDevice(args) {
      const result = await provision(args.id, args.groups);
      fleet.admitDevice(args.id);
      await audit({ actor: args.actor, action: 'device.add', target: args.id, result: 'ok', detail: { groups: result.device.groups } });
      return result;
    },
    async addDevices(args) {
      const result = await provisionDevices(state, { ...shared, devices: args.devices });
      for (const d of result.devices) fleet.admitDevice(d.id);
      // one audit entry per batch: ten thousand devices must not push the rest of the log out
      await audit({ actor: args.actor, action: 'device.add', target: `${result.devices.length} devices`, result: 'ok', detail: { ids: result.devices.map((d) => d.id) } });
      return result;
    },
    async enrol(args) {
      const enrolment = state.enrolment();
      if (!ctx.enrolmentOn || !enrolment) throw new FleetError('not_found', 'enrolment is off on this controller; ask the operator to provision the device (devices add)');
      if (!args.key || args.key.length > 512 || !(await verifySecretAsync(args.key, enrolment.keyHash))) {
        state.appendAudit({ actor: 'enrolment', action: 'device.enrol', target: args.id, result: 'error', detail: { reason: 'wrong provisioning key' } });
        await state.write();
        return undefined;
      }
      const result = await provision(args.id, enrolment.groups);
      result.device.enrolled = true;
      fleet.admitDevice(args.id);
      await audit({ actor: 'enrolment', action: 'device.enrol', target: args.id, result: 'ok', detail: { groups: result.device.groups } });
      return result;
    },
    async removeDevice(args) {
      state.requireDevice(args.id);
      state.removeDevice(args.id);
      await audit({ actor: args.actor, action: 'device.remove', target: args.id, result: 'ok' });
      removeOne(args.id);
      return { removed: args.id };
    },
    async removeDevices(args) {
      if (args.ids.length > MAX_BATCH) throw new FleetError('invalid_params', `at most ${MAX_BATCH} devices per batch, got ${args.ids.length}; split the list`);
      const removed = [...new Set(args.ids)].filter((id) => state.device(id) !== undefined);
      const notFound = args.ids.filter((id) => state.device(id) === undefined);
      for (const id of removed) state.removeDevice(id);
      if (removed.length > 0) await audit({ actor: args.actor, action: 'device.remove', target: `${removed.length} devices`, result: 'ok', detail: { ids: removed } });
      for (const id of removed) removeOne(id);
      return { removed, notFound };
    },
    listGroups: () => groupsOf(state),
    async infer(args) {
      state.requireDevice(args.device);
      return requester.request(args.device, 'infer', args.params, args.timeoutMs ?? ctx.timeoutMs);
    },
    async logs(args) {
      state.requireDevice(args.device);
      return requester.request(args.device, 'logs', { lines: args.lines }, ctx.timeoutMs);
    },
    exec: createLegacyExec(ctx),
  };
}

function groupsOf(state: FleetRepository): GroupView[] {
  const groups = new Map<string, GroupView>();
  for (const g of state.groups()) groups.set(g.name, { name: g.name, devices: [], online: 0 });
  for (const d of state.devices()) {
    for (const g of d.groups) {
      const entry = groups.get(g) ?? { name: g, devices: [], online: 0 };
      entry.devices.push(d.id);
      if (d.online) entry.online += 1;
      groups.set(g, entry);
    }
  }
  return [...groups.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
}
