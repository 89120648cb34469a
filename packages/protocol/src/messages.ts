/**
 * Every message on the wire, defined once: each zod schema gives both the
 * TypeScript type (z.infer) and the runtime validator used at every boundary.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { ErrorBodySchema, FleetError } from './errors.js';
import type { ErrorBody } from './errors.js';
import { decodePayload } from './frames.js';
import { OipInferRequestSchema, OipInferResponseSchema, TensorInfoSchema, TensorMapRequestSchema, TensorSchema } from './inference.js';
import type { InferBody } from './inference.js';
import { MESSAGE_LIMITS, DEFAULT_JSON_LIMITS, parseJson } from './limits.js';
import type { JsonLimits } from './limits.js';
import { SignedManifestSchema } from './manifest.js';
import { PROTOCOL_VERSION, NAME_PATTERN } from './topics.js';

export const NameSchema = z.string().regex(NAME_PATTERN, 'use 1-64 letters, digits, ".", "_" or "-"');
export const VersionSchema = z.number().int().positive();

const envelope = {
  v: z.literal(PROTOCOL_VERSION),
  id: z.string().min(1).max(64),
  ts: z.number().int().nonnegative(),
};

// ---------------------------------------------------------------- device state

export const ModelStateSchema = z.object({
  name: NameSchema,
  active: VersionSchema.nullable(),
  versions: z.array(VersionSchema),
  inputs: z.array(TensorInfoSchema).optional(),
  outputs: z.array(TensorInfoSchema).optional(),
});
export type ModelState = z.infer<typeof ModelStateSchema>;

/**
 * What one device may make the controller keep about itself is bounded here: short strings and
 * short lists (a status is stored per device and written to the state file).
 */
export const DEVICE_INFO_LIMITS = { text: 256, list: 32 } as const;
/** No control characters, line separators or bidirectional overrides: these strings are shown in terminals and pages. */
const PRINTABLE = /^[^\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]*$/;
const InfoText = z.string().max(DEVICE_INFO_LIMITS.text).regex(PRINTABLE, 'control characters are not allowed');

/** A container the fleet owns on a device, as the engine reports it (device-reported: bounded and printable like the rest of its status). */
export const ContainerStateSchema = z.object({
  /** The image manifest's name (an app), or the model a container serves. */
  app: NameSchema,
  version: VersionSchema,
  role: z.enum(['app', 'inference']),
  /** The engine's container id and name. */
  id: InfoText.min(1).max(128),
  name: InfoText.min(1),
  /** Image ID (sha256:…). */
  image: InfoText,
  state: z.enum(['created', 'running', 'paused', 'restarting', 'removing', 'exited', 'dead']),
  running: z.boolean(),
  /** From the Docker HEALTHCHECK; 'none' when the container has none (the agent's own probes are not shown here). */
  health: z.enum(['starting', 'healthy', 'unhealthy', 'none']),
  restarts: z.number().int().nonnegative(),
  /** Epoch milliseconds. */
  created: z.number().int(),
  startedAt: z.number().int().nullable(),
  exitCode: z.number().int().nullable(),
});
export type ContainerState = z.infer<typeof ContainerStateSchema>;

export const DeviceInfoSchema = z.object({
  agentVersion: InfoText,
  hostname: InfoText,
  arch: InfoText,
  platform: InfoText,
  cpus: z.number().int(),
  memoryBytes: z.number(),
  onnxruntime: z.object({ version: InfoText, executionProviders: z.array(InfoText).max(DEVICE_INFO_LIMITS.list) }).nullable(),
  docker: z.boolean(),
  groups: z.array(NameSchema).max(DEVICE_INFO_LIMITS.list),
  models: z.array(z.object({ name: NameSchema, version: VersionSchema })).max(DEVICE_INFO_LIMITS.list),
  /** Containers the fleet owns on this device (absent from agents before containers, empty without an engine). */
  containers: z.array(ContainerStateSchema).max(DEVICE_INFO_LIMITS.list).optional(),
});
export type DeviceInfo = z.infer<typeof DeviceInfoSchema>;

