/**
 * `hostManager broker setup mosquitto` (local: writes or prints a Mosquitto 2 setup for the fleet,
 * and keeps the controller's broker password in the data directory) and `hostManager broker acl`
 * (through the API: the ACL file of a Mosquitto without the dynamic security plugin, for the
 * fleet as it is now).
 */
import { access, chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Argv } from 'yargs';
import { DEFAULTS } from '../defaults.js';
import { brokerPasswordPath, ensureBrokerPassword } from '../broker-setup/password-file.js';
import { dynsecConfig, dynsecInitialFile, findDynsecPlugin, staticAclFile, staticConfig, staticPasswdFile } from '../broker-setup/mosquitto-files.js';
import type { SetupOptions } from '../broker-setup/mosquitto-files.js';
import { UsageError } from './io.js';
import type { CliContext, CommandOutput, Common } from './io.js';

interface SetupArgs extends Common {
  out?: string;
  listen: string;
  static: boolean;
  operator: string;
  plugin?: string;
  'legacy-topic': string;
  force: boolean;
}

/** Where the printed config says its files are when nothing is written. */
const PRINTED_DIR = '/etc/mosquitto/edgefleet';

function listenOf(text: string): { host: string; port: number } {
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[^:\s]+):)?(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || port < 1 || port > 65535) throw new UsageError(`--listen takes [HOST:]PORT, e.g. 0.0.0.0:1883; got "${text}"`);
  return { host: m[1] ?? '0.0.0.0', port };
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false, // not there (or not ours to see): nothing would be overwritten
  );
}

/**
 * Mosquitto started as root runs as the `mosquitto` user: files written by root for it are handed
 * to that user (when it exists), or the broker cannot read its own accounts.
 */
async function mosquittoOwner(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const passwd = await readFile('/etc/passwd', 'utf8').catch(() => ''); // no user database: nothing to hand over
  const line = passwd.split('\n').find((l) => l.startsWith('mosquitto:'));
  const [, , uid, gid] = line?.split(':') ?? [];
  return uid && gid ? { uid: Number(uid), gid: Number(gid) } : undefined;
}

async function setup(a: SetupArgs): Promise<CommandOutput> {
  const { host, port } = listenOf(a.listen);
  const dir = a.out ? resolve(a.out) : PRINTED_DIR;
  const plugin = a.plugin ? { path: a.plugin, found: true } : findDynsecPlugin();
  const { password, created } = await ensureBrokerPassword(a['data-dir']);
  const o: SetupOptions = {
    host,
    port,
    operator: a.operator,
    password,
    ...(a['legacy-topic'] ? { legacyTopic: a['legacy-topic'] } : {}),
    paths: { dynsec: join(dir, 'dynamic-security.json'), passwd: join(dir, 'passwd'), acl: join(dir, 'acl') },
    plugin: plugin.path,
  };
  const files: [string, string, number][] = a.static
    ? [['mosquitto.conf', staticConfig(o), 0o644], ['passwd', staticPasswdFile(o), 0o600], ['acl', staticAclFile(o), 0o644]]
    : [['mosquitto.conf', dynsecConfig(o), 0o644], ['dynamic-security.json', dynsecInitialFile(o), 0o600]];
  const lines: string[] = [];
  if (a.out) {
    await mkdir(dir, { recursive: true });
    for (const [name] of files) {
      if (!a.force && (await exists(join(dir, name)))) throw new UsageError(`${join(dir, name)} already exists (it may hold the broker's live accounts); pass --force to replace it, or choose another --out`);
    }
    for (const [name, text, mode] of files) await writeFile(join(dir, name), text, { mode });
    const owner = await mosquittoOwner();
    if (owner) for (const path of [dir, ...files.map(([n]) => join(dir, n))]) await chown(path, owner.uid, owner.gid);
    lines.push(`wrote ${files.map(([n]) => join(dir, n)).join(', ')}${owner ? ' (owned by the mosquitto user, which the broker runs as)' : ''}`);
  } else {
    for (const [name, text] of files) lines.push(`# ---- ${join(dir, name)} ----`, text);
  }
  const brokerHost = host === '0.0.0.0' || host === '::' ? '<this host>' : host;
  lines.push(
    `the controller's password on the broker (user ${a.operator}): ${brokerPasswordPath(a['data-dir'])} (mode 0600, ${created ? 'created now' : 'kept'}); hostManager reads it there`,
    ...(a.static || plugin.found ? [] : [`note: no ${plugin.path} on this machine; install the mosquitto package or pass --plugin PATH`]),
    '',
    'Start them (Mosquitto must be able to read and write these files as the user it runs as):',
    `  mosquitto -c ${join(dir, 'mosquitto.conf')}`,
    `  hostManager mqtt://${brokerHost}:${port}${a.static ? ' --broker-accounts none' : ''}`,
    a.static
      ? 'Then for each device: `hostManager devices add ID` prints its password file line; add it, run `hostManager broker acl > ' + join(dir, 'acl') + '` and `kill -HUP` mosquitto.'
      : "Then `hostManager devices add ID` creates the device's client and role in Mosquitto (exactly the protocol's ACL); `devices remove ID` deletes them and disconnects it.",
  );
  return { json: { files: files.map(([name, text]) => ({ path: join(dir, name), text })), brokerPasswordFile: brokerPasswordPath(a['data-dir']), plugin: plugin.path, written: Boolean(a.out) }, text: lines.join('\n') };
}

