/**
 * The two downloads of a bundle, each prepared once and kept in the cache, keyed by what determines
 * it: the board's Node.js binary (npm package `node-linux-<arch>@<version>`), and the agent's
 * production dependencies for the board (npm ci of the lockfile with --cpu/--os, then pruned).
 */
import { createHash } from 'node:crypto';
import { access, copyFile, cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { extract } from 'tar';
import type { BundlePlan, PruneRule } from './plan.js';
import { runNpm } from './npm.js';

const exists = (path: string) => access(path).then(() => true, () => false);

/** Moves a finished directory into the cache; another builder that won the race is fine. */
async function publish(tmp: string, dir: string): Promise<void> {
  await writeFile(join(tmp, '.complete'), `${new Date().toISOString()}\n`);
  await rename(tmp, dir).catch(async (error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
    await rm(tmp, { recursive: true, force: true }); // someone else prepared the same key meanwhile
  });
}

/** The unpacked Node.js package for the board: `<dir>/bin/node`. */
export async function nodeRuntime(plan: BundlePlan, cacheDir: string, log: (line: string) => void): Promise<string> {
  const dir = join(cacheDir, 'node', `${plan.node.package}-${plan.node.version}`);
  if (await exists(join(dir, '.complete'))) return dir;
  await mkdir(dirname(dir), { recursive: true });
  const tmp = await mkdtemp(`${dir}.tmp-`);
  try {
    log(`downloading ${plan.node.package}@${plan.node.version} (npm pack)`);
    const packed = JSON.parse(await runNpm(['pack', `${plan.node.package}@${plan.node.version}`, '--json', '--pack-destination', tmp], tmp)) as { filename: string }[];
    const tarball = join(tmp, packed[0]!.filename);
    await extract({ file: tarball, cwd: tmp, strip: 1 });
    await rm(tarball);
    if (!(await exists(join(tmp, 'bin', 'node')))) throw new Error(`${plan.node.package}@${plan.node.version} has no bin/node`);
    await publish(tmp, dir);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    throw error;
  }
  return dir;
}

/** Workspace package.json files the lockfile needs to exist for `npm ci`. */
async function workspaceManifests(repoRoot: string): Promise<string[]> {
  const root = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { workspaces?: string[] };
  return ['package.json', 'package-lock.json', ...(root.workspaces ?? []).map((w) => join(w, 'package.json'))];
}

/**
 * `npm ci --omit=dev` of the device agent's dependencies for the board's platform, pruned: a tree with
 * `node_modules/` (hoisted) and `device-agent/node_modules/` (what npm nested there). Cached by the
 * lockfile, the workspaces' package.json files, the platform and the prune rules.
 */
export async function productionDependencies(plan: BundlePlan, repoRoot: string, cacheDir: string, log: (line: string) => void): Promise<string> {
  const files = await workspaceManifests(repoRoot);
  const hash = createHash('sha256').update(JSON.stringify({ npm: plan.npm, prune: plan.prune }));
  for (const f of files) hash.update(f).update(await readFile(join(repoRoot, f)));
  const dir = join(cacheDir, 'agent-deps', `${plan.arch}-${hash.digest('hex').slice(0, 16)}`);
  if (await exists(join(dir, '.complete'))) return dir;
  await mkdir(dirname(dir), { recursive: true });
  const tmp = await mkdtemp(`${dir}.tmp-`);
  try {
    for (const f of [...files, '.npmrc']) {
      if (!(await exists(join(repoRoot, f)))) continue;
      await mkdir(dirname(join(tmp, f)), { recursive: true });
      await copyFile(join(repoRoot, f), join(tmp, f));
    }
    log(`installing production dependencies for linux/${plan.npm.cpu} (npm ci)`);
    await runNpm(
      ['ci', '--omit=dev', '--workspace', 'device-agent', '--include-workspace-root=false', '--ignore-scripts', `--cpu=${plan.npm.cpu}`, `--os=${plan.npm.os}`, '--no-audit', '--no-fund', '--prefer-offline'],
      tmp,
      { ONNXRUNTIME_NODE_INSTALL: 'skip' },
    );
    for (const rule of plan.prune) await prune(join(tmp, 'node_modules'), rule);
    for (const f of files) await rm(join(tmp, f), { force: true });
    await publish(tmp, dir);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    throw error;
  }
  return dir;
}

async function prune(modules: string, rule: PruneRule): Promise<void> {
  if ('remove' in rule) {
    await rm(join(modules, rule.remove), { recursive: true, force: true });
    return;
  }
  const dir = join(modules, rule.keepOnly);
  for (const entry of await readdir(dir).catch(() => [] as string[])) {
    if (!rule.names.includes(entry)) await rm(join(dir, entry), { recursive: true, force: true });
  }
}

/** Copies a tree (cp -r, links kept as links). */
export function copyTree(from: string, to: string, filter?: (source: string) => boolean): Promise<void> {
  return cp(from, to, { recursive: true, verbatimSymlinks: true, ...(filter ? { filter } : {}) });
}
