// The agent bundle builder's public API: build one bundle, or plan what it holds.
export { buildAgentBundle } from './build.js';
export type { AgentBundle, BuildAgentBundleOptions } from './build.js';
export { planBundle, BUNDLE_TARGETS, AGENT_ARCHES } from './plan.js';
export type { AgentArch, BundlePlan, BundleTarget, PruneRule } from './plan.js';
export { defaultCacheDir } from './npm.js';
export { BOARDS, boardRoot, boardsCacheDir, checkEmulation, killBoardProcess, pristineRoot, runInBoard, spawnInBoard } from './boards.js';
export type { BoardArch, BoardResult, BoardRoot } from './boards.js';
