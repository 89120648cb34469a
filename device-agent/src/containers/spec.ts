/**
 * A container spec from a signed manifest → the engine's create options. Pure.
 *
 * Host paths never come from the manifest: a mount names a model (its active version's directory in the
 * agent's store, read-only) or a volume of the app's own under <dataDir>/containers/volumes/<app>/, and both
 * resolve inside the data directory or are refused. Published ports bind to loopback unless the spec says
 * otherwise; the port of an HTTP health probe or of an inference server is published on 127.0.0.1 with a
 * port the engine picks, so the agent can reach it and a second version can start beside the first.
 */
import { isAbsolute, join, relative, resolve } from 'node:path';
import type Docker from 'dockerode';
import { FleetError } from '@edgefleet/protocol';
import type { ContainerSpec } from '@edgefleet/protocol';
import { ownedLabels } from './labels.js';
import type { ContainerRole } from './labels.js';

export interface Release {
  app: string;
  version: number;
  /** Image ID (sha256:…). */
  image: string;
  spec: ContainerSpec;
}

export interface BindMount {
  source: string;
  target: string;
  readOnly: boolean;
}

export interface CreateContext {
  device: string;
  dataDir: string;
  role: ContainerRole;
  name: string;
  release: Release;
  /** The host directory of a model's active version, if the model is installed and active. */
  modelDir: (model: string) => string | undefined;
  /** Mounts and environment the agent adds (an inference container's model). */
  extraMounts?: BindMount[];
  extraEnv?: Record<string, string>;
}

/** A model version's directory in the agent's model store (models/store.ts: <dataDir>/models/<name>/<version>/). */
export function modelVersionDir(dataDir: string, model: string, version: number): string {
  return join(dataDir, 'models', model, String(version));
}

/** Where the app's named volumes live. */
export function volumeDir(dataDir: string, app: string, volume: string): string {
  return join(dataDir, 'containers', 'volumes', app, volume);
}

/** Refuses a host path that is not inside the data directory (names are validated already; this is the last word). */
export function insideDataDir(dataDir: string, path: string): string {
  const root = resolve(dataDir);
  const full = resolve(path);
  const rel = relative(root, full);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
    throw new FleetError('invalid_params', `mount source ${path} is outside the agent's data directory ${root}; only models and app volumes can be mounted`);
  }
  return full;
}

export function resolveMounts(ctx: CreateContext): BindMount[] {
  const { spec, app } = ctx.release;
  const mounts: BindMount[] = spec.mounts.map((m) => {
    if (m.kind === 'volume') return { source: insideDataDir(ctx.dataDir, volumeDir(ctx.dataDir, app, m.name)), target: m.target, readOnly: m.readOnly };
    const dir = ctx.modelDir(m.model);
    if (!dir) throw new FleetError('not_found', `${app}@${ctx.release.version} mounts model "${m.model}", which has no active version on this device; deploy the model first`);
    return { source: insideDataDir(ctx.dataDir, dir), target: m.target, readOnly: true };
  });
  for (const extra of ctx.extraMounts ?? []) mounts.push({ ...extra, source: insideDataDir(ctx.dataDir, extra.source) });
  const targets = new Set<string>();
  for (const m of mounts) {
    if (targets.has(m.target)) throw new FleetError('invalid_params', `${app}@${ctx.release.version} mounts two things at ${m.target}`);
    targets.add(m.target);
  }
  return mounts;
}

/** The container ports the agent itself must reach (health probe, inference), published on loopback if the spec does not. */
function agentPorts(spec: ContainerSpec): number[] {
  const ports: number[] = [];
  if (spec.health.kind === 'http') ports.push(spec.health.port);
  if (spec.inference) ports.push(spec.inference.port);
  return ports;
}

function portBindings(spec: ContainerSpec): { exposed: Record<string, object>; bindings: Record<string, { HostIp: string; HostPort: string }[]> } {
  const exposed: Record<string, object> = {};
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const p of spec.ports) {
    const key = `${p.container}/${p.protocol}`;
    exposed[key] = {};
    (bindings[key] ??= []).push({ HostIp: p.hostIp, HostPort: p.host === 0 ? '' : String(p.host) });
  }
  for (const port of agentPorts(spec)) {
    const key = `${port}/tcp`;
    if (bindings[key]?.some((b) => b.HostIp === '127.0.0.1' || b.HostIp === '0.0.0.0')) continue;
    exposed[key] = {};
    (bindings[key] ??= []).push({ HostIp: '127.0.0.1', HostPort: '' });
  }
  return { exposed, bindings };
}

const NS_PER_MS = 1_000_000;

function healthcheck(spec: ContainerSpec): Docker.HealthConfig | undefined {
  const h = spec.health;
  if (h.kind !== 'docker') return undefined;
  return {
    Test: ['CMD', ...h.test],
    Interval: h.intervalMs * NS_PER_MS,
    Timeout: h.timeoutMs * NS_PER_MS,
    Retries: h.retries,
    StartPeriod: h.startPeriodMs * NS_PER_MS,
  };
}

export function createOptions(ctx: CreateContext): Docker.ContainerCreateOptions {
  const { spec, app, version, image } = ctx.release;
  const { exposed, bindings } = portBindings(spec);
  const env = { ...spec.env, ...ctx.extraEnv };
  const health = healthcheck(spec);
  return {
    name: ctx.name,
    Image: image,
    ...(spec.command ? { Cmd: spec.command } : {}),
    ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}),
    Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    Labels: ownedLabels(ctx.device, app, version, ctx.role),
    ExposedPorts: exposed,
    ...(health ? { Healthcheck: health } : {}),
    StopTimeout: 10,
    HostConfig: {
      PortBindings: bindings,
      Mounts: resolveMounts(ctx).map((m) => ({ Type: 'bind' as const, Source: m.source, Target: m.target, ReadOnly: m.readOnly })),
      // an inference container lives and dies with the agent's model service, which restarts it itself
      RestartPolicy: { Name: ctx.role === 'inference' || spec.restart === 'no' ? '' : spec.restart },
      ...(spec.resources.memoryBytes ? { Memory: spec.resources.memoryBytes } : {}),
      ...(spec.resources.cpus ? { NanoCpus: Math.round(spec.resources.cpus * 1e9) } : {}),
      SecurityOpt: ['no-new-privileges'],
      // logs on an SD card stay bounded
      LogConfig: { Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '3' } },
    },
  };
}

/** Fixed host ports a spec binds ("8080/tcp"; any address counts, since 0.0.0.0 and 127.0.0.1 collide): two containers binding one cannot run at once. */
export function fixedHostPorts(spec: ContainerSpec): string[] {
  return spec.ports.filter((p) => p.host !== 0).map((p) => `${p.host}/${p.protocol}`);
}
