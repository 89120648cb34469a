#!/usr/bin/env node
/**
 * agentBundle --arch arm64|armv7|x64 [--out DIR] [--version V] [--node-version V] [--cache DIR] [--json]
 * Builds the self-contained agent bundle for a board (see packages/agent-bundle/README.md).
 * Exit codes: 0 built, 1 failed, 2 bad arguments.
 */
import { parseArgs } from 'node:util';
import { AGENT_ARCHES, buildAgentBundle } from '../src/index.js';

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        arch: { type: 'string' },
        out: { type: 'string', default: '.' },
        version: { type: 'string' },
        'node-version': { type: 'string' },
        cache: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (error) {
    process.stderr.write(`agentBundle: ${(error as Error).message}\n`);
    return 2;
  }
  if (values.help || !values.arch) {
    process.stderr.write(`usage: agentBundle --arch ${AGENT_ARCHES.join('|')} [--out DIR] [--version V] [--node-version V] [--cache DIR] [--json]\n`);
    return values.help ? 0 : 2;
  }
  const bundle = await buildAgentBundle({
    arch: values.arch,
    outDir: values.out,
    ...(values.version ? { version: values.version } : {}),
    ...(values['node-version'] ? { nodeVersion: values['node-version'] } : {}),
    ...(values.cache ? { cacheDir: values.cache } : {}),
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(
    values.json
      ? `${JSON.stringify(bundle)}\n`
      : `${bundle.file}\n  agent ${bundle.version} for ${bundle.arch}, Node.js ${bundle.node}, ${bundle.runtime}, ${(bundle.bytes / 2 ** 20).toFixed(1)} MiB, sha256 ${bundle.sha256}\n` +
          `  on the board: tar xzf ${bundle.name}.tar.gz && sudo ./${bundle.name}/install.sh --config <device>.json\n`,
  );
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`agentBundle: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
