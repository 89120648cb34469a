/**
 * Node's names for the board's CPU against Docker's (Go's GOARCH and the arm variant), and whether an
 * image built for one platform runs on this board.
 */
import type { ImagePlatform } from '@edgefleet/protocol';

export interface BoardPlatform {
  architecture: string;
  /** Set for 32-bit arm (v6, v7), where it decides what runs. */
  variant: string | undefined;
}

const NODE_TO_DOCKER: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

/** The board as Docker names it: process.arch, and for arm the version Node was built for (armv7l → v7). */
export function boardPlatform(nodeArch: string = process.arch, armVersion: unknown = (process.config.variables as Record<string, unknown>).arm_version): BoardPlatform {
  const architecture = NODE_TO_DOCKER[nodeArch] ?? nodeArch;
  const v = armVersion === undefined || armVersion === null ? undefined : String(armVersion);
  return { architecture, variant: architecture === 'arm' && v && /^\d+$/.test(v) ? `v${v}` : undefined };
}

function variantNumber(variant: string | undefined): number | undefined {
  const m = /^v(\d+)$/.exec(variant ?? '');
  return m ? Number(m[1]) : undefined;
}

/**
 * Undefined when an image of this platform runs on the board, else the reason it does not.
 * arm64 images run on any arm64 board (variant v8 or none); a 32-bit arm image runs when its variant is at
 * most the board's (a v6 image runs on a v7 board, not the other way round); an arm image that names no
 * variant is taken as runnable (most are v7 and say nothing).
 */
export function platformMismatch(image: Pick<ImagePlatform, 'architecture' | 'variant'> & { os?: string }, board: BoardPlatform): string | undefined {
  const name = (p: { architecture: string; variant?: string | undefined }) => (p.variant ? `${p.architecture}/${p.variant}` : p.architecture);
  if (image.os !== undefined && image.os !== 'linux') return `the image is for ${image.os}, this device runs linux`;
  if (image.architecture !== board.architecture) {
    return `the image is built for linux/${name(image)}, this device is linux/${name(board)}; build or push the ${name(board)} variant of the image`;
  }
  if (board.architecture === 'arm') {
    const wanted = variantNumber(image.variant);
    const have = variantNumber(board.variant);
    if (wanted !== undefined && have !== undefined && wanted > have) {
      return `the image needs linux/arm/${image.variant}, this device is linux/arm/${board.variant}; build the image for arm/${board.variant}`;
    }
  }
  return undefined;
}