export const StatusMessageSchema = z.discriminatedUnion('online', [
  z.object({ ...envelope, type: z.literal('status'), online: z.literal(true), device: DeviceInfoSchema }),
  z.object({ ...envelope, type: z.literal('status'), online: z.literal(false), reason: z.string().max(1024).regex(PRINTABLE, 'control characters are not allowed') }),
]);
export type StatusMessage = z.infer<typeof StatusMessageSchema>;

export const ModelHealthSchema = z.object({
  requests: z.number().int().nonnegative(),
  errors: z.number().int().nonnegative(),
  p50Ms: z.number().nullable(),
  p95Ms: z.number().nullable(),
  p99Ms: z.number().nullable(),
});
export type ModelHealth = z.infer<typeof ModelHealthSchema>;

export const TelemetrySampleSchema = z.object({
  ts: z.number().int(),
  cpuPercent: z.number(),
  load: z.array(z.number()).max(16),
  memoryUsedBytes: z.number(),
  memoryTotalBytes: z.number(),
  diskFreeBytes: z.number().nullable(),
  temperatureC: z.number().nullable(),
  uptimeS: z.number(),
  /** Per model `name@version`: counts and latency since the previous sample. */
  models: z.record(z.string(), ModelHealthSchema),
  /** The fleet's containers at sampling time (bounded: only owned ones). */
  containers: z.array(ContainerStateSchema).max(DEVICE_INFO_LIMITS.list).optional(),
});
export type TelemetrySample = z.infer<typeof TelemetrySampleSchema>;

export const TelemetryMessageSchema = z.object({
  ...envelope,
  type: z.literal('telemetry'),
  seq: z.number().int().nonnegative(),
  /** Samples the offline buffer had to drop (oldest first) before this one. */
  dropped: z.number().int().nonnegative(),
  sample: TelemetrySampleSchema,
});
export type TelemetryMessage = z.infer<typeof TelemetryMessageSchema>;

// ---------------------------------------------------------------- events

export const EventSchema = z.discriminatedUnion('event', [
  z.object({
    ...envelope,
    type: z.literal('event'),
    event: z.literal('transfer.progress'),
    data: z.object({ transferId: NameSchema, received: z.number().int(), total: z.number().int() }),
  }),
  z.object({
    ...envelope,
    type: z.literal('event'),
    event: z.literal('model.activated'),
    data: z.object({ model: NameSchema, version: VersionSchema, previous: VersionSchema.nullable() }),
  }),
  z.object({
    ...envelope,
    type: z.literal('event'),
    event: z.literal('model.failed'),
    data: z.object({ model: NameSchema, version: VersionSchema, error: ErrorBodySchema }),
  }),
  z.object({
    ...envelope,
    type: z.literal('event'),
    event: z.literal('container.activated'),
    data: z.object({ app: NameSchema, version: VersionSchema, previous: VersionSchema.nullable(), strategy: z.enum(['blue-green', 'stop-then-start', 'start']) }),
  }),
  z.object({
    ...envelope,
    type: z.literal('event'),
    event: z.literal('container.failed'),
    /** A new version that did not become healthy; `restored` is the version running again after the automatic rollback. */
    data: z.object({ app: NameSchema, version: VersionSchema, error: ErrorBodySchema, restored: VersionSchema.nullable() }),
  }),
  z.object({
    ...envelope,
    type: z.literal('event'),
    event: z.literal('log'),
    data: z.object({ level: z.string(), message: z.string() }),
  }),
]);
export type FleetEvent = z.infer<typeof EventSchema>;
export type EventName = FleetEvent['event'];
export type EventData<E extends EventName> = Extract<FleetEvent, { event: E }>['data'];

// ---------------------------------------------------------------- commands

export const LEGACY_COMMANDS = ['start', 'stop', 'update', 'install', 'done', 'exit'] as const;
export const LegacyCommandSchema = z.enum(LEGACY_COMMANDS);
export type LegacyCommand = z.infer<typeof LegacyCommandSchema>;

const empty = z.object({}).strict();
const modelRef = z.object({ model: NameSchema, version: VersionSchema });

/**
 * The infer command's params: either request body (tensor map or Open Inference Protocol) plus the model,
 * its optional version and `extra` fields on both forms (e.g. the controller API's timeoutMs).
 */
