/** Inference health summed over telemetry intervals and devices, for the gates (pure). */
import type { ModelHealth } from '@edgefleet/protocol';
import type { HealthSummary } from '../state/schema.js';

export const EMPTY_HEALTH: HealthSummary = { requests: 0, errors: 0, errorRate: null, p95Ms: null, samples: 0 };

/** Sums per-interval model health; p95 is the request-weighted mean of the intervals' p95. */
export function summarizeHealth(samples: readonly Pick<ModelHealth, 'requests' | 'errors' | 'p95Ms'>[]): HealthSummary {
  return combineHealth(samples.map((s) => ({ requests: s.requests, errors: s.errors, errorRate: null, p95Ms: s.p95Ms, samples: 1 })));
}

/** Sums summaries (of devices, or of intervals); p95 is weighted by requests, as above. */
export function combineHealth(parts: readonly HealthSummary[]): HealthSummary {
  let requests = 0;
  let errors = 0;
  let samples = 0;
  let weighted = 0;
  let weight = 0;
  for (const p of parts) {
    requests += p.requests;
    errors += p.errors;
    samples += p.samples;
    if (p.p95Ms !== null && p.requests > 0) {
      weighted += p.p95Ms * p.requests;
      weight += p.requests;
    }
  }
  return { requests, errors, errorRate: requests > 0 ? errors / requests : null, p95Ms: weight > 0 ? weighted / weight : null, samples };
}
