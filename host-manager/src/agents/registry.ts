/**
 * The agent bundle registry: bundles (`hostManager agent bundle|add`) in the content-addressed blob store
 * and an index in the fleet state. What a bundle is (agent version, architecture, Node.js, runtime) is read
 * from its own bundle.json, never taken from the sender's word.
 *
 * Release numbers: every bundle of one agent version shares one, whatever its architecture, and a new agent
 * version gets the next number. That number is the signed manifest's version, which a device keeps as its
 * anti-rollback counter for the agent: a device accepts the next release whichever bundle it takes.
 *
 * So release numbers must follow the agent versions (semantic versions, compared as such): a new agent
 * version is registered only above every version registered (it gets the highest number), and a version's
 * bundle for another architecture only when that architecture has no higher version registered. An older
 * version registered later would otherwise get a higher release than a newer one, and devices that took
 * it would refuse the newer one as a downgrade. Such a registration is refused, naming the highest version.
 */
import { rm, stat } from 'node:fs/promises';
import { list } from 'tar';
import semver from 'semver';
import { BundleJsonSchema } from '@edgefleet/device-agent';
import type { BundleJson } from '@edgefleet/device-agent';
import { AgentBundleInfoSchema, FleetError, describe } from '@edgefleet/protocol';
import type { AgentArch } from '@edgefleet/protocol';
import { hashFile } from '@edgefleet/node-io';
import { DEFAULT_CHUNK_SIZE, hashChunks, writeChunkTable } from '../delivery/chunk-table.js';
import { blobStore } from '../models/blobs.js';
import { serialQueue } from '../models/versions.js';
import type { FleetRepository } from '../state/repository.js';
import type { AgentBundleRecord } from '../state/schema.js';

/** The manifest name of every agent bundle (and the `model` of agent rollouts). */
export const AGENT_NAME = 'edgefleet-agent';
/** bundle.json is small; anything larger is not one. */
const MAX_BUNDLE_JSON = 64 * 1024;

export type AddedAgentBundle = AgentBundleRecord & { /** False when these bytes were registered already. */ created: boolean };

export interface AgentRegistry {
  /** Registers a bundle file the registry may consume: it is moved into the blob store, or removed. */
  addBundle(file: string, opts?: { healthDeadlineS?: number }): Promise<AddedAgentBundle>;
  list(): AgentBundleRecord[];
  /** The release of an agent version (its number), or not_found with what is registered. */
  requireRelease(agentVersion: string): number;
  /** The bundles of one release (one per architecture). */
  release(version: number): AgentBundleRecord[];
  /** The release number of the bundles of this agent version, if any. */
  releaseOf(agentVersion: string): number | undefined;
  blobPath(record: Pick<AgentBundleRecord, 'blob' | 'sha256'>): string;
}

export function createAgentRegistry(state: FleetRepository, dataDir: string): AgentRegistry {
  const blobs = blobStore(dataDir);
  const serial = serialQueue();
  const releaseOf = (agentVersion: string): number | undefined => state.agentBundles().find((b) => b.agentVersion === agentVersion)?.version;
  return {
    addBundle: (file, opts = {}) =>
      serial(async () => {
        try {
          return await addBundle(state, file, opts, async (sha256) => {
            const stored = await blobs.adopt(file, sha256);
            return { stored, blob: blobs.relativePath(sha256) };
          });
        } finally {
          await rm(file, { force: true }); // moved into the store, or refused: the upload is not kept either way
        }
      }),
    list: () => [...state.agentBundles()],
    releaseOf,
    requireRelease(agentVersion) {
      const found = releaseOf(agentVersion);
      if (found !== undefined) return found;
      const known = [...new Set(state.agentBundles().map((b) => b.agentVersion))];
      throw new FleetError(
        'not_found',
        `no bundle of agent ${agentVersion} in the registry${known.length ? ` (registered: ${known.join(', ')})` : ''}; build one with \`hostManager agent bundle --arch <arch> --version ${agentVersion}\``,
      );
    },
    release: (version) => state.agentBundles().filter((b) => b.version === version),
    blobPath: (record) => blobs.path(record),
  };
}

/**
 * bundle.json at the bundle's top directory, read from the tarball without unpacking it. `what` names the
 * file in errors (an upload's temporary path means nothing to the sender).
 */
