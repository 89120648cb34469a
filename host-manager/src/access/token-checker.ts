/**
 * Checks a bearer token against the operators' hashes. Verified tokens are remembered
 * by their sha256 (scrypt per request would cost ~30 ms); the comparison itself is
 * constant time, and a remembered token stops working once its operator is gone.
 *
 * A token that is not remembered costs an scrypt per operator on the thread pool the
 * state file's writes also use, so each source address gets AUTH_ATTEMPTS_PER_MINUTE such
 * checks (a burst of as many); past that it is refused with `rate_limited` without
 * hashing. An operator's own token is remembered after its first use, so guessing from
 * the operator's address does not lock the operator out.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { verifySecretAsync } from '@edgefleet/node-io';
import { FleetError } from '@edgefleet/protocol';
import type { FleetRepository } from '../state/repository.js';
import { RateLimiter } from './rate-limit.js';

/** The operator a token belongs to, or undefined; throws `rate_limited` when `source` has tried too many unknown tokens. */
export type TokenChecker = (token: string | undefined, source?: string) => Promise<string | undefined>;

export const AUTH_ATTEMPTS_PER_MINUTE = 30;

export function createTokenChecker(state: FleetRepository): TokenChecker {
  const verified = new Map<string, { operator: string; digest: Buffer }>();
  const attempts = new RateLimiter(AUTH_ATTEMPTS_PER_MINUTE);
  return async (token, source = 'unknown') => {
    if (!token || token.length > 512) return undefined;
    const digest = createHash('sha256').update(token).digest();
    const key = digest.toString('hex');
    const hit = verified.get(key);
    if (hit && timingSafeEqual(hit.digest, digest) && state.operator(hit.operator)) return hit.operator;
    if (!attempts.take(source)) {
      const seconds = Math.ceil(attempts.retryAfterMs(source) / 1000);
      throw new FleetError('rate_limited', `too many unknown tokens from ${source} (${AUTH_ATTEMPTS_PER_MINUTE} a minute); retry in ${seconds} s with the token from <data dir>/operator.token`);
    }
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