export function inferParamsSchema<E extends z.ZodRawShape>(extra: E) {
  return z.union([
    TensorMapRequestSchema.extend({ model: NameSchema, version: VersionSchema.optional(), ...extra }),
    OipInferRequestSchema.extend({ model: NameSchema, version: VersionSchema.optional(), ...extra }),
  ]);
}

/** One entry per command: what the request carries and what an ok reply carries. */
export const commands = {
  ping: { params: empty, result: z.object({ pong: z.literal(true), uptimeS: z.number() }) },
  info: { params: empty, result: DeviceInfoSchema },
  infer: {
    /** The same bodies as the agent's HTTP API (tensor map or Open Inference Protocol), plus the model. */
    params: inferParamsSchema({}),
    /** In the form of the request: the tensor-map answer, or the protocol's `$inference_response`. */
    result: z.union([
      z.object({
        model: NameSchema,
        version: VersionSchema,
        outputs: z.record(z.string(), TensorSchema),
        /** The post-processed answer, when the model's manifest declares post-processing. */
        answer: z.unknown().optional(),
        latencyMs: z.number(),
      }),
      OipInferResponseSchema,
    ]),
  },
  'models.list': { params: empty, result: z.object({ models: z.array(ModelStateSchema) }) },
  'models.activate': {
    params: modelRef.strict(),
    result: z.object({ model: NameSchema, version: VersionSchema, previous: VersionSchema.nullable() }),
  },
  'models.rollback': {
    /** Back to the previously active version; a lower version than the highest accepted needs an operator-signed manifest. */
    params: z.object({ model: NameSchema, manifest: SignedManifestSchema.optional() }).strict(),
    result: z.object({ model: NameSchema, version: VersionSchema, previous: VersionSchema.nullable() }),
  },
  'models.remove': { params: modelRef.strict(), result: z.object({ removed: z.boolean() }) },
  'models.sample': {
    /**
     * Delivers the sample request a stored version's signed manifest names by hash (`check.sample.sha256`):
     * the bytes from `offset` on are the binary part of a framed payload. Resumable: the reply says how
     * many bytes the device holds; once all are there and match the hash, activation can use them.
     */
    params: z.object({ model: NameSchema, version: VersionSchema, offset: z.number().int().nonnegative() }).strict(),
    result: z.object({ received: z.number().int().nonnegative(), length: z.number().int().nonnegative(), complete: z.boolean() }),
  },
  logs: {
    params: z.object({ lines: z.number().int().min(1).max(5000).default(100) }).strict(),
    result: z.object({ lines: z.array(z.string()) }),
  },
  'transfer.offer': {
    /** Announces a transfer; the device verifies the manifest first and answers with the chunks it still needs. */
    params: z
      .object({
        transferId: NameSchema,
        manifest: SignedManifestSchema,
        /** Where the chunks will be published: the device's own subtree or one of its groups. */
        via: z.object({ kind: z.enum(['device', 'group']), name: NameSchema }),
      })
      .strict(),
    result: z.object({ missing: z.array(z.number().int().nonnegative()), total: z.number().int() }),
  },
  'transfer.status': {
    params: z.object({ transferId: NameSchema }).strict(),
    result: z.object({ missing: z.array(z.number().int().nonnegative()), total: z.number().int() }),
  },
  'transfer.commit': {
    /**
     * Verifies the whole file against its manifest, stores it, and activates it unless told not to. For an image
     * manifest: installs the image (the engine's ID must be the pin) and, when it has a container spec, runs it.
     */
    params: z.object({ transferId: NameSchema, activate: z.boolean().default(true) }).strict(),
    result: z.object({
      /** The manifest's name: a model, or an app for an image manifest. */
      model: NameSchema,
      version: VersionSchema,
      activated: z.boolean(),
      previous: VersionSchema.nullable(),
    }),
  },
  'containers.list': {
    params: empty,
    result: z.object({
      engine: z.object({ available: z.boolean(), version: z.string().nullable(), reason: z.string().nullable() }),
      containers: z.array(ContainerStateSchema),
      /** Per app: the version running (or last run) and the versions whose images are kept for rollback. */
      apps: z.array(
        z.object({
          app: NameSchema,
          active: VersionSchema.nullable(),
          images: z.array(z.object({ version: VersionSchema, image: z.string() })),
          lastFailure: z.object({ version: VersionSchema, error: ErrorBodySchema, at: z.number().int() }).nullable(),
        }),
      ),
    }),
  },
  'containers.logs': {
    /** The tail of an app's (or a served model's) container output, stdout and stderr interleaved. */
    params: z.object({ app: NameSchema, lines: z.number().int().min(1).max(5000).default(100) }).strict(),
    result: z.object({ app: NameSchema, container: z.string(), lines: z.array(z.string()) }),
  },
  'containers.stop': {
    params: z.object({ app: NameSchema }).strict(),
    result: z.object({ app: NameSchema, version: VersionSchema, stopped: z.boolean() }),
  },
  'containers.start': {
    params: z.object({ app: NameSchema }).strict(),
    result: z.object({ app: NameSchema, version: VersionSchema, started: z.boolean() }),
  },
  'containers.deploy': {
    /** Runs an installed version of an app (replacing the running one: blue/green or stop-then-start, health-checked, undone on failure). */
    params: z.object({ app: NameSchema, version: VersionSchema }).strict(),
    result: z.object({ app: NameSchema, version: VersionSchema, previous: VersionSchema.nullable(), strategy: z.enum(['blue-green', 'stop-then-start', 'start', 'none']) }),
  },
  'containers.remove': {
    /** Stops and removes the app's containers and its images; the highest version accepted is kept (anti-rollback). */
    params: z.object({ app: NameSchema }).strict(),
    result: z.object({ app: NameSchema, removed: z.boolean(), containers: z.number().int().nonnegative(), images: z.number().int().nonnegative() }),
  },
  'containers.rollback': {
    /** Back to the previous version whose image is kept, replacing the running one (health-checked, undone on failure). */
    params: z.object({ app: NameSchema }).strict(),
    result: z.object({ app: NameSchema, version: VersionSchema, previous: VersionSchema.nullable() }),
  },
  legacy: {
    /** The original plain-text commands, sent through the request/response channel. */
    params: z.object({ command: LegacyCommandSchema }).strict(),
    result: z.object({ message: z.string() }),
  },
} as const;