export async function readBundleJson(file: string, what = 'the bundle'): Promise<BundleJson> {
  const found: Buffer[] = [];
  let size = 0;
  try {
    await list({
      file,
      strict: true,
      filter: (path) => /^[^/]+\/bundle\.json$/.test(path),
      onReadEntry: (entry) => {
        entry.on('data', (d: Buffer) => {
          size += d.length;
          if (size <= MAX_BUNDLE_JSON) found.push(d);
        });
      },
    });
  } catch (error) {
    throw new FleetError('invalid_params', `${what} is not a readable tar.gz (${(error as Error).message}); give the file \`hostManager agent bundle\` wrote`);
  }
  if (found.length === 0) throw new FleetError('invalid_params', `${what} has no <top>/bundle.json: it is not an edgefleet agent bundle (build one with \`hostManager agent bundle\`)`);
  const parsed = BundleJsonSchema.safeParse(safeJson(Buffer.concat(found).toString('utf8')));
  if (!parsed.success) throw new FleetError('invalid_params', `the bundle's bundle.json does not validate: ${describe(parsed.error)}`);
  const version = AgentBundleInfoSchema.shape.version.safeParse(parsed.data.version);
  if (!version.success) throw new FleetError('invalid_params', `the bundle's agent version "${parsed.data.version}" cannot be signed: ${describe(version.error)}`);
  return parsed.data;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined; // the schema then says it is not an object
  }
}

async function addBundle(
  state: FleetRepository,
  file: string,
  opts: { healthDeadlineS?: number },
  adopt: (sha256: string) => Promise<{ stored: string; blob: string }>,
): Promise<AddedAgentBundle> {
  const deadline = AgentBundleInfoSchema.shape.healthDeadlineS.safeParse(opts.healthDeadlineS ?? 180);
  if (!deadline.success) throw new FleetError('invalid_params', `health deadline: ${describe(deadline.error)} (seconds, 5 to 3600)`);
  const json = await readBundleJson(file);
  const sha256 = await hashFile(file);
  const { size: length } = await stat(file);
  const bundles = state.agentBundles();
  const same = bundles.find((b) => b.agentVersion === json.version && b.arch === json.arch);
  if (same && same.sha256 === sha256) return { ...same, created: false };
  if (same) {
    throw new FleetError(
      'conflict',
      `agent ${json.version} for ${json.arch} is registered already with other bytes (sha256 ${same.sha256.slice(0, 12)}…); a new build needs a new version: \`hostManager agent bundle --arch ${json.arch} --version <next>\``,
    );
  }
  checkOrder(bundles, json);
  const { stored, blob } = await adopt(sha256);
  const table = await hashChunks(stored, DEFAULT_CHUNK_SIZE);
  await writeChunkTable(stored, { sha256, length, size: DEFAULT_CHUNK_SIZE, chunks: table.chunks });
  const version = bundles.find((b) => b.agentVersion === json.version)?.version ?? state.highestAgentReleaseEver() + 1;
  const record: AgentBundleRecord = {
    name: AGENT_NAME,
    version,
    sha256,
    length,
    addedAt: new Date().toISOString(),
    blob,
    agentVersion: json.version,
    arch: json.arch as AgentArch,
    node: json.node,
    runtime: json.runtime,
    healthDeadlineS: deadline.data,
  };
  state.setAgentBundles([...bundles, record]);
  state.recordAgentReleaseGiven(version);
  await state.write();
  return { ...record, created: true };
}

/** Refuses a bundle whose agent version would break the order of release numbers (see the file comment). */
export function checkOrder(bundles: readonly AgentBundleRecord[], json: Pick<BundleJson, 'version' | 'arch'>): void {
  if (!semver.valid(json.version)) {
    throw new FleetError('invalid_params', `the bundle's agent version "${json.version}" is not a semantic version (e.g. 0.2.0): release numbers follow the versions, so they must be comparable; build it with \`hostManager agent bundle --version <x.y.z>\``);
  }
  const highestOf = (list: readonly AgentBundleRecord[]): string | undefined => list.map((b) => b.agentVersion).filter((v) => semver.valid(v)).sort(semver.rcompare)[0];
  const sameArch = highestOf(bundles.filter((b) => b.arch === json.arch));
  if (sameArch && semver.lt(json.version, sameArch)) {
    throw new FleetError(
      'conflict',
      `agent ${json.version} for ${json.arch} is below ${sameArch}, the highest registered for ${json.arch}: release numbers follow versions, so an older version cannot be registered after a newer one (roll back with \`hostManager rollback\` of the rollout, or build ${json.arch} as a version above ${sameArch})`,
    );
  }
  if (bundles.some((b) => b.agentVersion === json.version)) return; // another architecture of a version registered: its release number
  const highest = highestOf(bundles);
  if (highest && semver.lt(json.version, highest)) {
    throw new FleetError(
      'conflict',
      `agent ${json.version} is below ${highest}, the highest version registered: a new version gets the next release number, which would put it above ${highest}; build it as a version above ${highest}, or as ${highest} itself for ${json.arch}`,
    );
  }
}
