/**
 * The agent's install directory (`agentHome`, e.g. /opt/edgefleet/agent), as the bundle's install
 * script lays it out and the launcher reads it:
 *
 *   versions/<version>/   one unpacked bundle per agent version (node/, app/, bundle.json, scripts)
 *   current -> versions/<version>   what the launcher starts
 *   launcher              POSIX sh: starts `current`; during a trial supervises it and falls back
 *   state/trial           written by the agent that installed a new version; read by the launcher:
 *                         to=<version> from=<version> deadline_s=<n> attempts=<n> (one per line)
 *   state/healthy         written by the new agent once it is connected and has published its status
 *   state/rolled-back     written by the launcher when it fell back: failed= restored= reason= at=
 *   state/update.json     the agent's own record of the last update (reported in its status)
 *   state/accepted        the highest agent-manifest version accepted (anti-rollback)
 *   state/rollback-seq    the highest rollback sequence number used (a rollback manifest works once)
 *
 * The launcher is a shell script so that a new version that cannot even start (a broken node binary, a
 * crash at import) is still caught: nothing of the new version runs before the launcher decides.
 */
import { readFile, readlink, rename, symlink, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { AgentUpdateStateSchema } from '@edgefleet/protocol';
import type { AgentUpdateState } from '@edgefleet/protocol';
import { fsyncDir, writeFileAtomic } from '@edgefleet/node-io';

export interface AgentHomePaths {
  root: string;
  versions: string;
  current: string;
  state: string;
  trial: string;
  healthy: string;
  rolledBack: string;
  record: string;
  accepted: string;
  rollbackSeq: string;
}

export function agentHomePaths(root: string): AgentHomePaths {
  const state = join(root, 'state');
  return {
    root,
    versions: join(root, 'versions'),
    current: join(root, 'current'),
    state,
    trial: join(state, 'trial'),
    healthy: join(state, 'healthy'),
    rolledBack: join(state, 'rolled-back'),
    record: join(state, 'update.json'),
    accepted: join(state, 'accepted'),
    rollbackSeq: join(state, 'rollback-seq'),
  };
}

/** Writes a file so that a reader (or a crash) sees the old content or the new, never half. */
export function writeAtomic(file: string, text: string): Promise<void> {
  return writeFileAtomic(file, text);
}

export { fsyncDir as syncDir };

/** Points `current` at versions/<version> in one rename (a relative link, so the tree can be moved). */
export async function switchCurrent(paths: AgentHomePaths, version: string): Promise<void> {
  const tmp = `${paths.current}.tmp-${process.pid}`;
  await unlink(tmp).catch(() => undefined); // a leftover from a crash at this very step
  await symlink(join('versions', version), tmp);
  await rename(tmp, paths.current);
  await fsyncDir(paths.root);
}

/** The version `current` points to, or null when there is none. */
export async function currentVersion(paths: AgentHomePaths): Promise<string | null> {
  try {
    return basename(await readlink(paths.current));
  } catch {
    return null; // not installed from a bundle (or the link is missing): no current version
  }
}

/** The `key=value` lines the launcher reads and writes (shell-friendly: no quoting, one value per line). */
export function parseKeyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

export function keyValues(values: Record<string, string | number>): string {
  return `${Object.entries(values)
    .map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`)
    .join('\n')}\n`;
}

export async function readKeyValues(file: string): Promise<Record<string, string> | null> {
  try {
    return parseKeyValues(await readFile(file, 'utf8'));
  } catch {
    return null; // no such file: nothing pending
  }
}

export async function readRecord(paths: AgentHomePaths): Promise<AgentUpdateState | undefined> {
  try {
    const parsed = AgentUpdateStateSchema.safeParse(JSON.parse(await readFile(paths.record, 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined; // no update yet (or an unreadable record, which is rewritten at the next update)
  }
}

/** A counter kept in a file of its own (the highest accepted manifest version, the last rollback sequence), or 0. */
export async function readCounter(file: string): Promise<number> {
  try {
    const n = Number((await readFile(file, 'utf8')).trim());
    return Number.isSafeInteger(n) && n > 0 ? n : 0;
  } catch {
    return 0; // nothing accepted (or used) yet
  }
}

export const readAccepted = (paths: AgentHomePaths): Promise<number> => readCounter(paths.accepted);
