/**
 * The controller's side of Mosquitto's dynamic security plugin: over `$CONTROL/dynamic-security/v1`
 * it gives each provisioned device a client (username and client id = the device id, its token as
 * password) and a role with exactly the protocol's ACL, changes the role when the device's groups
 * change, and deletes both when the device is removed (the plugin disconnects it at once).
 */
import { randomUUID } from 'node:crypto';
import type { BrokerClient } from '../broker-client.js';
import type { Logger } from 'pino';
import { FleetError } from '@edgefleet/protocol';
import { DYNSEC_TOPIC, deviceRoleName, roleAcls } from './acl.js';

/** What the controller does to the broker's own accounts when the fleet changes (absent: the broker needs nothing). */
export interface BrokerAccounts {
  readonly kind: 'mosquitto-dynsec';
  addDevice(device: { id: string; groups: readonly string[] }, token: string): Promise<void>;
  removeDevice(id: string): Promise<void>;
  setGroups(device: { id: string; groups: readonly string[] }): Promise<void>;
  /** Removes the clients of devices no longer in the fleet; says which devices have no client. */
  reconcile(devices: readonly { id: string; provisioned: boolean }[]): Promise<{ removed: string[]; missing: string[] }>;
}

type Command = Record<string, unknown> & { command: string };
interface Response {
  command: string;
  error?: string;
  correlationData?: string;
  data?: Record<string, unknown>;
}

const RESPONSE_TOPIC = `${DYNSEC_TOPIC}/response`;
/** Errors that mean "already so": deleting what is not there. */
const ALREADY = /not found/i;

/** Sends batches of commands and waits for their responses (matched by correlation data), one batch at a time. */
function commander(client: BrokerClient, timeoutMs: number): (commands: Command[]) => Promise<Response[]> {
  let queue: Promise<unknown> = Promise.resolve();
  let subscribed: Promise<unknown> | undefined;
  return (commands) => {
    const run = async (): Promise<Response[]> => {
      subscribed ??= client.subscribeAsync(RESPONSE_TOPIC, { qos: 1 });
      await subscribed;
      const corr = randomUUID();
      const tagged = commands.map((c, i) => ({ ...c, correlationData: `${corr}:${i}` }));
      return new Promise<Response[]>((resolve, reject) => {
        const timer = setTimeout(() => {
          client.off('message', onMessage);
          reject(new FleetError('deadline_exceeded', `Mosquitto's dynamic security did not answer ${commands.map((c) => c.command).join(', ')} within ${timeoutMs} ms`));
        }, timeoutMs);
        const onMessage = (topic: string, payload: Buffer): void => {
          if (topic !== RESPONSE_TOPIC) return;
          let body: { responses?: Response[] };
          try {
            body = JSON.parse(payload.toString()) as { responses?: Response[] };
          } catch {
            return; // not a response of the plugin: ignored
          }
          const mine = (body.responses ?? []).filter((r) => r.correlationData?.startsWith(`${corr}:`));
          if (mine.length === 0) return;
          clearTimeout(timer);
          client.off('message', onMessage);
          resolve(mine);
        };
        client.on('message', onMessage);
        client.publish(DYNSEC_TOPIC, JSON.stringify({ commands: tagged }), { qos: 1 });
      });
    };
    const result = queue.then(run, run);
    queue = result.catch(() => undefined);
    return result;
  };
}

/** Whether the broker answers the dynamic security API (a Mosquitto 2 with the plugin, and the rights to use it). */
export async function detectDynsec(client: BrokerClient, timeoutMs = 3000): Promise<boolean> {
  try {
    const [r] = await commander(client, timeoutMs)([{ command: 'getDefaultACLAccess' }]);
    return r !== undefined && !r.error;
  } catch {
    return false; // no answer in time: a broker without the plugin (or without our rights to it)
  }
}

function failed(responses: Response[], what: string, tolerate = ALREADY): void {
  const bad = responses.filter((r) => r.error && !tolerate.test(r.error));
  if (bad.length) throw new FleetError('unavailable', `Mosquitto's dynamic security refused to ${what}: ${bad.map((r) => `${r.command}: ${r.error}`).join('; ')}`);
}

