/**
 * Installing an agent bundle that arrived through a signed transfer (manifest kind 'agent'): the
 * transfer receiver has already checked the signature, target, expiry, anti-rollback rule, length and
 * sha256 of every chunk and of the whole file. Here:
 *
 *   1. the manifest is for this board's architecture and this device is installed from a bundle;
 *   2. the tarball is unpacked beside the running version (versions/.incoming-*), bounded in size;
 *   3. its bundle.json must name the architecture and version the signed manifest names, and the
 *      node binary and the agent must be there;
 *   4. it is moved to versions/<version>, the trial is written for the launcher (state/trial), the
 *      record for the status (state/update.json), the highest accepted manifest version (never lowered
 *      by a rollback), a rollback's sequence number (state/rollback-seq: used up before the switch, so
 *      the same rollback manifest is refused as `replayed` afterwards), and `current` is switched in
 *      one rename.
 *
 * The caller then restarts the agent (exit 75): the launcher starts the new version and falls back by
 * itself if it does not report healthy in time. Any failure before the switch leaves everything as it
 * was (the unpacked copy is removed).
 */
import { randomBytes } from 'node:crypto';
import { access, mkdir, readFile, rename, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { extract } from 'tar';
import { z } from 'zod';
import { AGENT_ARCHES, FleetError, agentArchOf, isRollbackBelow } from '@edgefleet/protocol';
import type { AgentUpdateState, Manifest } from '@edgefleet/protocol';
import { agentHomePaths, currentVersion, keyValues, readKeyValues, switchCurrent, syncDir, writeAtomic } from './home.js';
import type { AgentHomePaths } from './home.js';

/** What every bundle carries at its root (written by the bundle builder). */
export const BundleJsonSchema = z.object({
  format: z.literal(1),
  name: z.literal('edgefleet-agent'),
  version: z.string(),
  arch: z.enum(AGENT_ARCHES),
  node: z.string(),
  runtime: z.string(),
});
export type BundleJson = z.infer<typeof BundleJsonSchema>;

/** The agent's entry point inside a bundle. */
export const BUNDLE_ENTRY = 'app/node_modules/@edgefleet/device-agent/dist/bin/deviceAgent.js';

/** Unpacked bundles larger than this are refused (a tarball that inflates without end). */
const MAX_UNPACKED_BYTES = 1024 * 1024 * 1024;

export interface InstallContext {
  agentHome: string;
  /** The version running now (its package version). */
  runningVersion: string;
  /** Node.js `process.arch` of this device. */
  arch?: string;
  /** The highest agent-manifest version accepted before this one (kept when this one is lower: a rollback). */
  highestAccepted?: number;
  now?: () => number;
}

export interface InstalledBundle {
  from: string;
  to: string;
  record: AgentUpdateState;
}

/** Verifies, unpacks, stages and switches to an agent bundle; see the file comment. */
export async function installAgentBundle(stagedFile: string, manifest: Manifest, ctx: InstallContext): Promise<InstalledBundle> {
  const paths = agentHomePaths(ctx.agentHome);
  const bundle = checkManifest(manifest, ctx.arch ?? process.arch);
  const running = (await currentVersion(paths)) ?? ctx.runningVersion;
  if (bundle.version === running) {
    throw new FleetError('conflict', `agent ${bundle.version} is the version running on this device; a new build needs a new version`);
  }
  if (await readKeyValues(paths.trial)) {
    throw new FleetError('conflict', 'an agent update is still on trial on this device; wait until it reports healthy or is rolled back');
  }
  await mkdir(paths.versions, { recursive: true });
  await mkdir(paths.state, { recursive: true, mode: 0o700 });
  const incoming = join(paths.versions, `.incoming-${randomBytes(6).toString('hex')}`);
  try {
    await unpack(stagedFile, incoming);
    await checkUnpacked(incoming, bundle);
    const target = join(paths.versions, bundle.version);
    await rm(target, { recursive: true, force: true }); // an earlier, failed try of the same version
    await rename(incoming, target);
    await syncDir(paths.versions);
  } catch (error) {
    await rm(incoming, { recursive: true, force: true });
    throw error;
  }
  return switchToTrial(paths, running, bundle, manifest, { highestAccepted: ctx.highestAccepted ?? 0, at: ctx.now?.() ?? Date.now() });
}

/** The bundle this manifest announces, if this board can run it (also the offer-time check). */
export function checkManifest(manifest: Manifest, nodeArch: string = process.arch): NonNullable<Manifest['agent']> {
  if (manifest.kind !== 'agent' || !manifest.agent) {
    throw new FleetError('invalid_params', `${manifest.name}@${manifest.version} is a ${manifest.kind} manifest, not an agent bundle`);
  }
  const here = agentArchOf(nodeArch);
  if (manifest.agent.arch !== here) {
    throw new FleetError(
      'wrong_target',
      `the agent bundle ${manifest.agent.version} is built for ${manifest.agent.arch}, but this device is ${here ?? nodeArch}; send the ${here ?? nodeArch} bundle`,
    );
  }
  return manifest.agent;
}

async function unpack(file: string, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  let total = 0;
  let tooLarge = false;
  try {
    await extract({
      file,
      cwd: dir,
      strip: 1, // the bundle's top directory, edgefleet-agent-<version>-<arch>/
      strict: true,
      // no absolute paths, no "..", no links leading out: node-tar's defaults (preservePaths false)
      filter: (_path, entry) => {
        total += (entry as { size?: number }).size ?? 0;
        if (total > MAX_UNPACKED_BYTES) tooLarge = true;
        return !tooLarge;
      },
    });
  } catch (error) {
    throw new FleetError('invalid_params', `the agent bundle is not a readable tar.gz (${(error as Error).message}); build it again`);
  }
  if (tooLarge) throw new FleetError('too_long', `the agent bundle unpacks to more than ${MAX_UNPACKED_BYTES / 2 ** 20} MiB; refused`);
}

async function checkUnpacked(dir: string, expected: NonNullable<Manifest['agent']>): Promise<BundleJson> {
  let bundle: BundleJson;
  try {
    bundle = BundleJsonSchema.parse(JSON.parse(await readFile(join(dir, 'bundle.json'), 'utf8')));
  } catch (error) {
    throw new FleetError('invalid_params', `the agent bundle has no valid bundle.json (${(error as Error).message.split('\n')[0]}); it is not an edgefleet agent bundle`);
  }
  if (bundle.arch !== expected.arch || bundle.version !== expected.version) {
    throw new FleetError(
      'invalid_params',
      `the bundle is agent ${bundle.version} for ${bundle.arch}, but its signed manifest names ${expected.version} for ${expected.arch}; sign the manifest for the bundle you send`,
    );
  }
  for (const part of ['node/bin/node', BUNDLE_ENTRY]) {
    await access(join(dir, part)).catch(() => {
      throw new FleetError('invalid_params', `the agent bundle ${bundle.version} lacks ${part}; build it again`);
    });
  }
  return bundle;
}

async function switchToTrial(
  paths: AgentHomePaths,
  from: string,
  bundle: NonNullable<Manifest['agent']>,
  manifest: Manifest,
  opts: { highestAccepted: number; at: number },
): Promise<InstalledBundle> {
  const record: AgentUpdateState = { state: 'trial', from, to: bundle.version, at: opts.at };
  // a rollback below the highest accepted uses up its sequence number first (the transfer's acceptance refused a used one)
  if (isRollbackBelow(manifest, opts.highestAccepted) && manifest.rollbackSeq !== undefined) await writeAtomic(paths.rollbackSeq, `${manifest.rollbackSeq}\n`);
  await unlink(paths.healthy).catch(() => undefined); // a marker from an earlier update must not pass this one
  await writeAtomic(paths.record, JSON.stringify(record));
  await writeAtomic(paths.trial, keyValues({ to: bundle.version, from, deadline_s: bundle.healthDeadlineS, attempts: 0 }));
  await writeAtomic(paths.accepted, `${Math.max(opts.highestAccepted, manifest.version)}\n`);
  await switchCurrent(paths, bundle.version);
  return { from, to: bundle.version, record };
}
