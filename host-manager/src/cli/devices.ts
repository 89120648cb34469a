/** `hostManager devices list|show|add|remove` and `hostManager groups`. */
import type { Argv } from 'yargs';
import { table } from './io.js';
import type { CliContext } from './io.js';

export function deviceCommands<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y
    .command('devices', 'list, show, add (provision) and remove devices', (y) =>
      y
        .command('list', 'list devices', {}, ctx.run(async (_a, c) => {
          const list = await c.call<Record<string, unknown>[]>('GET', '/api/devices');
          const rows = list.map((d) => {
            const info = d['info'] as { models?: { name: string; version: number }[]; arch?: string } | null;
            return { id: d['id'], online: d['online'] ? 'online' : 'offline', groups: (d['groups'] as string[]).join(','), models: (info?.models ?? []).map((m) => `${m.name}@${m.version}`).join(','), arch: info?.arch, lastSeen: d['lastSeen'] };
          });
          return { json: list, text: list.length ? table(rows, ['id', 'online', 'groups', 'models', 'arch', 'lastSeen']) : 'no devices yet; add one with `hostManager devices add <id>`' };
        }))
        .command('show <id>', 'show one device', (yy) => yy.positional('id', { type: 'string', demandOption: true }), ctx.run<{ id: string }>(async (a, c) => {
          const d = await c.call('GET', `/api/devices/${encodeURIComponent(a.id)}`);
          return { json: d, text: JSON.stringify(d, null, 2) };
        }))
        .command(
          'add <id>',
          'provision a device: creates its token and prints its config and start command (once)',
          (yy) => yy.positional('id', { type: 'string', demandOption: true }).option('group', { type: 'string', array: true, default: [], describe: 'group(s) it belongs to' }),
          ctx.run<{ id: string; group: string[] }>(async (a, c) => {
            const groups = a.group.flatMap((g) => g.split(',')).filter(Boolean);
            const r = await c.call<{ token: string; config: unknown; command: string; commandInline: string }>('POST', '/api/devices', { id: a.id, groups });
            return {
              json: r,
              text: [
                `device ${a.id} provisioned${groups.length ? ` in ${groups.join(', ')}` : ''}. Its token is shown ONCE; keep it secret.`,
                '',
                `1. Save this as /etc/edgefleet/${a.id}.json on the device (mode 0600):`,
                JSON.stringify(r.config, null, 2),
                '',
                '2. Start the agent:',
                `   ${r.command}`,
                '',
                '   or, without a config file:',
                `   ${r.commandInline}`,
              ].join('\n'),
            };
          }),
        )
        .command('remove <id>', 'remove a device and its credential', (yy) => yy.positional('id', { type: 'string', demandOption: true }), ctx.run<{ id: string }>(async (a, c) => {
          const r = await c.call('DELETE', `/api/devices/${encodeURIComponent(a.id)}`);
          return { json: r, text: `device ${a.id} removed; its token no longer works` };
        }))
        .demandCommand(1, 'say which: devices list|show|add|remove'),
    )
    .command('groups', 'list groups and their devices', {}, ctx.run(async (_a, c) => {
      const groups = await c.call<{ name: string; devices: string[]; online: number }[]>('GET', '/api/groups');
      return { json: groups, text: groups.length ? table(groups.map((g) => ({ group: g.name, devices: g.devices.join(','), online: `${g.online}/${g.devices.length}` })), ['group', 'online', 'devices']) : 'no groups yet; give devices one with `devices add <id> --group <name>`' };
    }));
}
