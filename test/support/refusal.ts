import type { FleetError } from '@edgefleet/protocol';

/** Awaits a promise that must be refused and returns the error, so a test can check its code and sentence. */
export async function refusal(promise: Promise<unknown>): Promise<FleetError> {
  try {
    await promise;
  } catch (error) {
    return error as FleetError;
  }
  throw new Error('expected a refusal');
}
