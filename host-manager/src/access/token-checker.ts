/**
 * Checks a bearer token against the operators' hashes. Verified tokens are remembered
 * by their sha256 (scrypt per request would cost ~30 ms); the comparison itself is
 * constant time, and a remembered token stops working once its operator is gone.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { verifySecretAsync } from '@edgefleet/node-io';
import type { FleetRepository } from '../state/repository.js';

export type TokenChecker = (token: string | undefined) => Promise<string | undefined>;

export function createTokenChecker(state: FleetRepository): TokenChecker {
  const verified = new Map<string, { operator: string; digest: Buffer }>();
  return async (token) => {
    if (!token || token.length > 512) return undefined;
    const digest = createHash('sha256').update(token).digest();
    const key = digest.toString('hex');
    const hit = verified.get(key);
    if (hit && timingSafeEqual(hit.digest, digest) && state.operator(hit.operator)) return hit.operator;
    for (const op of state.operators()) {
      if (await verifySecretAsync(token, op.tokenHash)) {
        if (verified.size > 100) verified.clear();
        verified.set(key, { operator: op.id, digest });
        return op.id;
      }
    }
    return undefined;
  };
}
