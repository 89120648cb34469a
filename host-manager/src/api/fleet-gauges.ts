/**
 * Two gauges of the controller's /metrics that the shipped alert rules need, computed at scrape
 * time from the fleet state (never per device, so their series stay few):
 *
 * - `edgefleet_model_latency_p95_seconds{model}`: the request-weighted p95 of each registry model
 *   over the online devices' latest telemetry interval (models not in the registry are left out);
 * - `edgefleet_rollout_stalled_seconds`: the longest any running rollout has gone without a step
 *   past what it waits for (its current soak), 0 when none runs.
 */
import { Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { FleetRepository } from '../state/repository.js';
import type { RolloutRecord } from '../state/schema.js';

/** Request-weighted p95 per model name of the devices' latest samples (pure). */
export function modelP95Seconds(devices: readonly { online: boolean; telemetry: { models: Record<string, { requests: number; p95Ms: number | null }> } | null }[], known: ReadonlySet<string>): Map<string, number> {
  const sums = new Map<string, { weighted: number; requests: number }>();
  for (const d of devices) {
    if (!d.online || !d.telemetry) continue;
    for (const [key, h] of Object.entries(d.telemetry.models)) {
      const model = key.split('@')[0] ?? key;
      if (!known.has(model) || h.p95Ms === null || h.requests === 0) continue;
      const s = sums.get(model) ?? { weighted: 0, requests: 0 };
      s.weighted += h.p95Ms * h.requests;
      s.requests += h.requests;
      sums.set(model, s);
    }
  }
  return new Map([...sums].map(([model, s]) => [model, s.weighted / s.requests / 1000]));
}

/** How long a running rollout has gone without a step beyond its current soak, in seconds (pure). */
export function rolloutStalledSeconds(rollouts: readonly RolloutRecord[], now: number): number {
  let worst = 0;
  for (const r of rollouts) {
    if (r.status !== 'running') continue;
    const soak = r.waves.find((w) => w.state === 'soaking')?.soakUntil;
    const since = Math.max(Date.parse(r.updatedAt), soak ? Date.parse(soak) : 0);
    worst = Math.max(worst, (now - since) / 1000);
  }
  return worst;
}

export function registerFleetGauges(registry: Registry, state: FleetRepository): void {
  new Gauge({
    name: 'edgefleet_model_latency_p95_seconds',
    help: "p95 inference latency per registry model, request-weighted over the online devices' latest telemetry interval",
    labelNames: ['model'],
    registers: [registry],
    collect() {
      this.reset();
      const known = new Set(state.allModelVersions().map((v) => v.name));
      for (const [model, p95] of modelP95Seconds(state.devices(), known)) this.set({ model }, p95);
    },
  });
  new Gauge({
    name: 'edgefleet_rollout_stalled_seconds',
    help: 'Longest time a running rollout has gone without a step past its current soak (0: none running or all moving)',
    registers: [registry],
    collect() {
      this.set(rolloutStalledSeconds(state.rollouts(), Date.now()));
    },
  });
}
