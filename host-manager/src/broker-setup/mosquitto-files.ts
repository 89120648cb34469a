/**
 * The files that set a Mosquitto 2 up for a fleet (pure but for finding the plugin): its config,
 * and either the dynamic security plugin's initial JSON (the operator as the one client, with the
 * protocol's operator rights and the right to manage clients) or, for a Mosquitto without the
 * plugin, a password file and an ACL file.
 */
import { existsSync } from 'node:fs';
import { arch } from 'node:os';
import { DEFAULT_ACL_ACCESS, DYNSEC_ADMIN_ROLE, OPERATOR_ROLE, aclFile, dynsecAdminAcls, roleAcls } from './acl.js';
import { mosquittoHash, passwdLine } from './passwords.js';

const PLUGIN = 'mosquitto_dynamic_security.so';
/** Debian's multiarch directory per Node architecture (where the mosquitto package puts the plugin). */
const TRIPLETS: Record<string, string> = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu', arm: 'arm-linux-gnueabihf', ia32: 'i386-linux-gnu', riscv64: 'riscv64-linux-gnu' };

/** Where this machine's dynamic security plugin is; the Debian path for this architecture when none is found. */
export function findDynsecPlugin(machine = arch(), exists: (p: string) => boolean = existsSync): { path: string; found: boolean } {
  const triplet = TRIPLETS[machine] ?? `${machine}-linux-gnu`;
  const candidates = [`/usr/lib/${triplet}/${PLUGIN}`, `/usr/lib/${PLUGIN}`, `/usr/local/lib/${PLUGIN}`, `/usr/lib64/${PLUGIN}`];
  const found = candidates.find((p) => exists(p));
  return { path: found ?? candidates[0]!, found: found !== undefined };
}

export interface SetupOptions {
  /** Mosquitto's listener, e.g. 0.0.0.0 and 1883. */
  host: string;
  port: number;
  operator: string;
  /** The operator's broker password (the controller's `--broker-password`, kept in <data-dir>/broker.password). */
  password: string;
  legacyTopic?: string;
  /** Absolute paths the config names. */
  paths: { dynsec: string; passwd: string; acl: string };
  plugin: string;
}

function listener(o: SetupOptions): string[] {
  return [
    'per_listener_settings false',
    `listener ${o.port} ${o.host}`,
    'allow_anonymous false',
    // the protocol's largest message (a request with a 1 MiB chunk's overhead, a 4 MiB reply) fits
    'max_packet_size 4194304',
  ];
}

export function dynsecConfig(o: SetupOptions): string {
  return ['# edgefleet: Mosquitto with the dynamic security plugin (hostManager broker setup mosquitto)', ...listener(o), `plugin ${o.plugin}`, `plugin_opt_config_file ${o.paths.dynsec}`, ''].join('\n');
}

/** The plugin's initial file: default deny, the operator as the only client (its roles: operator rights, client management). */
export function dynsecInitialFile(o: SetupOptions): string {
  const h = mosquittoHash(o.password);
  return `${JSON.stringify(
    {
      defaultACLAccess: DEFAULT_ACL_ACCESS,
      clients: [{ username: o.operator, textname: 'edgefleet controller (operator)', password: h.password, salt: h.salt, iterations: h.iterations, roles: [{ rolename: OPERATOR_ROLE }, { rolename: DYNSEC_ADMIN_ROLE }] }],
      groups: [],
      roles: [
        { rolename: OPERATOR_ROLE, textname: "the protocol's operator rights", acls: roleAcls({ role: 'operator', id: o.operator }, o.legacyTopic) },
        { rolename: DYNSEC_ADMIN_ROLE, textname: 'creates and deletes the devices\' clients and roles', acls: dynsecAdminAcls() },
      ],
    },
    null,
    2,
  )}\n`;
}

export function staticConfig(o: SetupOptions): string {
  return [
    '# edgefleet: Mosquitto with a password file and an ACL file (hostManager broker setup mosquitto --static)',
    ...listener(o),
    // a device's client id is its user name, so nobody can knock it off by reusing its id (one connection per user)
    'use_username_as_clientid true',
    `password_file ${o.paths.passwd}`,
    `acl_file ${o.paths.acl}`,
    '',
  ].join('\n');
}

export function staticPasswdFile(o: SetupOptions): string {
  return `${passwdLine(o.operator, o.password)}\n`;
}

export function staticAclFile(o: SetupOptions, devices: readonly { id: string; groups: readonly string[] }[] = []): string {
  return aclFile(o.operator, devices, o.legacyTopic);
}
