/**
 * `hostManager agent bundle|add|ls|deploy`: the agent itself for the fleet. `bundle` builds the board's
 * install bundle on this machine (packages/agent-bundle, from this checkout, built) and registers it with
 * the controller; `deploy` rolls an agent version out: canary, waves and gates like a model, each device
 * getting the bundle of its own architecture and counting as switched once it reports the new version.
 */
import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { buildAgentBundle } from '@edgefleet/agent-bundle';
import { AGENT_ARCHES } from '@edgefleet/protocol';
import type { AgentArch } from '@edgefleet/protocol';
import type { Client } from './client.js';
import { UsageError, table } from './io.js';
import type { CliContext, CommandOutput, Common } from './io.js';
import { deployOptions, policyFrom, startRollout } from './rollouts.js';

interface AgentBundleView {
  version: number;
  agentVersion: string;
  arch: AgentArch;
  node: string;
  runtime: string;
  length: number;
  sha256: string;
  healthDeadlineS: number;
  addedAt: string;
  created?: boolean;
}

function arches(text: string | undefined): AgentArch[] | undefined {
  if (text === undefined) return undefined;
  const list = text.split(',').map((a) => a.trim()).filter(Boolean);
  const bad = list.find((a) => !(AGENT_ARCHES as readonly string[]).includes(a));
  if (bad !== undefined || list.length === 0) throw new UsageError(`--arch takes ${AGENT_ARCHES.join(', ')} (comma-separated for several), not "${text}"`);
  return list as AgentArch[];
}

async function register(c: Client, file: string, healthDeadlineS: number | undefined): Promise<AgentBundleView> {
  const query = healthDeadlineS !== undefined ? `?healthDeadlineS=${healthDeadlineS}` : '';
  return c.uploadStream<AgentBundleView>(`/api/agent/bundles${query}`, createReadStream(file) as AsyncIterable<Uint8Array>);
}

const registered = (r: AgentBundleView): string =>
  `agent ${r.agentVersion} for ${r.arch}: release ${r.version}${r.created === false ? ' (already in the registry)' : ''}, ${r.length} bytes, health deadline ${r.healthDeadlineS} s; roll it out with \`hostManager agent deploy ${r.agentVersion} --to <target>\``;

async function bundle(ctx: CliContext, a: Common & { arch: string; out?: string; version?: string; 'health-deadline'?: number; register: boolean }, c: Client): Promise<CommandOutput> {
  const [arch] = arches(a.arch)!;
  if (a.arch.includes(',')) throw new UsageError('agent bundle builds one architecture at a time: --arch arm64, armv7 or x64');
  const built = await buildAgentBundle({ arch: arch!, outDir: resolve(a.out ?? '.'), ...(a.version ? { version: a.version } : {}), log: (line) => ctx.io.err(line) });
  const local = { file: built.file, agentVersion: built.version, arch: built.arch, node: built.node, runtime: built.runtime, bytes: built.bytes, sha256: built.sha256 };
  if (!a.register) return { json: local, text: `${built.file}: agent ${built.version} for ${built.arch} (Node.js ${built.node}, ${built.runtime}), ${built.bytes} bytes; not registered (register it with \`hostManager agent add ${built.file}\`)` };
  const r = await register(c, built.file, a['health-deadline']);
  return { json: { ...r, file: built.file }, text: `${built.file}\n${registered(r)}` };
}

async function deployAgent(ctx: CliContext, a: Common & Record<string, unknown> & { version: string; wait?: boolean }, c: Client): Promise<CommandOutput> {
  const only = arches(a['arch'] as string | undefined);
  const body = { kind: 'agent', agent: { version: a.version, ...(only ? { arches: only } : {}) }, to: a['to'], policy: policyFrom(a) };
  return startRollout(ctx.io, c, body, a.wait ?? false, a.json, (r) => `agent ${a.version} (release ${r.version})`);
}

export function agentCommands<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y.command('agent', 'the device agent itself: build bundles for boards, register them, roll agent versions out', (y) =>
    y
      .command(
        'bundle',
        'build the self-contained install bundle for a board (Node.js, the agent, its inference runtime, unit, install script) and register it with the controller',
        (yy) =>
          yy
            .option('arch', { type: 'string', demandOption: true, describe: 'arm64 (64-bit Raspberry Pi OS, Jetson), armv7 (32-bit Raspberry Pi OS) or x64' })
            .option('out', { type: 'string', describe: 'directory the tarball is written to (default: here)' })
            .option('version', { type: 'string', describe: "the bundle's agent version (default: device-agent's package version)" })
            .option('health-deadline', { type: 'number', describe: 'seconds a device gives the new version to connect and report healthy before it falls back (default 180)' })
            .option('register', { type: 'boolean', default: true, describe: 'register it with the controller (--no-register: only build)' }),
        ctx.run<{ arch: string; out?: string; version?: string; 'health-deadline'?: number; register: boolean }>(async (a, c) => bundle(ctx, a, c)),
      )
      .command(
        'add <file>',
        'register a bundle built elsewhere (`hostManager agent bundle --no-register`); what it is is read from its bundle.json',
        (yy) => yy.positional('file', { type: 'string', demandOption: true }).option('health-deadline', { type: 'number', describe: 'seconds to report healthy before the device falls back (default 180)' }),
        ctx.run<{ file: string; 'health-deadline'?: number }>(async (a, c) => {
          const r = await register(c, resolve(a.file), a['health-deadline']);
          return { json: r, text: registered(r) };
        }),
      )
      .command('ls', 'list the agent bundles in the registry', (yy) => yy, ctx.run(async (_a, c) => {
        const list = await c.call<AgentBundleView[]>('GET', '/api/agent/bundles');
        const rows = list.map((b) => ({ agent: b.agentVersion, arch: b.arch, release: b.version, node: b.node, runtime: b.runtime, bytes: b.length, deadline: `${b.healthDeadlineS} s`, added: b.addedAt }));
        return { json: list, text: list.length ? table(rows, ['agent', 'arch', 'release', 'node', 'runtime', 'bytes', 'deadline', 'added']) : 'no agent bundles yet; build one with `hostManager agent bundle --arch <arch>`' };
      }))
      .command(
        'deploy <version>',
        "roll an agent version out: canary first, then waves; each device gets its architecture's bundle and counts as switched when it reports the new version healthy (a device with no bundle for its architecture is skipped, with the reason)",
        (yy) =>
          deployOptions(yy.positional('version', { type: 'string', demandOption: true, describe: 'the agent version, as `agent ls` lists it' }))
            .option('arch', { type: 'string', describe: 'only devices of these architectures (arm64, armv7, x64; comma-separated); the others are skipped' })
            .option('wait', { type: 'boolean', describe: 'follow the rollout until it ends; exit 1 unless it succeeded' }),
        ctx.run<{ version: string; wait?: boolean }>(async (a, c) => deployAgent(ctx, a as unknown as Common & Record<string, unknown> & typeof a, c)),
      )
      .demandCommand(1, 'say which: agent bundle|add|ls|deploy'),
  );
}
