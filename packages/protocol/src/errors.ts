/**
 * The error vocabulary, defined once: every code, the HTTP status any HTTP surface
 * (the agent's inference API, the controller's API) answers it with, the error that
 * carries a code, and the one conversion from anything thrown to a reply body.
 */
import { z } from 'zod';

/** Each code and its HTTP status. */
export const ERROR_STATUS = {
  bad_request: 400, // not JSON, or not a message of this protocol
  unknown_command: 400,
  invalid_params: 400,
  invalid_input: 400, // tensors that do not match the model
  not_onnx: 400,
  unauthorized: 401, // a missing or wrong token (HTTP surfaces only)
  forbidden: 403, // a browser request from a page of another origin (HTTP surfaces only)
  not_found: 404,
  method_not_allowed: 405,
  conflict: 409, // the request contradicts the current state: a program already running, a version already active
  too_long: 413, // over a byte limit (a chunk, a file, a body, a message of its kind)
  too_deep: 400, // JSON nested deeper than the protocol allows
  wrong_host: 421, // a Host header that names none of the server's addresses or configured names (DNS rebinding)
  unsupported_media_type: 415,
  incompatible: 422, // the device cannot run this model (opset, runtime version, memory)
  rate_limited: 429, // too many attempts from one source (failed logins, enrolments); retry after the time the message names
  internal: 500,
  unavailable: 503, // e.g. no Docker engine, shutting down
  // busy is a temporary shortage that clears by itself (retry later), which is 503 (RFC 9110 §15.6.4:
  // "temporary overload"); 409 would say the request contradicts the resource's state and must change.
  busy: 503,
  deadline_exceeded: 504,
  disk_full: 507,
  // A device's refusal of what it was sent (manifest, chunks, model). The controller relays it:
  // the device it forwarded the request to failed it, hence 502.
  bad_signature: 502,
  expired: 502,
  wrong_target: 502,
  lower_version: 502,
  replayed: 502, // a rollback manifest whose sequence number this device has already used
  corrupt_chunk: 502,
  missing_chunk: 502,
  truncated: 502,
  load_failed: 502,
  smoke_test_failed: 502,
  digest_mismatch: 502, // an artifact is not what its signed manifest pins (e.g. a Docker image ID)
} as const satisfies Record<string, number>;

export type ErrorCode = keyof typeof ERROR_STATUS;
export const ERROR_CODES = Object.keys(ERROR_STATUS) as [ErrorCode, ...ErrorCode[]];
export const ErrorCodeSchema = z.enum(ERROR_CODES);

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

/** The HTTP status for an error code. */
export function httpStatusOf(code: ErrorCode): number {
  return ERROR_STATUS[code] ?? 500;
}

/**
 * What a reply says about anything thrown: a FleetError as it is, a full disk as
 * `disk_full`, anything else as `internal` with its message.
 */
export function toErrorBody(error: unknown): ErrorBody {
  if (error instanceof FleetError) return error.toJSON();
  const message = error instanceof Error ? error.message : String(error);
  const errno = (error as { code?: unknown } | null | undefined)?.code;
  if (errno === 'ENOSPC' || errno === 'EDQUOT') return { code: 'disk_full', message: `no space left on the device: ${message}` };
  return { code: 'internal', message: `internal error: ${message}` };
}

/** The HTTP answer for anything thrown: its status and the `{error: {code, message}}` body. */
export function errorResponse(error: unknown): { status: number; body: { error: ErrorBody } } {
  const body = toErrorBody(error);
  return { status: httpStatusOf(body.code), body: { error: body } };
}

/** A FleetError from anything thrown (for code that re-throws what it caught). */
export function asFleetError(error: unknown): FleetError {
  if (error instanceof FleetError) return error;
  const body = toErrorBody(error);
  return new FleetError(body.code, body.message);
}