export type CommandName = keyof typeof commands;
/** The answer to a tensor-map infer request. */
export type TensorMapInferResult = Extract<z.infer<(typeof commands)['infer']['result']>, { latencyMs: number }>;
/** The answer to an Open Inference Protocol infer request. */
export type OipInferResult = Extract<z.infer<(typeof commands)['infer']['result']>, { model_name: string }>;

/** The answer of a tensor-map request, typed as such; throws for an answer in the protocol's form (to an OIP request). */
export function tensorMapResult(result: z.infer<(typeof commands)['infer']['result']>): TensorMapInferResult {
  if ('model_name' in result) throw new FleetError('bad_request', 'the answer is an Open Inference Protocol response; the request was in that form');
  return result;
}
export type CommandParams<C extends CommandName> = z.input<(typeof commands)[C]['params']>;
export type ParsedParams<C extends CommandName> = z.output<(typeof commands)[C]['params']>;
export type CommandResult<C extends CommandName> = z.infer<(typeof commands)[C]['result']>;
export const COMMAND_NAMES = Object.keys(commands) as CommandName[];

const RequestEnvelopeSchema = z.object({
  ...envelope,
  type: z.literal('request'),
  command: z.string().min(1).max(64),
  /** Epoch milliseconds after which the requester no longer waits; the device answers deadline_exceeded. */
  deadline: z.number().int().positive(),
  params: z.unknown(),
});

export type Request<C extends CommandName = CommandName> = {
  v: typeof PROTOCOL_VERSION;
  id: string;
  ts: number;
  type: 'request';
  command: C;
  deadline: number;
  params: ParsedParams<C>;
  /** The binary part of a framed payload (frames.ts), e.g. the tensors of an inference; a view, not a copy. */
  binary?: Uint8Array;
};

export const ReplySchema = z.discriminatedUnion('status', [
  z.object({ ...envelope, type: z.literal('reply'), corr: z.string(), status: z.literal('ok'), data: z.unknown() }),
  z.object({ ...envelope, type: z.literal('reply'), corr: z.string(), status: z.literal('error'), error: ErrorBodySchema }),
]);
export type Reply = z.infer<typeof ReplySchema>;

