/**
 * Provisioning a device: its credential is created here (the token returned once,
 * only its hash stored), with the agent's config file and start command.
 */
import { hashRandomToken } from '@edgefleet/node-io';
import { FleetError, assertDeviceId, assertName } from '@edgefleet/protocol';
import type { FleetRepository } from '../state/repository.js';
import type { DeviceRecord } from '../state/schema.js';
import { newToken } from '../access/tokens.js';

export interface ProvisionResult {
  device: DeviceRecord;
  token: string;
  /** The JSON config file for the agent (keys of device-agent's config). */
  config: Record<string, unknown>;
  /** The one line that starts the agent with that config file. */
  command: string;
  /** The same, with everything on the command line (no config file needed). */
  commandInline: string;
  /** On an external broker the controller does not manage: what the operator adds there (a Mosquitto password file line). */
  brokerCredential?: { mosquittoPasswd: string; note: string };
}

/** At most this many devices per batch request (a 10,000-device fleet is 10 requests; each answer stays a few MB). */
export const MAX_BATCH = 1000;

export interface ProvisionArgs {
  brokerUrl: string;
  fleetPublicKeyPem: string;
  legacyTopic?: string | undefined;
}

/** Devices provisioned at once: what each needs beside the shared broker URL and fleet key. */
export interface BatchProvisionResult {
  broker: string;
  fleetPublicKey: string;
  legacyTopic?: string;
  /** `mosquittoPasswd`: the device's password file line, when an external broker the controller does not manage authenticates devices. */
  devices: { id: string; groups: string[]; token: string; httpPort: number; mosquittoPasswd?: string }[];
  /** What to do with the mosquittoPasswd lines. */
  brokerNote?: string;
}

/** Checks one new device (id rules, groups, not taken) and makes its record; stores nothing. */
function newDevice(state: FleetRepository, id: string, groups: string[], ctx: { operators: string[]; ports: AgentPorts }): { device: DeviceRecord; token: string } {
  // one namespace with operators (their ids and client-id prefixes); reserved ids refused
  const checked = assertDeviceId(id, { operators: ctx.operators });
  for (const g of groups) assertName('group', g);
  const existing = state.device(checked);
  if (existing?.tokenHash) {
    throw new FleetError('conflict', `device ${checked} already exists; remove it first (devices remove ${checked}) to issue a new token`);
  }
  const token = newToken();
  const httpPort = ctx.ports.take(checked);
  const device: DeviceRecord = {
    id: checked,
    groups: [...new Set(groups)].sort(),
    tokenHash: hashRandomToken(token),
    createdAt: new Date().toISOString(),
    online: existing?.online ?? false,
    lastSeen: existing?.lastSeen ?? null,
    info: existing?.info ?? null,
    telemetry: existing?.telemetry ?? null,
    provisioned: true,
    agentHttpPort: httpPort,
    ...(existing?.labels ? { labels: existing.labels } : {}),
  };
  return { device, token };
}

function store(state: FleetRepository, device: DeviceRecord): void {
  state.putDevice(device);
  for (const g of device.groups) state.ensureGroup(g, device.createdAt);
}

/** Creates a device's credential. The token is returned once and never stored. */
export async function provisionDevice(state: FleetRepository, args: ProvisionArgs & { id: string; groups: string[] }): Promise<ProvisionResult> {
  const { device, token } = newDevice(state, args.id, args.groups, { operators: state.operators().map((o) => o.id), ports: agentPorts(state) });
  store(state, device);
  await state.write();
  return { device, token, ...startInstructions(device, token, args) };
}

/**
 * Creates the credentials of many devices with one durable write: all of them, or none
 * when any id is refused (the error names the first few and why). Tokens are returned once.
 */
