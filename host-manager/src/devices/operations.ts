/** The device operations: list, show, provision (by the operator or by enrolment), remove, groups, and requests to one device. */
import { verifySecretAsync } from '@edgefleet/node-io';
import { FleetError, assertName, topics } from '@edgefleet/protocol';
import { FACT_KEYS } from '../rollouts/target.js';
import type { DeviceOperations, GroupView, PublicDevice } from '../api/contract.js';
import type { FleetRepository } from '../state/repository.js';
import type { DeviceRecord } from '../state/schema.js';
import type { DeviceContext } from './context.js';
import { createLegacyExec } from './legacy-exec.js';
import { passwdLine } from '../broker-setup/passwords.js';
import { MAX_BATCH, provisionDevice, provisionDevices } from './provisioning.js';
import { RateLimiter } from '../access/rate-limit.js';
import type { BatchProvisionResult, ProvisionResult } from './provisioning.js';

function publicDevice(d: DeviceRecord): PublicDevice {
  const { tokenHash, ...rest } = d;
  return { ...rest, provisioned: d.provisioned ?? tokenHash !== '' };
}

export function createDeviceOperations(ctx: DeviceContext): DeviceOperations {
  const { state, fleet, requester, audit } = ctx;
  const enrolmentLimits = enrolmentLimiter(ctx);

  /** Creates a device's credential (by the operator or by enrolment); a bad id or group is the caller's error. */
  const shared = { brokerUrl: ctx.advertised, fleetPublicKeyPem: ctx.keys.publicKeyPem, legacyTopic: ctx.legacyTopic || undefined };
  async function provision(id: string, groups: string[]): Promise<ProvisionResult> {
    let result: ProvisionResult;
    try {
      result = await provisionDevice(state, { ...shared, id, groups });
    } catch (error) {
      if (error instanceof TypeError) throw new FleetError('invalid_params', error.message);
      throw error;
    }
    return withBrokerAccount(ctx, result);
  }

  /** Its credential is gone: forget it, disconnect it now and clear its retained presence. */
  function removeOne(id: string): void {
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
      const result = await withBrokerAccounts(ctx, await provisionDevices(state, { ...shared, devices: args.devices }));
      for (const d of result.devices) fleet.admitDevice(d.id);
      // one audit entry per batch: ten thousand devices must not push the rest of the log out
      await audit({ actor: args.actor, action: 'device.add', target: `${result.devices.length} devices`, result: 'ok', detail: { ids: result.devices.map((d) => d.id) } });
      return result;
    },
    async enrol(args) {
      const enrolment = state.enrolment();
      if (!ctx.enrolmentOn || !enrolment) throw new FleetError('not_found', 'enrolment is off on this controller; ask the operator to provision the device (devices add)');
      enrolmentLimits.check(args.source ?? 'unknown');
      if (!args.key || args.key.length > 512 || !(await verifySecretAsync(args.key, enrolment.keyHash))) {
        // Not an operator action and not a change: counted, never in the audit, so nobody can flood the audit with it.
        ctx.metrics?.enrolmentsRefused.inc({ reason: 'wrong_key' });
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
      await removeBrokerAccounts(ctx, [args.id]);
      return { removed: args.id };
    },
    async removeDevices(args) {
      if (args.ids.length > MAX_BATCH) throw new FleetError('invalid_params', `at most ${MAX_BATCH} devices per batch, got ${args.ids.length}; split the list`);
      const removed = [...new Set(args.ids)].filter((id) => state.device(id) !== undefined);
      const notFound = args.ids.filter((id) => state.device(id) === undefined);
      for (const id of removed) state.removeDevice(id);
      if (removed.length > 0) await audit({ actor: args.actor, action: 'device.remove', target: `${removed.length} devices`, result: 'ok', detail: { ids: removed } });
      for (const id of removed) removeOne(id);
      await removeBrokerAccounts(ctx, removed);
      return { removed, notFound };
    },
    async updateDevice(args) {
      const d = state.requireDevice(args.id);
      const before = { groups: [...d.groups], labels: { ...(d.labels ?? {}) } };
      if (args.groups) {
        for (const g of args.groups) assertName('group', g);
        d.groups = [...new Set(args.groups)].sort();
        for (const g of d.groups) state.ensureGroup(g, new Date().toISOString());
      }
      if (args.labels) d.labels = mergeLabels(d.labels ?? {}, args.labels);
      if (args.groups && before.groups.join(',') !== d.groups.join(',')) await ctx.brokerAccounts?.setGroups(d);
      if (d.labels && Object.keys(d.labels).length === 0) delete d.labels;
      await audit({ actor: args.actor, action: 'device.update', target: args.id, result: 'ok', detail: { before, after: { groups: d.groups, labels: d.labels ?? {} } } });
      fleet.emitFeed({ type: 'device', device: d.id, online: d.online, record: d });
      return { device: publicDevice(d), notes: groupNotes(d) };
    },
    listGroups: () => groupsOf(state),
    deviceReports(args) {
      if (args.device !== undefined) state.requireDevice(args.device);
      return fleet.reports.list(args.device, args.limit);
    },
    async infer(args) {
      state.requireDevice(args.device);
      return requester.exchange(args.device, 'infer', args.params, { timeoutMs: args.timeoutMs ?? ctx.timeoutMs, ...(args.binary ? { binary: [args.binary] } : {}) });
    },
    async logs(args) {
      state.requireDevice(args.device);
      return requester.request(args.device, 'logs', { lines: args.lines }, ctx.timeoutMs);
    },
    telemetryHistory(args) {
      state.requireDevice(args.device);
      return { device: args.device, ...fleet.vitals.series(args.device, Date.now() - args.minutes * 60_000) };
    },
    exec: createLegacyExec(ctx),
  };
}