export function newId(): string {
  return randomUUID();
}

export function makeRequest<C extends CommandName>(
  command: C,
  params: CommandParams<C>,
  timeoutMs: number,
  now = Date.now(),
): Request<C> {
  return {
    v: PROTOCOL_VERSION,
    id: newId(),
    ts: now,
    type: 'request',
    command,
    deadline: now + timeoutMs,
    params: params as ParsedParams<C>,
  };
}

/** The id of a request whose payload is at least that much of an envelope, so an error can still be correlated. */
function looseId(value: unknown): string | undefined {
  if (typeof value === 'object' && value !== null && 'id' in value) {
    const id = (value as { id: unknown }).id;
    if (typeof id === 'string' && id.length > 0 && id.length <= 64) return id;
  }
  return undefined;
}

export type ParsedRequest =
  | { ok: true; request: Request }
  | { ok: false; corr: string | undefined; error: FleetError };

/**
 * Validates a request payload (JSON, or framed with a binary part); on failure says why and, when it can,
 * which request it was. JSON over MESSAGE_LIMITS.request (a frame's JSON part, for a framed payload) is
 * refused before it is parsed (`too_long`, `too_deep`).
 */
export function parseRequest(payload: Buffer | string): ParsedRequest {
  let json: unknown;
  let binary: Uint8Array | undefined;
  try {
    ({ json, binary } = decodePayload(payload, MESSAGE_LIMITS.request, 'request'));
  } catch (error) {
    return { ok: false, corr: undefined, error: error as FleetError };
  }
  const corr = looseId(json);
  const envelopeResult = RequestEnvelopeSchema.safeParse(json);
  if (!envelopeResult.success) {
    return { ok: false, corr, error: new FleetError('bad_request', `not a v${PROTOCOL_VERSION} request: ${describe(envelopeResult.error)}`) };
  }
  const raw = envelopeResult.data;
  if (!Object.hasOwn(commands, raw.command)) {
    return {
      ok: false,
      corr,
      error: new FleetError('unknown_command', `unknown command "${raw.command}"; known: ${COMMAND_NAMES.join(', ')}`),
    };
  }
  const command = raw.command as CommandName;
  const params = commands[command].params.safeParse(raw.params ?? {});
  if (!params.success) {
    return { ok: false, corr, error: new FleetError('invalid_params', `${command}: ${describe(params.error)}`) };
  }
  const request = { ...raw, command, params: params.data } as Request;
  if (binary !== undefined) request.binary = binary;
  return { ok: true, request };
}

/** Reads a reply payload (JSON, or framed with a binary part: the tensors of an inference answer). */
export function parseReplyPayload(payload: Buffer | string): { reply: Reply; binary: Uint8Array | undefined } {
  const { json, binary } = decodePayload(payload, MESSAGE_LIMITS.reply, 'reply');
  const result = ReplySchema.safeParse(json);
  if (!result.success) throw new FleetError('bad_request', describe(result.error));
  return { reply: result.data, binary };
}

/**
 * Validates an inference request body (either form) with sentences that name the offending field of the
 * form it is in: a body whose `inputs` is a list is read as the Open Inference Protocol.
 */
export function parseInferBody(json: unknown): InferBody {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new FleetError('bad_request', 'the request body must be a JSON object: {"inputs": [...]} (Open Inference Protocol), {"inputs": {...}} or {"raw": {...}}');
  }
  const oip = Array.isArray((json as { inputs?: unknown }).inputs);
  const result = (oip ? OipInferRequestSchema : TensorMapRequestSchema).safeParse(json);
  if (result.success) return result.data;
  const unknownKeys = result.error.issues.find((i) => i.code === 'unrecognized_keys');
  if (unknownKeys && unknownKeys.code === 'unrecognized_keys') {
    throw new FleetError('invalid_params', `unknown field(s) ${unknownKeys.keys.join(', ')}; send "inputs" or "raw"`);
  }
  throw new FleetError('invalid_input', describe(result.error));
}

