/**
 * Test fixture: emulated boards (arm64, armv7) under qemu-user with a cached Debian root each. The
 * helpers live with the bundle builder (packages/agent-bundle/src/boards.ts) so the footprint
 * benchmark runs bundles on the same boards.
 */
export { BOARDS, boardRoot, boardsCacheDir, checkEmulation, killBoardProcess, pristineRoot, runInBoard, spawnInBoard } from '@edgefleet/agent-bundle';
export type { BoardArch, BoardResult, BoardRoot } from '@edgefleet/agent-bundle';
