/**
 * The interactive console: keeps the original C host manager's manners ("Connecting to
 * broker at ...", "Connected", "Press Q<Enter> to quit") and its plain-text commands
 * start|stop|update|install|done|exit sent to a device, group:NAME or all; every CLI
 * command can be typed too.
 */
import { createInterface } from 'node:readline';
import { LEGACY_COMMANDS } from '@edgefleet/protocol';
import type { Manager } from '../main.js';
import type { FeedEvent } from '../devices/presence.js';
import { parseTarget } from '../rollouts/target.js';
import type { CliIO } from './io.js';
import { runCli } from './run.js';

/** Splits a typed line into words, honouring double and single quotes. */
export function splitWords(line: string): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3] ?? ''));
  return out;
}

export async function runConsole(manager: Manager, io: CliIO, stdin: NodeJS.ReadableStream, env: NodeJS.ProcessEnv): Promise<void> {
  const onFeed = (e: FeedEvent): void => {
    if (e.type === 'device') io.out(`${e.device} ${e.online ? 'online' : 'offline'}`);
    else if (e.type === 'rollout' && e.status !== 'running') io.out(`rollout ${e.id} ${e.status}`);
  };
  manager.fleet.on('feed', onFeed);
  const cliEnv = { ...env, EDGEFLEET_URL: manager.url, EDGEFLEET_OPERATOR_TOKEN: manager.operator.token, EDGEFLEET_DATA: manager.dataDir };
  io.out('Press Q<Enter> to quit');
  io.out(`Commands: ${LEGACY_COMMANDS.join('|')} [device|group:NAME|all], or any hostManager command (devices list, deploy m@2 --to pi-1 --wait, ...); help`);
  const rl = createInterface({ input: stdin, terminal: false });
  try {
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === '') continue;
      if (line === 'q' || line === 'Q' || line === 'quit') break;
      const words = splitWords(line);
      const [first, ...rest] = words;
      if (first === 'help') {
        await runCli(['--help'], io, { env: cliEnv, inConsole: false });
        io.out(`Also: ${LEGACY_COMMANDS.join('|')} [device|group:NAME|all] (default all), and Q to quit.`);
        continue;
      }
      if (first && (LEGACY_COMMANDS as readonly string[]).includes(first) && rest.length <= 1) {
        const to = rest[0] ?? 'all';
        try {
          const r = await manager.ops.exec({ to: parseTarget(to), command: first, actor: `operator:${manager.operator.id}` });
          if (r.results.length === 0) io.out('no devices');
          for (const x of r.results) io.out(`${x.device}: ${x.ok ? x.message : `error ${x.error?.code}: ${x.error?.message}`}`);
        } catch (error) {
          io.out(`error: ${(error as Error).message}`);
        }
        continue;
      }
      const code = await runCli(words, io, { env: cliEnv, inConsole: true });
      if (code !== 0) io.out(`(exit ${code})`);
    }
  } finally {
    manager.fleet.off('feed', onFeed);
    rl.close();
  }
  io.out('Disconnecting');
}