export function okReply<C extends CommandName>(request: { id: string }, data: CommandResult<C>): Reply {
  return { v: PROTOCOL_VERSION, id: newId(), ts: Date.now(), type: 'reply', corr: request.id, status: 'ok', data };
}

export function errorReply(corr: string, error: ErrorBody): Reply {
  return {
    v: PROTOCOL_VERSION,
    id: newId(),
    ts: Date.now(),
    type: 'reply',
    corr,
    status: 'error',
    error: { code: error.code, message: error.message },
  };
}

/** The limits each message schema is parsed under (see MESSAGE_LIMITS); other schemas get DEFAULT_JSON_LIMITS. */
const SCHEMA_LIMITS = new Map<z.ZodType, JsonLimits>([
  [StatusMessageSchema, MESSAGE_LIMITS.status],
  [TelemetryMessageSchema, MESSAGE_LIMITS.telemetry],
  [EventSchema, MESSAGE_LIMITS.event],
  [ReplySchema, MESSAGE_LIMITS.reply],
  [RequestEnvelopeSchema, MESSAGE_LIMITS.request],
]);

/** The byte and depth limits parseMessage applies to payloads of `schema`. */
export function limitsFor(schema: z.ZodType): JsonLimits {
  return SCHEMA_LIMITS.get(schema) ?? DEFAULT_JSON_LIMITS;
}

/**
 * Parses any message with a schema. Throws a FleetError that says what is wrong: `too_long` or
 * `too_deep` when the payload is over the limits of its kind (limitsFor(schema), or `limits`),
 * refused before JSON.parse; `bad_request` when it is not JSON or does not match the schema.
 */
export function parseMessage<S extends z.ZodType>(schema: S, payload: Buffer | string, limits: JsonLimits = limitsFor(schema)): z.infer<S> {
  const json = parseJson(payload, limits);
  const result = schema.safeParse(json);
  if (!result.success) throw new FleetError('bad_request', describe(result.error));
  return result.data;
}

/** Checks an ok reply's data against the command's result schema. */
export function parseResult<C extends CommandName>(command: C, data: unknown): CommandResult<C> {
  const result = commands[command].result.safeParse(data);
  if (!result.success) throw new FleetError('bad_request', `${command} reply: ${describe(result.error)}`);
  return result.data as CommandResult<C>;
}

export function makeStatus(device: DeviceInfo): StatusMessage {
  return { v: PROTOCOL_VERSION, id: newId(), ts: Date.now(), type: 'status', online: true, device };
}

export function makeOffline(reason: string): StatusMessage {
  return { v: PROTOCOL_VERSION, id: newId(), ts: Date.now(), type: 'status', online: false, reason };
}

export function makeEvent<E extends EventName>(event: E, data: EventData<E>): FleetEvent {
  return { v: PROTOCOL_VERSION, id: newId(), ts: Date.now(), type: 'event', event, data } as FleetEvent;
}

export function makeTelemetry(seq: number, dropped: number, sample: TelemetrySample): TelemetryMessage {
  return { v: PROTOCOL_VERSION, id: newId(), ts: Date.now(), type: 'telemetry', seq, dropped, sample };
}

/** One line per problem, with the path of the offending field (for a union, the branch that got furthest). */
export function describe(error: z.ZodError): string {
  return flatIssues(error.issues)
    .slice(0, 5)
    .map((issue) => `${issue.path.length ? issue.path.join('.') : '(root)'}: ${issue.message}`)
    .join('; ');
}

type Issue = { path: PropertyKey[]; message: string; code?: string; errors?: Issue[][] };

function flatIssues(issues: readonly Issue[], prefix: PropertyKey[] = []): Issue[] {
  return issues.flatMap((issue) => {
    const path = [...prefix, ...issue.path];
    // a union with its own message says it best; otherwise describe the branch that got furthest
    if (issue.code !== 'invalid_union' || !issue.errors?.length || issue.message !== 'Invalid input') return [{ ...issue, path }];
    const depth = (branch: Issue[]) => Math.max(...branch.map((i) => i.path.length));
    const best = issue.errors.reduce((a, b) => (depth(b) > depth(a) ? b : a));
    return flatIssues(best, path);
  });
}
