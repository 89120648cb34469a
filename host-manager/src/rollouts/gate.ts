/**
 * A wave's gate (pure): install results first; for an image, whether each switched device's
 * container of the new version still runs healthy; then the inference health of the new
 * version on the switched devices during the soak against the old version on the same
 * devices before the switch (an image app that serves inference reports the same figures as
 * a model). The result keeps the failures apart from the notes, so nobody has to tell them
 * apart by their wording.
 */
import type { ContainerState } from '@edgefleet/protocol';
import type { DeviceRecord, GateResult, HealthSummary, RolloutDevice, RolloutPolicy, RolloutWave } from '../state/schema.js';

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
const ms = (x: number): string => `${x.toFixed(1)} ms`;

/** Image rollouts: per switched device, whether its container of the new version runs healthy, from what it last reported. */
export interface ContainerVerdicts {
  healthy: number;
  unhealthy: { device: string; reason: string }[];
}

/** Why a reported container is not healthy (undefined: it is). */
function containerProblem(c: ContainerState | undefined, where: string): string | undefined {
  if (!c) return `no container of ${where} is reported`;
  if (!c.running) return `its container is ${c.state}${c.exitCode !== null ? ` (exit code ${c.exitCode})` : ''}`;
  if (c.health === 'unhealthy') return 'its container reports unhealthy';
  if (c.restarts > 0) return `its container restarted ${c.restarts} time(s) since it started`;
  return undefined;
}

/**
 * The verdict from each device's latest report: the telemetry sample when it was taken after the switch,
 * else the status (republished by the device after the commit that switched it).
 */
export function containerVerdicts(app: string, version: number, switched: readonly RolloutDevice[], device: (id: string) => DeviceRecord | undefined): ContainerVerdicts {
  const verdicts: ContainerVerdicts = { healthy: 0, unhealthy: [] };
  for (const d of switched) {
    const record = device(d.id);
    const since = Date.parse(d.switchedAt ?? '');
    const sample = record?.telemetry && record.telemetry.containers && record.telemetry.ts >= since ? record.telemetry.containers : undefined;
    const reported = sample ?? record?.info?.containers ?? [];
    const problem = containerProblem(reported.find((c) => c.role === 'app' && c.app === app && c.version === version), `${app}@${version}`);
    if (problem) verdicts.unhealthy.push({ device: d.id, reason: problem });
    else verdicts.healthy++;
  }
  return verdicts;
}

export function evaluateGate(
  policy: RolloutPolicy,
  waveDevices: readonly RolloutDevice[],
  before: HealthSummary,
  after: HealthSummary,
  containers?: ContainerVerdicts,
): GateResult {
  const switched = waveDevices.filter((d) => d.state === 'switched').length;
  const failed = waveDevices.filter((d) => d.state === 'failed').length;
  const waiting = waveDevices.filter((d) => d.state === 'waiting' || d.state === 'skipped').length;
  /** Findings in order; `fails` marks those that fail the gate. */
  const findings: { text: string; fails: boolean }[] = [];
  const allowed = Math.floor((policy.maxFailuresPercent / 100) * waveDevices.length);
  if (failed > allowed) {
    const first = waveDevices.find((d) => d.state === 'failed' && d.error);
    findings.push({
      fails: true,
      text: `${failed} of ${waveDevices.length} devices failed to install (allowed ${allowed})` + (first?.error ? `: ${first.id}: ${first.error.code}: ${first.error.message}` : ''),
    });
  }
  if (containers && containers.unhealthy.length > 0) {
    const first = containers.unhealthy[0]!;
    findings.push({ fails: true, text: `${containers.unhealthy.length} switched device(s) do not run the new container healthy: ${first.device}: ${first.reason}` });
  }
  if (after.requests < policy.minRequests) {
    findings.push({ fails: false, text: `only ${after.requests} requests during the soak (minimum ${policy.minRequests}): gated on install results only` });
  } else {
    const rate = after.errorRate ?? 0;
    if (rate > policy.maxErrorRate) {
      findings.push({ fails: true, text: `error rate ${pct(rate)} after the switch is above the ${pct(policy.maxErrorRate)} ceiling` });
    }
    if (before.errorRate !== null && rate > before.errorRate + policy.maxErrorRateIncrease) {
      findings.push({ fails: true, text: `error rate rose from ${pct(before.errorRate)} to ${pct(rate)} (allowed +${pct(policy.maxErrorRateIncrease)})` });
    }
    if (after.p95Ms !== null && before.p95Ms !== null && after.p95Ms > policy.latencyFloorMs && after.p95Ms > before.p95Ms * policy.maxLatencyRatio) {
      findings.push({ fails: true, text: `p95 latency rose from ${ms(before.p95Ms)} to ${ms(after.p95Ms)} (allowed ×${policy.maxLatencyRatio})` });
    }
    if (before.requests === 0) findings.push({ fails: false, text: 'no traffic on the previous version before the switch: compared with absolute limits only' });
  }
  const failures = findings.filter((f) => f.fails).map((f) => f.text);
  const reasons = findings.map((f) => f.text);
  if (failures.length === 0 && reasons.length === 0) reasons.push('install results and inference health within limits');
  return {
    pass: failures.length === 0,
    reasons,
    failures,
    ...(containers ? { containers: { healthy: containers.healthy, unhealthy: containers.unhealthy.length } } : {}),
    install: { switched, failed, waiting },
    before,
    after,
  };
}

/** Why a wave failed its gate, in a sentence (records from before `failures` was kept fall back to all reasons). */
export function gateFailureReason(wave: RolloutWave): string {
  const failures = wave.gate?.failures ?? wave.gate?.reasons ?? [];
  return `wave ${wave.index} (${wave.label}) failed its gate: ${failures.join('; ') || 'gate failed'}`;
}