export function brokerCommands<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y.command('broker', 'set up an external Mosquitto for the fleet', (y) =>
    y
      .command(
        'setup mosquitto',
        "write (--out DIR) or print a Mosquitto 2 config with the dynamic security plugin (or, --static, a password and an ACL file), and keep the controller's broker password",
        (yy) =>
          yy
            .option('out', { type: 'string', describe: 'directory to write the files into (default: print them)' })
            .option('listen', { type: 'string', default: `0.0.0.0:${DEFAULTS.mqttPort}`, describe: "Mosquitto's listener, [HOST:]PORT" })
            .option('static', { type: 'boolean', default: false, describe: 'for a Mosquitto without the plugin: password_file and acl_file instead' })
            .option('operator', { type: 'string', default: DEFAULTS.operatorId, describe: "the controller's user name on the broker" })
            .option('plugin', { type: 'string', describe: 'path of mosquitto_dynamic_security.so (default: found for this architecture)' })
            .option('legacy-topic', { type: 'string', default: DEFAULTS.legacyTopic, describe: "the original plain-text command topic ('' = off)" })
            .option('force', { type: 'boolean', default: false, describe: 'replace files that exist' }),
        async (raw) => {
          // local: no controller is needed (it may not run yet)
          const a = raw as unknown as SetupArgs;
          try {
            const r = await setup(a);
            ctx.io.out(a.json ? JSON.stringify(r.json, null, 2) : r.text!);
          } catch (error) {
            if (!(error instanceof UsageError)) throw error;
            ctx.setCode(2);
            ctx.io.err(`hostManager: ${error.message}`);
          }
        },
      )
      .command(
        'acl',
        "print the ACL file of a Mosquitto without the dynamic security plugin, from the protocol's rules and the fleet as it is now",
        (yy) => yy.option('operator', { type: 'string', default: DEFAULTS.operatorId }).option('legacy-topic', { type: 'string', default: DEFAULTS.legacyTopic }),
        ctx.run<{ operator: string; 'legacy-topic': string }>(async (a, c) => {
          const devices = await c.call<{ id: string; groups: string[]; provisioned: boolean }[]>('GET', '/api/devices');
          const text = staticAclFile({ operator: a.operator, ...(a['legacy-topic'] ? { legacyTopic: a['legacy-topic'] } : {}) } as SetupOptions, devices.filter((d) => d.provisioned));
          return { json: { acl: text }, text: text.trimEnd() };
        }),
      )
      .demandCommand(1, 'say which: broker setup mosquitto | broker acl'),
  );
}
