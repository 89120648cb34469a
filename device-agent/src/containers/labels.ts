/**
 * What marks a container or image as the fleet's. The agent lists, replaces, stops and removes only
 * containers that carry `io.edgefleet.owned=true` and this device's id; every other container on the
 * engine (the operator's own, another agent's) is invisible to it.
 */

export const LABELS = {
  owned: 'io.edgefleet.owned',
  device: 'io.edgefleet.device',
  app: 'io.edgefleet.app',
  version: 'io.edgefleet.version',
  role: 'io.edgefleet.role',
} as const;

export type ContainerRole = 'app' | 'inference';

/** The engine-side filter for this device's containers (docker's `label=` filters are ANDed). */
export function ownedFilter(device: string, app?: string): { label: string[] } {
  const label = [`${LABELS.owned}=true`, `${LABELS.device}=${device}`];
  if (app !== undefined) label.push(`${LABELS.app}=${app}`);
  return { label };
}

export function ownedLabels(device: string, app: string, version: number, role: ContainerRole): Record<string, string> {
  return {
    [LABELS.owned]: 'true',
    [LABELS.device]: device,
    [LABELS.app]: app,
    [LABELS.version]: String(version),
    [LABELS.role]: role,
  };
}

/** Checked again on every container the engine returns, so a filter the engine ignored can never widen what we touch. */
export function isOwned(labels: Record<string, string> | undefined, device: string): boolean {
  return labels?.[LABELS.owned] === 'true' && labels[LABELS.device] === device;
}

/** Container names: `edgefleet.<device>.<app>.v<version>` (the names are NAME_PATTERN words, which Docker accepts). */
export function containerName(device: string, app: string, version: number, role: ContainerRole): string {
  return role === 'app' ? `edgefleet.${device}.${app}.v${version}` : `edgefleet.${device}.model.${app}.v${version}`;
}

/**
 * The tag the agent gives each image it installs: `edgefleet/<device>:<app>.v<version>`. A tagged image is
 * never "dangling", so `docker image prune` leaves it; the state file keeps the image ID, which is what counts.
 * (Repository names must be lowercase; tags keep the app name as it is.)
 */
export function imageTag(device: string, app: string, version: number): { repo: string; tag: string } {
  const repo = device.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '') || 'device';
  return { repo: `edgefleet/${repo}`, tag: `${app}.v${version}` };
}
