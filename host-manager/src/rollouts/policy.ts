/** A rollout's policy: the defaults, what an operator may set, and how the two merge. */
import { z } from 'zod';
import { MaintenanceWindowSchema } from '../state/schema.js';
import type { RolloutPolicy } from '../state/schema.js';
import { checkTimeZone } from './window.js';

export const DEFAULT_POLICY: RolloutPolicy = {
  canary: 1,
  waves: [10, 50, 100],
  maxFailuresPercent: 0,
  soakS: 60,
  maxErrorRate: 0.05,
  maxErrorRateIncrease: 0.01,
  maxLatencyRatio: 1.5,
  latencyFloorMs: 5,
  minRequests: 20,
  offlineDeadlineS: 3600,
  rollbackOnFailure: true,
};

export const RolloutPolicySchema = z
  .object({
    canary: z.number().int().min(0).max(10_000),
    waves: z.array(z.number().gt(0).max(100)).max(20),
    maxFailuresPercent: z.number().min(0).max(100),
    soakS: z.number().min(0).max(7 * 24 * 3600),
    maxErrorRate: z.number().min(0).max(1),
    maxErrorRateIncrease: z.number().min(0).max(1),
    maxLatencyRatio: z.number().min(1),
    latencyFloorMs: z.number().min(0),
    minRequests: z.number().int().min(0),
    offlineDeadlineS: z.number().min(0),
    rollbackOnFailure: z.boolean(),
    window: MaintenanceWindowSchema.refine(
      (w) => w.start !== w.end,
      'the window is empty; give an end different from its start',
    ).refine(
      (w) => {
        try {
          checkTimeZone(w.timeZone);
          return true;
        } catch {
          return false; // checkTimeZone throws for a zone this runtime does not know: refused here with the sentence below
        }
      },
      'unknown time zone; use an IANA name such as UTC or Europe/Berlin',
    ),
  })
  .partial()
  .strict();
export type PolicyInput = z.infer<typeof RolloutPolicySchema>;

export function resolvePolicy(input: PolicyInput = {}): RolloutPolicy {
  const merged = { ...DEFAULT_POLICY, ...Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) };
  const waves = [...merged.waves].sort((a, b) => a - b);
  if (waves.length === 0 || waves[waves.length - 1] !== 100) waves.push(100);
  return { ...merged, waves: [...new Set(waves)] };
}
