/** `hostManager devices list|show|add|set|watch|remove` and `hostManager groups`. */
import type { Argv } from 'yargs';
import { DEVICE_TOKEN_ENV } from '../devices/provisioning.js';
import { watchDevices } from './feed-watch.js';
import { UsageError, invocation, table } from './io.js';
import type { CliContext } from './io.js';
import { DEVICE_COLUMNS, deviceRow } from './rows.js';
import type { DeviceView } from './rows.js';

const id = <T>(yy: Argv<T>) => yy.positional('id', { type: 'string', demandOption: true });

/** `a,b` (repeatable) → names. */
function listOf(values: readonly string[] | undefined): string[] {
  return (values ?? []).flatMap((g) => g.split(',')).map((g) => g.trim()).filter(Boolean);
}

/** `site=plant-1,rack=3` and `old-` (remove) → a label patch. */
export function parseLabels(values: readonly string[]): Record<string, string | null> {
  const patch: Record<string, string | null> = {};
  for (const term of listOf(values)) {
    const m = /^([^=]+)=(.*)$/.exec(term);
    if (m) patch[m[1]!.trim()] = m[2]!.trim();
    else if (term.endsWith('-') && term.length > 1) patch[term.slice(0, -1)] = null;
    else throw new UsageError(`--labels takes KEY=VALUE to set and KEY- to remove, e.g. --labels site=plant-1,rack-; got "${term}"`);
  }
  return patch;
}

interface Provisioned {
  token: string;
  config: { httpPort?: number };
  command: string;
  commandInline: string;
  brokerCredential?: { mosquittoPasswd: string; note: string };
}

function provisionedText(idText: string, groups: string[], r: Provisioned): string {
  return [
    `device ${idText} provisioned${groups.length ? ` in ${groups.join(', ')}` : ''}. Its token is shown ONCE; keep it secret.`,
    '',
    'Start its agent, on the device (or on this machine to try: each device has its own data directory and port, so several can run side by side):',
    `  ${r.commandInline}`,
    '',
    `  (deviceAgent is device-agent/dist/bin/deviceAgent.js of this repository; the token travels in ${DEVICE_TOKEN_ENV}, not a flag, so \`ps\` does not show it)`,
    '',
    `Or save this as /etc/edgefleet/${idText}.json (mode 0600) and run \`${r.command}\` (e.g. from the systemd unit in device-agent/systemd/):`,
    JSON.stringify(r.config, null, 2),
    '',
    `Then: \`hostManager devices list\` shows it online; its inference API answers on http://127.0.0.1:${r.config.httpPort ?? 8470}/models on the device.`,
    ...(r.brokerCredential ? ['', `On the broker: ${r.brokerCredential.note}:`, `  ${r.brokerCredential.mosquittoPasswd}`] : []),
  ].join('\n');
}

export function deviceCommands<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y
    .command('devices', 'list, show, add (provision), set (groups, labels), watch and remove devices', (y) =>
      y
        .command('list', 'list devices', {}, ctx.run(async (_a, c) => {
          const list = await c.call<DeviceView[]>('GET', '/api/devices');
          const now = Date.now();
          return { json: list, text: list.length ? table(list.map((d) => deviceRow(d, now)), DEVICE_COLUMNS, undefined, { shrinkFirst: ['labels', 'models', 'groups'] }) : `no devices yet; add one with \`${invocation()} devices add <id>\`` };
        }))
        .command('show <id>', 'show one device', id, ctx.run<{ id: string }>(async (a, c) => {
          const d = await c.call('GET', `/api/devices/${encodeURIComponent(a.id)}`);
          return { json: d, text: JSON.stringify(d, null, 2) };
        }))
        .command(
          'add <id>',
          'provision a device: creates its token and prints its config and start command (once)',
          (yy) => id(yy).option('group', { type: 'string', array: true, default: [], describe: 'group(s) it belongs to' }),
          ctx.run<{ id: string; group: string[] }>(async (a, c) => {
            const groups = listOf(a.group);
            const r = await c.call<Provisioned>('POST', '/api/devices', { id: a.id, groups });
            return { json: r, text: provisionedText(a.id, groups, r) };
          }),
        )
        .command(
          'set <id>',
          "change a device's groups (replaced) and labels (KEY=VALUE sets, KEY- removes)",
          (yy) =>
            id(yy)
              .option('groups', { type: 'string', array: true, describe: 'its groups from now on, e.g. lab,plant-1 ("" for none)' })
              .option('labels', { type: 'string', array: true, describe: 'labels to set or remove, e.g. site=plant-1,rack=3,old-' }),
          ctx.run<{ id: string; groups?: string[]; labels?: string[] }>(async (a, c) => {
            if (a.groups === undefined && a.labels === undefined) throw new UsageError('say what to change: --groups a,b and/or --labels key=value');
            const body = { ...(a.groups !== undefined ? { groups: listOf(a.groups) } : {}), ...(a.labels !== undefined ? { labels: parseLabels(a.labels) } : {}) };
            const r = await c.call<{ device: DeviceView; notes: string[] }>('PATCH', `/api/devices/${encodeURIComponent(a.id)}`, body);
            const row = deviceRow(r.device);
            return { json: r, text: [`${a.id}: groups ${row.groups || '(none)'}; labels ${row.labels || '(none)'}`, ...r.notes.map((n) => `note: ${n}`)].join('\n') };
          }),
        )
        .command(
          'watch [id]',
          'follow devices live (like kubectl get -w): a row whenever one changes',
          (yy) => yy.positional('id', { type: 'string' }).option('telemetry', { type: 'boolean', default: false, describe: 'a row for every telemetry sample too' }),
          ctx.run<{ id?: string; telemetry: boolean }>(async (a, c) => ({
            json: undefined,
            code: await watchDevices({ io: ctx.io, client: c, json: a.json, telemetry: a.telemetry, ...(a.id ? { id: a.id } : {}) }),
          })),
        )
        .command('remove <id>', 'remove a device and its credential', id, ctx.run<{ id: string }>(async (a, c) => {
          const r = await c.call('DELETE', `/api/devices/${encodeURIComponent(a.id)}`);
          return { json: r, text: `device ${a.id} removed; its token no longer works` };
        }))
        .demandCommand(1, 'say which: devices list|show|add|set|watch|remove'),
    )
    .command('groups', 'list groups and their devices', {}, ctx.run(async (_a, c) => {
      const groups = await c.call<{ name: string; devices: string[]; online: number }[]>('GET', '/api/groups');
      return { json: groups, text: groups.length ? table(groups.map((g) => ({ group: g.name, devices: g.devices.join(','), online: `${g.online}/${g.devices.length}` })), ['group', 'online', 'devices']) : 'no groups yet; give devices one with `devices add <id> --group <name>` or `devices set <id> --groups <name>`' };
    }));
}
