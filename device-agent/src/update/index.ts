/**
 * Agent self-update, the agent's side (the launcher's side is device-agent/bundle/launcher):
 *
 * - `installAgentBundle` (through the transfer receiver's hook for manifests of kind 'agent') stages
 *   the new version, writes the trial, switches `current` and asks for a restart (exit 75);
 * - `onOnline`, called each time the agent is connected and has published its status: a version on
 *   trial marks itself healthy (state/healthy; the launcher then ends the trial) and reports
 *   `agent.updated`; a version the launcher fell back to reports `agent.rolled-back` with the reason;
 * - `state()`: the last update, for the device status.
 *
 * Only an agent started by the launcher (which sets EDGEFLEET_AGENT_HOME) can update itself.
 */
import { readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { FleetError, isRollbackBelow, makeEvent, toInfoText } from '@edgefleet/protocol';
import type { AgentUpdateState, FleetEvent, Manifest } from '@edgefleet/protocol';
import { agentHomePaths, currentVersion, readAccepted, readCounter, readKeyValues, readRecord, writeAtomic } from './home.js';
import type { AgentHomePaths } from './home.js';
import { checkManifest, installAgentBundle } from './install.js';

export { installAgentBundle, BundleJsonSchema, BUNDLE_ENTRY } from './install.js';
export type { BundleJson, InstallContext, InstalledBundle } from './install.js';
export { agentHomePaths } from './home.js';

/** Exit code that asks the launcher (or systemd) to start the agent again, now from `current`. */
export const RESTART_EXIT_CODE = 75;

export interface AgentUpdaterOptions {
  agentHome: string;
  /** This agent's version (its package version). */
  version: string;
  logger: Logger;
  /** Stops the agent and exits with RESTART_EXIT_CODE; called once a new version is switched to. */
  requestRestart: () => void;
  /** Publishes `agent.updating` (fire and forget: the restart follows). */
  publishEvent: (event: FleetEvent) => void;
}

export interface AgentUpdater {
  /** The transfer receiver's hook for agent bundles (see transfer.ts `agentBundles`). */
  readonly receiver: {
    highestAccepted(): number;
    lastRollbackSeq(): number;
    check(manifest: Manifest): void;
    install(stagedFile: string, manifest: Manifest): Promise<{ from: string; to: string }>;
  };
  /** Marks a version on trial healthy, reports updates and rollbacks; true when the status changed. */
  onOnline(publish: (event: FleetEvent) => Promise<void>): Promise<boolean>;
  state(): AgentUpdateState | undefined;
}

export async function createAgentUpdater(opts: AgentUpdaterOptions): Promise<AgentUpdater> {
  const paths = agentHomePaths(opts.agentHome);
  const log = opts.logger.child({ part: 'agent-update' });
  let record = await readRecord(paths);
  let accepted = await readAccepted(paths);
  let rollbackSeq = await readCounter(paths.rollbackSeq);
  // Fell back before this start: the status says so from the first publish on; the event follows online.
  const fellBackAtStart = await readKeyValues(paths.rolledBack);
  if (fellBackAtStart) {
    record = rollbackRecord(fellBackAtStart, opts.version);
    await writeAtomic(paths.record, JSON.stringify(record));
  }
  let installing = false;

  const receiver: AgentUpdater['receiver'] = {
    highestAccepted: () => accepted,
    lastRollbackSeq: () => rollbackSeq,
    check: (manifest) => void checkManifest(manifest),
    async install(stagedFile, manifest) {
      if (installing) throw new FleetError('conflict', 'an agent bundle is being installed already');
      installing = true;
      try {
        const done = await installAgentBundle(stagedFile, manifest, { agentHome: opts.agentHome, runningVersion: opts.version, highestAccepted: accepted });
        record = done.record;
        if (isRollbackBelow(manifest, accepted) && manifest.rollbackSeq !== undefined) rollbackSeq = manifest.rollbackSeq;
        accepted = Math.max(accepted, manifest.version);
        log.info({ from: done.from, to: done.to, manifestVersion: manifest.version }, 'agent bundle installed; restarting into it');
        opts.publishEvent(makeEvent('agent.updating', { from: done.from, to: done.to, version: manifest.version }));
        setImmediate(opts.requestRestart); // after this reply is on its way: stop() waits for it
        return { from: done.from, to: done.to };
      } finally {
        installing = false;
      }
    },
  };

  async function onOnline(publish: (event: FleetEvent) => Promise<void>): Promise<boolean> {
    const trial = await readKeyValues(paths.trial);
    if (trial && trial.to === opts.version) return confirm(trial, publish);
    const fellBack = await readKeyValues(paths.rolledBack);
    if (fellBack) return reportRollback(fellBack, publish);
    return false;
  }

  async function confirm(trial: Record<string, string>, publish: (event: FleetEvent) => Promise<void>): Promise<boolean> {
    const from = trial.from ?? 'unknown';
    await writeAtomic(paths.healthy, `${opts.version}\n`);
    if (record?.state === 'updated' && record.to === opts.version) return false; // a reconnect: reported already
    record = { state: 'updated', from, to: opts.version, at: Date.now() };
    await writeAtomic(paths.record, JSON.stringify(record));
    log.info({ from, to: opts.version }, 'agent update healthy');
    await publish(makeEvent('agent.updated', { from, to: opts.version })).catch((error: unknown) => log.warn({ err: error }, 'could not report the update'));
    await prune(paths, [opts.version, from], log);
    return true;
  }

  async function reportRollback(fellBack: Record<string, string>, publish: (event: FleetEvent) => Promise<void>): Promise<boolean> {
    record = rollbackRecord(fellBack, opts.version);
    await writeAtomic(paths.record, JSON.stringify(record));
    const { from: restored, to: failed, reason = '' } = record;
    log.error({ failed, restored, reason }, 'agent update rolled back');
    try {
      await publish(makeEvent('agent.rolled-back', { failed, restored, reason }));
      await rename(paths.rolledBack, `${paths.rolledBack}.reported`); // reported once, kept for reading
    } catch (error) {
      log.warn({ err: error }, 'could not report the rollback yet; it is reported at the next connection');
    }
    const current = await currentVersion(paths);
    if (current && failed !== current) await prune(paths, [current], log);
    return true;
  }

  return { receiver, onOnline, state: () => record };
}

/** The record of a fallback, from what the launcher wrote in state/rolled-back. */
function rollbackRecord(fellBack: Record<string, string>, running: string): AgentUpdateState {
  return {
    state: 'rolled-back',
    // what the launcher wrote goes into the status as it is bounded there (a longer one would get the whole status refused)
    from: toInfoText(fellBack.restored ?? running),
    to: toInfoText(fellBack.failed ?? 'unknown'),
    reason: toInfoText(fellBack.reason ?? 'the launcher fell back to the previous version'),
    at: Number(fellBack.at ?? 0) * 1000 || Date.now(),
  };
}

/** Removes unpacked versions other than `keep` (the running one and the one to fall back to). */
async function prune(paths: AgentHomePaths, keep: string[], log: Logger): Promise<void> {
  for (const entry of await readdir(paths.versions).catch(() => [] as string[])) {
    if (keep.includes(entry)) continue;
    await rm(join(paths.versions, entry), { recursive: true, force: true }).catch((error: unknown) =>
      log.warn({ err: error, version: entry }, 'could not remove an old agent version'),
    );
  }
}