/** Enrolment attempts per source address and in all: each costs an scrypt (a good one two), and a good one adds a device. */
export const ENROLMENT_LIMITS = { perSourcePerMinute: 10, perMinute: 60 } as const;

function enrolmentLimiter(ctx: DeviceContext): { check(source: string): void } {
  const perSource = new RateLimiter(ENROLMENT_LIMITS.perSourcePerMinute);
  const overall = new RateLimiter(ENROLMENT_LIMITS.perMinute);
  return {
    check(source) {
      const limiter = !perSource.take(source) ? perSource : !overall.take('all') ? overall : undefined;
      if (!limiter) return;
      ctx.metrics?.enrolmentsRefused.inc({ reason: 'rate_limited' });
      const key = limiter === perSource ? source : 'all';
      const seconds = Math.ceil(limiter.retryAfterMs(key) / 1000);
      const which = limiter === perSource ? `from ${source} (${ENROLMENT_LIMITS.perSourcePerMinute} a minute)` : `in all (${ENROLMENT_LIMITS.perMinute} a minute)`;
      throw new FleetError('rate_limited', `too many enrolment attempts ${which}; retry in ${seconds} s`);
    },
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

/** Labels after a merge patch: a string sets, null removes; a fact's name (arch, runtime, ...) is refused. */
function mergeLabels(current: Readonly<Record<string, string>>, patch: Readonly<Record<string, string | null>>): Record<string, string> {
  const next: Record<string, string> = { ...current };
  for (const [key, value] of Object.entries(patch)) {
    if ((FACT_KEYS as readonly string[]).includes(key)) {
      throw new FleetError('invalid_params', `"${key}" is a fact the device reports (${FACT_KEYS.join(', ')}); selectors read it as it is, so it cannot be a label`);
    }
    if (value === null) delete next[key];
    else next[key] = value;
  }
  return next;
}

/** Said when the groups the agent subscribed to (its status) differ from the groups it now has. */
function groupNotes(d: DeviceRecord): string[] {
  const reported = d.info?.groups;
  if (!reported || reported.join(',') === d.groups.join(',')) return [];
  const flag = d.groups.length ? `--groups ${d.groups.join(',')}` : 'no --groups';
  return [
    `${d.id}'s agent subscribes to the groups it was started with (${reported.join(',') || 'none'}): rollouts target it by its new groups at once, ` +
      `but group commands and group fan-out reach it only after it restarts with ${flag} (or "groups" in its config file)`,
  ];
}

/**
 * The device's account on the broker: created in Mosquitto's dynamic security (and the device
 * taken out of the fleet again if the broker refuses, so nothing is half made); on an external
 * broker the controller does not manage, the password file line the operator adds there.
 */
async function withBrokerAccount(ctx: DeviceContext, result: ProvisionResult): Promise<ProvisionResult> {
  const { device, token } = result;
  if (ctx.brokerAccounts) {
    try {
      await ctx.brokerAccounts.addDevice(device, token);
    } catch (error) {
      ctx.state.removeDevice(device.id);
      await ctx.state.write();
      throw error;
    }
    return result;
  }
  if (ctx.broker !== null) return result;
  return {
    ...result,
    brokerCredential: {
      mosquittoPasswd: passwdLine(device.id, token),
      note: `the broker authenticates devices itself: add this line to its password file, regenerate its ACL file (hostManager broker acl > acl) and reload it (kill -HUP <mosquitto pid>)`,
    },
  };
}

/** The batch's accounts on a managed broker (all or none: the batch leaves the fleet again if the broker refuses one); on an unmanaged external broker, each device's password file line. */
async function withBrokerAccounts(ctx: DeviceContext, result: BatchProvisionResult): Promise<BatchProvisionResult> {
  if (ctx.brokerAccounts) {
    const added: string[] = [];
    try {
      for (const d of result.devices) {
        await ctx.brokerAccounts.addDevice(d, d.token);
        added.push(d.id);
      }
    } catch (error) {
      for (const d of result.devices) ctx.state.removeDevice(d.id);
      await ctx.state.write();
      // the ones the broker took are taken back; one it keeps is deleted there at the next start
      for (const id of added) await ctx.brokerAccounts.removeDevice(id).catch(() => undefined);
      throw error;
    }
    return result;
  }
  if (ctx.broker !== null) return result;
  return {
    ...result,
    devices: result.devices.map((d) => ({ ...d, mosquittoPasswd: passwdLine(d.id, d.token) })),
    brokerNote: 'the broker authenticates devices itself: add each mosquittoPasswd line to its password file, regenerate its ACL file (hostManager broker acl > acl) and reload it (kill -HUP <mosquitto pid>)',
  };
}

/** Deletes removed devices' accounts on a managed broker (which disconnects them); a failure is told, and retried at the next start. */
async function removeBrokerAccounts(ctx: DeviceContext, ids: readonly string[]): Promise<void> {
  if (!ctx.brokerAccounts) return;
  const failed: string[] = [];
  let reason = '';
  for (const id of ids) {
    await ctx.brokerAccounts.removeDevice(id).catch((error: unknown) => {
      failed.push(id);
      reason = (error as Error).message;
    });
  }
  if (failed.length > 0) {
    const which = failed.length === 1 ? failed[0]! : `${failed.length} devices (${failed.slice(0, 3).join(', ')}${failed.length > 3 ? ', …' : ''})`;
    throw new FleetError('unavailable', `${which} removed from the fleet, but ${reason}; the controller deletes them on the broker at its next start`);
  }
}
