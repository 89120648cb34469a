/** Error codes and the error that carries one: a code for programs, a sentence for people. */
import { z } from 'zod';

export const ERROR_CODES = [
  'bad_request', // not JSON, or not a message of this protocol
  'unknown_command',
  'invalid_params',
  'deadline_exceeded',
  'not_found',
  'conflict', // e.g. a program already running
  'busy',
  'incompatible', // the device cannot run this model (opset, runtime version, memory)
  'bad_signature',
  'expired',
  'wrong_target',
  'lower_version',
  'corrupt_chunk',
  'missing_chunk',
  'truncated',
  'too_long',
  'not_onnx',
  'load_failed',
  'smoke_test_failed',
  'disk_full',
  'digest_mismatch', // an artifact is not what its signed manifest pins (e.g. a Docker image ID)
  'invalid_input', // tensors that do not match the model
  'unavailable', // e.g. no Docker engine
  'internal',
] as const;
export const ErrorCodeSchema = z.enum(ERROR_CODES);
export type ErrorCode = z.infer<typeof ErrorCodeSchema>;

export const ErrorBodySchema = z.object({ code: ErrorCodeSchema, message: z.string() });
export type ErrorBody = z.infer<typeof ErrorBodySchema>;

/** An error that travels: a code for programs and a sentence for people. */
export class FleetError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'FleetError';
  }
  toJSON(): ErrorBody {
    return { code: this.code, message: this.message };
  }
}

