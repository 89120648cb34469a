/** Broker options that are checked before anything listens: a bad one is a BrokerConfigError that says what to fix. */
import { readFileSync } from 'node:fs';
import type { GuardLimits } from './guard.js';

/** A bad option: the message says what to fix. */
export class BrokerConfigError extends Error {
  readonly code = 'invalid_config';
}

export function validateLimits(l: GuardLimits): void {
  const check = (name: string, v: number, min: number, max: number) => {
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new BrokerConfigError(`${name} must be an integer from ${min} to ${max}, got ${v}`);
    }
  };
  check('maxPacketSize', l.maxPacketSize, 1024, 268_435_455); // the largest MQTT remaining length
  check('maxTopicLength', l.maxTopicLength, 1, 65_535);
  check('maxTopicLevels', l.maxTopicLevels, 1, 100);
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
