/** Broker options that are checked before anything listens: a bad one is a BrokerConfigError that says what to fix. */
import { readFileSync } from 'node:fs';
import type { GuardLimits } from './guard.js';
import type { AdmissionLimits } from './admission.js';
import type { OutboundLimits } from './outbound.js';

/** A bad option: the message says what to fix. */
export class BrokerConfigError extends Error {
  readonly code = 'invalid_config';
}

function check(name: string, v: number, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new BrokerConfigError(`${name} must be an integer from ${min} to ${max}, got ${v}`);
  }
}

export function validateLimits(l: GuardLimits): void {
  check('maxPacketSize', l.maxPacketSize, 1024, 268_435_455); // the largest MQTT remaining length
  check('maxTopicLength', l.maxTopicLength, 1, 65_535);
  check('maxTopicLevels', l.maxTopicLevels, 1, 100);
}

export function validateOutbound(o: OutboundLimits): void {
  check('maxQueuedBytes', o.maxQueuedBytes, 64 * 1024, 2 ** 40);
  check('stallMs', o.stallMs, 50, 600_000);
  check('stallTimeoutMs', o.stallTimeoutMs, o.stallMs, 3_600_000);
}

export function validateAdmission(a: AdmissionLimits): void {
  check('admission.maxConcurrent', a.maxConcurrent, 1, 1024);
  check('admission.maxWaiting', a.maxWaiting, 0, 1_000_000);
  check('admission.freeFailures', a.freeFailures, 0, 1_000_000);
  check('admission.failureWindowMs', a.failureWindowMs, 1, 86_400_000);
  check('admission.backoffMs', a.backoffMs, 1, 86_400_000);
  check('admission.maxBackoffMs', a.maxBackoffMs, a.backoffMs, 86_400_000);
  check('admission.cacheTtlMs', a.cacheTtlMs, 0, 86_400_000);
  check('admission.cacheSize', a.cacheSize, 1, 10_000_000);
}

/** PEM text is accepted as is; anything else is a file path. */
export function readOption(value: string, name: string): Buffer | string {
  if (value.includes('-----BEGIN')) return value;
  try {
    return readFileSync(value);
  } catch (err) {
    throw new BrokerConfigError(`cannot read ${name} file "${value}": ${(err as Error).message}`);
  }
}
