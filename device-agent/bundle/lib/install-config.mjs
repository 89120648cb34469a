// Part of install.sh (run by the bundle's own Node.js): turns the provisioning output of
// `hostManager devices add <id> --json` into the agent's configuration files:
//   <etc>/agent.json  the config keys, the token and fleet key as file paths  (0640 root:<agent group>)
//   <etc>/token       the device token                                         (0640 root:<agent group>)
//   <etc>/fleet.pub   the fleet's public key (PEM)                             (0644)
// usage: node install-config.mjs <provisioning.json> <etc dir> <data dir> <agent gid>
import { chmodSync, chownSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [file, etc, dataDir, gid] = process.argv.slice(2);
const fail = (message) => {
  process.stderr.write(`install.sh: ${message}\n`);
  process.exit(1);
};

let given;
try {
  given = JSON.parse(readFileSync(file, 'utf8'));
} catch (error) {
  fail(`${file} is not JSON (${error.message}); save the output of 'hostManager devices add <id> --json'`);
}
// the whole --json output ({token, config, command, ...}) or just its config object
const config = given && typeof given === 'object' && given.config && typeof given.config === 'object' ? given.config : given;
for (const key of ['broker', 'device', 'token', 'fleetPublicKey']) {
  if (typeof config?.[key] !== 'string' || config[key] === '') fail(`${file} has no "${key}"; it must be the output of 'hostManager devices add <id> --json'`);
}
if (!config.fleetPublicKey.includes('BEGIN PUBLIC KEY')) fail(`"fleetPublicKey" in ${file} is not a PEM public key`);

/** Writes next to the final name, then renames: a reader sees the old file or the new one. */
function put(name, text, mode) {
  const path = join(etc, name);
  writeFileSync(`${path}.tmp`, text, { mode });
  chmodSync(`${path}.tmp`, mode);
  chownSync(`${path}.tmp`, 0, Number(gid));
  renameSync(`${path}.tmp`, path);
  return path;
}

const { token, fleetPublicKey, tokenFile: _ignoredTokenFile, dataDir: _ignoredDataDir, ...rest } = config;
const agentJson = {
  ...rest,
  tokenFile: put('token', `${token}\n`, 0o640),
  fleetPublicKey: put('fleet.pub', fleetPublicKey.endsWith('\n') ? fleetPublicKey : `${fleetPublicKey}\n`, 0o644),
  dataDir,
};
put('agent.json', `${JSON.stringify(agentJson, null, 2)}\n`, 0o640);
process.stdout.write(`configured device ${config.device} for broker ${config.broker} (token in ${join(etc, 'token')})\n`);