export async function provisionDevices(state: FleetRepository, args: ProvisionArgs & { devices: { id: string; groups: string[] }[] }): Promise<BatchProvisionResult> {
  if (args.devices.length === 0) throw new FleetError('invalid_params', 'give at least one device');
  if (args.devices.length > MAX_BATCH) throw new FleetError('invalid_params', `at most ${MAX_BATCH} devices per batch, got ${args.devices.length}; split the list`);
  const ctx = { operators: state.operators().map((o) => o.id), ports: agentPorts(state) };
  const seen = new Set<string>();
  const made: { device: DeviceRecord; token: string }[] = [];
  const problems: { conflict: boolean; message: string }[] = [];
  for (const d of args.devices) {
    try {
      if (seen.has(d.id)) throw new FleetError('conflict', `device ${d.id} is in the list twice`);
      seen.add(d.id);
      made.push(newDevice(state, d.id, d.groups, ctx));
    } catch (error) {
      // a bad id or group is a TypeError from the protocol's checks, a taken one a conflict
      problems.push({ conflict: error instanceof FleetError && error.code === 'conflict', message: (error as Error).message });
    }
  }
  if (problems.length > 0) {
    const list = problems.slice(0, 3).map((p) => p.message).join('; ') + (problems.length > 3 ? '; …' : '');
    throw new FleetError(problems.every((p) => p.conflict) ? 'conflict' : 'invalid_params', `${problems.length} of ${args.devices.length} devices refused, none provisioned: ${list}`);
  }
  for (const m of made) store(state, m.device);
  await state.write();
  return {
    broker: args.brokerUrl,
    fleetPublicKey: args.fleetPublicKeyPem,
    ...(args.legacyTopic ? { legacyTopic: args.legacyTopic } : {}),
    devices: made.map((m) => ({ id: m.device.id, groups: m.device.groups, token: m.token, httpPort: m.device.agentHttpPort! })),
  };
}

/** The agent's config file and the two ways to start it, for one provisioned device. */
function startInstructions(device: DeviceRecord, token: string, args: ProvisionArgs): Pick<ProvisionResult, 'config' | 'command' | 'commandInline'> {
  const { id } = device;
  const httpPort = device.agentHttpPort!;
  const config: Record<string, unknown> = {
    broker: args.brokerUrl,
    device: id,
    token,
    fleetPublicKey: args.fleetPublicKeyPem,
    groups: device.groups,
    // Its own directory and port, so a second agent on the same machine does not clash with this one.
    dataDir: `/var/lib/edgefleet-agent/${id}`,
    httpPort,
    ...(args.legacyTopic ? { legacyTopic: args.legacyTopic } : {}),
  };
  const groupsFlag = device.groups.length ? ` --groups ${device.groups.join(',')}` : '';
  // bash/zsh ANSI-C quoting keeps the PEM's newlines on one line (a PEM has no quotes or backslashes).
  const keyInline = `$'${args.fleetPublicKeyPem.trimEnd().replace(/\n/g, '\\n')}'`;
  return {
    config,
    command: `deviceAgent --config /etc/edgefleet/${id}.json`,
    commandInline:
      // The token goes in the environment, not a flag: flags are visible to every user in `ps`.
      `${DEVICE_TOKEN_ENV}=${token} deviceAgent --broker ${args.brokerUrl} --device ${id} --fleet-public-key=${keyInline}${groupsFlag}` +
      ` --data-dir ~/.edgefleet-agent/${id} --http-port ${httpPort}` +
      (args.legacyTopic ? ` --legacy-topic ${args.legacyTopic}` : ''),
  };
}

/** The environment variable the agent reads its token from (the operator's is EDGEFLEET_OPERATOR_TOKEN). */
export const DEVICE_TOKEN_ENV = 'EDGEFLEET_DEVICE_TOKEN';

/** The agent's default inference API port; each provisioned device gets the lowest one from here that no other device has. */
export const FIRST_AGENT_PORT = 8470;

interface AgentPorts {
  /** The lowest free port for device `id` (its own old port counts as free), taken from then on. */
  take(id: string): number;
}

/** The agent ports devices hold, read once: a batch of a thousand must not scan the fleet per device. */
function agentPorts(state: FleetRepository): AgentPorts {
  const held = new Set<number>();
  const own = new Map<string, number>();
  for (const d of state.devices()) {
    if (d.agentHttpPort === undefined) continue;
    held.add(d.agentHttpPort);
    own.set(d.id, d.agentHttpPort);
  }
  let lowestFree = FIRST_AGENT_PORT;
  const advance = (): void => {
    while (held.has(lowestFree)) lowestFree += 1;
  };
  advance();
  return {
    take(id) {
      const port = Math.min(own.get(id) ?? Infinity, lowestFree);
      held.add(port);
      own.set(id, port);
      advance();
      return port;
    },
  };
}
