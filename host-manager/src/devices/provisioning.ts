/**
 * Provisioning a device: its credential is created here (the token returned once,
 * only its hash stored), with the agent's config file and start command.
 */
import { hashSecret } from '@edgefleet/node-io';
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

/** Creates a device's credential. The token is returned once and never stored. */
export async function provisionDevice(
  state: FleetRepository,
  args: { id: string; groups: string[]; brokerUrl: string; fleetPublicKeyPem: string; legacyTopic?: string | undefined },
): Promise<ProvisionResult> {
  // one namespace with operators (their ids and client-id prefixes); reserved ids refused
  const id = assertDeviceId(args.id, { operators: state.operators().map((o) => o.id) });
  for (const g of args.groups) assertName('group', g);
  const existing = state.device(id);
  if (existing?.tokenHash) {
    throw new FleetError('conflict', `device ${id} already exists; remove it first (devices remove ${id}) to issue a new token`);
  }
  const token = newToken();
  const httpPort = freeAgentPort(state.devices().filter((d) => d.id !== id));
  const device: DeviceRecord = {
    id,
    groups: [...new Set(args.groups)].sort(),
    tokenHash: hashSecret(token),
    createdAt: new Date().toISOString(),
    online: existing?.online ?? false,
    lastSeen: existing?.lastSeen ?? null,
    info: existing?.info ?? null,
    telemetry: existing?.telemetry ?? null,
    provisioned: true,
    agentHttpPort: httpPort,
    ...(existing?.labels ? { labels: existing.labels } : {}),
  };
  state.putDevice(device);
  for (const g of device.groups) state.ensureGroup(g, device.createdAt);
  await state.write();
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
    device,
    token,
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

function freeAgentPort(others: readonly DeviceRecord[]): number {
  const taken = new Set(others.map((d) => d.agentHttpPort).filter((p): p is number => p !== undefined));
  let port = FIRST_AGENT_PORT;
  while (taken.has(port)) port += 1;
  return port;
}