export function dynsecAccounts(client: BrokerClient, opts: { legacyTopic?: string; log: Logger; timeoutMs?: number }): BrokerAccounts {
  const send = commander(client, opts.timeoutMs ?? 10_000);
  const acls = (d: { id: string; groups: readonly string[] }) => roleAcls({ role: 'device', id: d.id, groups: d.groups }, opts.legacyTopic);
  const forget = (id: string): Command[] => [
    { command: 'deleteClient', username: id },
    { command: 'deleteRole', rolename: deviceRoleName(id) },
  ];
  return {
    kind: 'mosquitto-dynsec',
    async addDevice(d, token) {
      // whatever was left under this id goes first, so a re-provisioned device gets exactly its new credential
      failed(await send(forget(d.id)), `clear ${d.id}`);
      failed(
        await send([
          { command: 'createRole', rolename: deviceRoleName(d.id), textname: `edgefleet device ${d.id}`, acls: acls(d) },
          { command: 'createClient', username: d.id, clientid: d.id, password: token, textname: `edgefleet device ${d.id}`, roles: [{ rolename: deviceRoleName(d.id) }] },
        ]),
        `create ${d.id}'s client and role`,
        /^$/,
      );
      opts.log.info({ device: d.id }, "created the device's client and role in Mosquitto's dynamic security");
    },
    async removeDevice(id) {
      failed(await send(forget(id)), `delete ${id}'s client and role`);
      opts.log.info({ device: id }, "deleted the device's client and role in Mosquitto's dynamic security");
    },
    async setGroups(d) {
      failed(
        await send([{ command: 'deleteRole', rolename: deviceRoleName(d.id) }, { command: 'createRole', rolename: deviceRoleName(d.id), textname: `edgefleet device ${d.id}`, acls: acls(d) }, { command: 'addClientRole', username: d.id, rolename: deviceRoleName(d.id) }]),
        `change ${d.id}'s role`,
      );
    },
    async reconcile(devices) {
      const [roles] = await send([{ command: 'listRoles' }]);
      failed(roles ? [roles] : [], 'list roles', /^$/);
      const names = ((roles?.data?.['roles'] as string[] | undefined) ?? []).filter((r) => r.startsWith(deviceRoleName('')));
      const known = new Set(devices.map((d) => d.id));
      const removed = names.map((r) => r.slice(deviceRoleName('').length)).filter((id) => !known.has(id));
      for (const id of removed) failed(await send(forget(id)), `delete ${id}'s client and role`);
      const present = new Set(names.map((r) => r.slice(deviceRoleName('').length)));
      return { removed, missing: devices.filter((d) => d.provisioned && !present.has(d.id)).map((d) => d.id) };
    },
  };
}

/** `auto`: use the plugin when the broker answers it; `mosquitto-dynsec`: require it; `none`: the broker's accounts are managed elsewhere. */
export type BrokerAccountsMode = 'auto' | 'mosquitto-dynsec' | 'none';

/** The accounts of an external broker, as the mode asks: undefined when it manages them itself (or with files). */
export async function brokerAccountsFor(client: BrokerClient, mode: BrokerAccountsMode, opts: { legacyTopic?: string; log: Logger }): Promise<BrokerAccounts | undefined> {
  if (mode === 'none') return undefined;
  if (await detectDynsec(client, mode === 'auto' ? 2000 : 10_000)) {
    opts.log.info("the broker answers Mosquitto's dynamic security API: devices get their clients and roles there");
    return dynsecAccounts(client, opts);
  }
  if (mode === 'mosquitto-dynsec') {
    throw new FleetError(
      'unavailable',
      "the broker does not answer Mosquitto's dynamic security API on $CONTROL/dynamic-security/v1: load the plugin (hostManager broker setup mosquitto writes the config) and give the operator the edgefleet-dynsec-admin role, or run with --broker-accounts none",
    );
  }
  return undefined;
}

/** At start: clients of devices removed meanwhile are deleted; devices that have none are named (they must be provisioned again). */
export async function reconcileAccounts(accounts: BrokerAccounts, state: { devices(): readonly { id: string; tokenHash: string; provisioned?: boolean }[] }, log: Logger): Promise<void> {
  const devices = state.devices().map((d) => ({ id: d.id, provisioned: d.provisioned !== false && d.tokenHash !== '' }));
  const { removed, missing } = await accounts.reconcile(devices);
  if (removed.length) log.info({ devices: removed }, "deleted the Mosquitto clients of devices no longer in the fleet");
  if (missing.length) {
    log.warn({ devices: missing }, "these devices have no client in Mosquitto's dynamic security (provisioned before it was used): remove and add them again to issue credentials there");
  }
}
