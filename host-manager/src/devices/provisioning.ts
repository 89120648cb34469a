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
    dataDir: '/var/lib/edgefleet-agent',
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
      `EDGEFLEET_TOKEN=${token} deviceAgent --broker ${args.brokerUrl} --device ${id} --fleet-public-key=${keyInline}${groupsFlag}` +
      (args.legacyTopic ? ` --legacy-topic ${args.legacyTopic}` : ''),
  };
}
