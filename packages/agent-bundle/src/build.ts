/**
 * Builds the agent bundle: one versioned tarball with everything a board needs to run the agent.
 *
 *   edgefleet-agent-<version>-<arch>/
 *     bundle.json          {format, name, version, arch, node, runtime}
 *     install.sh uninstall.sh launcher lib/install-config.mjs deviceAgent.service README.md
 *     node/bin/node        the official Node.js for the board
 *     app/node_modules/    the agent (@edgefleet/device-agent, built) and its production dependencies,
 *                          with the board's native parts (onnxruntime-node's binary, sharp's libvips)
 *
 * Needs the repository built (`npm run build`) and npm with the registry or a warm cache.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { access, chmod, copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { create } from 'tar';
import { copyTree, nodeRuntime, productionDependencies } from './fetch.js';
import { defaultCacheDir } from './npm.js';
import { planBundle } from './plan.js';
import type { AgentArch, BundlePlan } from './plan.js';

export interface BuildAgentBundleOptions {
  arch: AgentArch | string;
  /** Where the tarball is written. */
  outDir: string;
  /** The bundle's agent version; default: device-agent/package.json's. */
  version?: string;
  /** Node.js version for the board; default: the plan's (20.20.2; 20.11.0 on armv7). */
  nodeVersion?: string;
  /** Downloads and prepared dependency trees; default $EDGEFLEET_CACHE or ~/.cache/edgefleet. */
  cacheDir?: string;
  /** The repository root (built); default: the one this package is in. */
  repoRoot?: string;
  /** gzip level, 1 (fast) to 9 (small); default 6. */
  compression?: number;
  log?: (line: string) => void;
}

export interface AgentBundle {
  file: string;
  name: string;
  version: string;
  arch: AgentArch;
  node: string;
  runtime: BundlePlan['runtime'];
  bytes: number;
  sha256: string;
}

/** The repository this package is in: the nearest directory above it whose package.json has workspaces. */
function repositoryRoot(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && 'workspaces' in (JSON.parse(readFileSync(pkg, 'utf8')) as object)) return dir;
  }
  throw new Error('the agent bundle builder runs from a checkout of the edgefleet repository; give repoRoot');
}
/** Built files a board needs: JavaScript, not maps, declarations or build info. */
const shipped = (source: string) => !/\.(map|d\.ts|tsbuildinfo)$/.test(source) && !source.includes('/dist/test');

export async function buildAgentBundle(opts: BuildAgentBundleOptions): Promise<AgentBundle> {
  const repoRoot = opts.repoRoot ?? repositoryRoot();
  const log = opts.log ?? (() => undefined);
  const agentPkg = JSON.parse(await readFile(join(repoRoot, 'device-agent', 'package.json'), 'utf8')) as { version: string };
  const plan = planBundle({ arch: opts.arch, version: opts.version ?? agentPkg.version, ...(opts.nodeVersion ? { nodeVersion: opts.nodeVersion } : {}) });
  await access(join(repoRoot, 'device-agent', 'dist', 'bin', 'deviceAgent.js')).catch(() => {
    throw new Error(`device-agent is not built in ${repoRoot}: run npm run build first`);
  });
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const node = await nodeRuntime(plan, cacheDir, log);
  const deps = await productionDependencies(plan, repoRoot, cacheDir, log);
  await mkdir(opts.outDir, { recursive: true });
  const staging = await mkdtemp(join(opts.outDir, `.staging-${plan.name}-`));
  try {
    const root = join(staging, plan.name);
    log(`assembling ${plan.name}`);
    await assemble(plan, root, { repoRoot, node, deps });
    const file = join(opts.outDir, plan.file);
    await create({ gzip: { level: opts.compression ?? 6 }, file, cwd: staging, portable: true }, [plan.name]);
    return { file, name: plan.name, version: plan.version, arch: plan.arch, node: plan.node.version, runtime: plan.runtime, bytes: (await stat(file)).size, sha256: await sha256File(file) };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function assemble(plan: BundlePlan, root: string, from: { repoRoot: string; node: string; deps: string }): Promise<void> {
  const agent = join(from.repoRoot, 'device-agent');
  await mkdir(join(root, 'node', 'bin'), { recursive: true });
  await copyFile(join(from.node, 'bin', 'node'), join(root, 'node', 'bin', 'node'));
  await chmod(join(root, 'node', 'bin', 'node'), 0o755);
  for (const doc of ['LICENSE', 'README.md']) await copyFile(join(from.node, doc), join(root, 'node', doc)).catch(() => undefined); // optional files of the package
  const modules = join(root, 'app', 'node_modules');
  await copyTree(join(from.deps, 'node_modules'), modules);
  await writeFile(join(root, 'app', 'package.json'), `${JSON.stringify({ name: 'edgefleet-agent-app', private: true, type: 'module' }, null, 2)}\n`);
  for (const [name, dir] of await agentWorkspaces(from.repoRoot)) {
    const target = join(modules, name);
    await copyTree(join(dir, 'dist'), join(target, 'dist'), shipped);
    const pkg = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as Record<string, unknown>;
    if (name === AGENT_PACKAGE) pkg.version = plan.version; // what the agent reports as its version
    await writeFile(join(target, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  }
  // what npm nested under the workspace (versions that differ from the hoisted ones)
  await copyTree(join(from.deps, 'device-agent', 'node_modules'), join(modules, '@edgefleet', 'device-agent', 'node_modules')).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
  for (const script of ['install.sh', 'uninstall.sh', 'launcher']) {
    await copyFile(join(agent, 'bundle', script), join(root, script));
    await chmod(join(root, script), 0o755);
  }
  await mkdir(join(root, 'lib'));
  await copyFile(join(agent, 'bundle', 'lib', 'install-config.mjs'), join(root, 'lib', 'install-config.mjs'));
  await copyFile(join(agent, 'systemd', 'deviceAgent.service'), join(root, 'deviceAgent.service'));
  await copyFile(join(agent, 'README.md'), join(root, 'README.md'));
  const bundleJson = { format: 1, name: 'edgefleet-agent', version: plan.version, arch: plan.arch, node: plan.node.version, runtime: plan.runtime };
  await writeFile(join(root, 'bundle.json'), `${JSON.stringify(bundleJson, null, 2)}\n`);
}

const AGENT_PACKAGE = '@edgefleet/device-agent';

/** The agent's workspace and every workspace it depends on at run time (name → directory), from the package.json files. */
async function agentWorkspaces(repoRoot: string): Promise<Map<string, string>> {
  const root = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { workspaces?: string[] };
  const dirs = new Map<string, { dir: string; dependencies: string[] }>();
  for (const w of root.workspaces ?? []) {
    const pkg = JSON.parse(await readFile(join(repoRoot, w, 'package.json'), 'utf8')) as { name: string; dependencies?: Record<string, string> };
    dirs.set(pkg.name, { dir: join(repoRoot, w), dependencies: Object.keys(pkg.dependencies ?? {}) });
  }
  const found = new Map<string, string>();
  const visit = (name: string): void => {
    const w = dirs.get(name);
    if (!w || found.has(name)) return;
    found.set(name, w.dir);
    w.dependencies.forEach(visit);
  };
  visit(AGENT_PACKAGE);
  return found;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const part of createReadStream(file)) hash.update(part as Buffer);
  return hash.digest('hex');
}
