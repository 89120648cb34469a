/**
 * Rollout targets: a device, a group, the whole fleet, or a selector over labels and
 * reported facts (`arch=arm64,site=plant-1`, as kubectl's label selectors), as typed and
 * as chosen from the fleet.
 */
import { FleetError, isValidName } from '@edgefleet/protocol';
import { LabelKeySchema, LabelValueSchema } from '../state/schema.js';
import type { RolloutTarget, SelectorTerm } from '../state/schema.js';

/**
 * Facts a device reports about itself, usable in selectors beside its labels. A label may
 * not take one of these names (the device's own report would contradict it).
 */
export const FACT_KEYS = ['id', 'group', 'arch', 'platform', 'runtime', 'hostname'] as const;

/** `pi-1`, `group:lab`, `all`, `arch=arm64,site!=plant-2` → a target. */
export function parseTarget(text: string): RolloutTarget {
  if (text === 'all') return { kind: 'all' };
  if (text.startsWith('group:')) return { kind: 'group', name: text.slice('group:'.length) };
  if (text.includes('=')) return { kind: 'selector', match: parseSelector(text) };
  return { kind: 'device', name: text };
}

/** `k=v,k2!=v2` (also `k==v`) → its terms; a bad term is `invalid_params` with the term and the rule. */
export function parseSelector(text: string): SelectorTerm[] {
  const terms = text.split(',').map((t) => t.trim()).filter((t) => t !== '');
  if (terms.length === 0) throw new FleetError('invalid_params', 'an empty selector; write KEY=VALUE[,KEY!=VALUE...], e.g. arch=arm64,site=plant-1');
  return terms.map((term) => {
    const m = /^([^=!]+?)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (!m) throw new FleetError('invalid_params', `"${term}" is not a selector term; write KEY=VALUE or KEY!=VALUE`);
    const key = m[1]!;
    const value = m[3]!;
    if (!LabelKeySchema.safeParse(key).success) throw new FleetError('invalid_params', `"${key}" in "${term}" is not a label key: 1-63 letters, digits, ".", "_", "/" or "-"`);
    if (!LabelValueSchema.safeParse(value).success) throw new FleetError('invalid_params', `"${value}" in "${term}" is not a label value: up to 63 letters, digits, ".", "_" or "-"`);
    return { key, op: m[2] === '!=' ? '!=' : '=', value };
  });
}

export function formatSelector(terms: readonly SelectorTerm[]): string {
  return terms.map((t) => `${t.key}${t.op}${t.value}`).join(',');
}

export function formatTarget(target: RolloutTarget): string {
  switch (target.kind) {
    case 'all':
      return 'all';
    case 'group':
      return `group:${target.name}`;
    case 'selector':
      return formatSelector(target.match);
    case 'device':
      return target.name;
  }
}

/** Targets whose devices are chosen again as each wave starts (a device cannot join a one-device target). */
export function isDynamicTarget(target: RolloutTarget): boolean {
  return target.kind !== 'device';
}

export interface PlanDevice {
  id: string;
  groups: readonly string[];
  online: boolean;
  labels?: Readonly<Record<string, string>> | undefined;
  /** What the device reported (arch, platform, hostname; runtime where the agent reports one). */
  info?: { arch?: string; platform?: string; hostname?: string; runtime?: unknown } | null | undefined;
}

/** A device's labels and facts as one map (facts win: a label cannot take a fact's name). */
export function deviceFacts(d: PlanDevice): Record<string, string> {
  const facts: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [k, v] of Object.entries(d.labels ?? {})) facts[k] = v;
  facts['id'] = d.id;
  const info = d.info;
  if (info?.arch) facts['arch'] = info.arch;
  if (info?.platform) facts['platform'] = info.platform;
  if (info?.hostname) facts['hostname'] = info.hostname;
  const runtime = runtimeName(info?.runtime);
  if (runtime) facts['runtime'] = runtime;
  return facts;
}

/** The runtime a device reports, as a name: a string, or an object's `kind`/`name` (the agent's report may carry details). */
function runtimeName(runtime: unknown): string | undefined {
  if (typeof runtime === 'string') return runtime;
  if (runtime && typeof runtime === 'object') {
    const r = runtime as { kind?: unknown; name?: unknown };
    if (typeof r.kind === 'string') return r.kind;
    if (typeof r.name === 'string') return r.name;
  }
  return undefined;
}

/** Whether a device matches every term (`group=lab` asks for membership; an absent fact is never equal). */
export function matchesSelector(d: PlanDevice, terms: readonly SelectorTerm[]): boolean {
  const facts = deviceFacts(d);
  return terms.every((t) => {
    const equal = t.key === 'group' ? d.groups.includes(t.value) : Object.hasOwn(facts, t.key) && facts[t.key] === t.value;
    return t.op === '=' ? equal : !equal;
  });
}

export function targetDevices<D extends PlanDevice>(devices: readonly D[], target: RolloutTarget): D[] {
  const chosen = devices.filter((d) => {
    switch (target.kind) {
      case 'all':
        return true;
      case 'group':
        return d.groups.includes(target.name);
      case 'selector':
        return matchesSelector(d, target.match);
      case 'device':
        return d.id === target.name;
    }
  });
  return [...chosen].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** When a device id names no device but a group of that name exists, what the operator probably meant. */
export function targetHint(text: string, groups: readonly string[]): string | undefined {
  if (!isValidName(text) || !groups.includes(text)) return undefined;
  return `to target the group, write group:${text}`;
}

/** Every group name a device belongs to or that was recorded. */
export function groupNames(state: { groups(): readonly { name: string }[]; devices(): readonly { groups: readonly string[] }[] }): string[] {
  return [...new Set([...state.groups().map((g) => g.name), ...state.devices().flatMap((d) => d.groups)])];
}
