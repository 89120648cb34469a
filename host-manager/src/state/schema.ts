/**
 * The fleet's state file, declared once: every stored record as a zod schema (the type
 * is inferred from it), so what the controller reads back is checked field by field.
 * Records keyed by a name (devices, groups, models, rollouts, operators) come back
 * without a prototype, so any name is safe as a key.
 */
import { z } from 'zod';
import {
  AGENT_ARCHES,
  AgentBundleInfoSchema,
  CHECK_POLICIES,
  ContainerSpecSchema,
  DeviceInfoSchema,
  ErrorBodySchema,
  ImageRefSchema,
  NameSchema,
  ProcessingSchema,
  TelemetrySampleSchema,
  TensorInfoSchema,
  VersionSchema,
  nameRecord,
} from '@edgefleet/protocol';

/** A record keyed by names, read back as a null-prototype object. */
function byName<S extends z.ZodType>(value: S) {
  // zod's record drops a "__proto__" key without a word; refuse it instead, so nothing stored is lost silently
  const noProtoKey = z.custom<unknown>((raw) => raw === null || typeof raw !== 'object' || !Object.hasOwn(raw, '__proto__'), { message: 'the key "__proto__" is not a valid name' });
  return noProtoKey.pipe(z.record(NameSchema, value)).transform((r) => nameRecord(Object.entries(r) as [string, z.output<S>][]));
}

const Iso = z.string().min(1);

/** A label's key (`site`, `example.com/rack`) and value (`plant-1`, possibly empty), as in Kubernetes. */
export const LabelKeySchema = z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/, 'label keys are 1-63 letters, digits, ".", "_", "/" or "-", starting and ending with a letter or digit');
export const LabelValueSchema = z.string().regex(/^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/, 'label values are up to 63 letters, digits, ".", "_" or "-", starting and ending with a letter or digit');

export const DeviceRecordSchema = z
  .object({
    id: NameSchema,
    groups: z.array(NameSchema),
    /** hash of the device token (node-io: hashRandomToken, or scrypt hashSecret from before); the token itself is never stored. Empty for a device seen but never provisioned here. */
    tokenHash: z.string(),
    createdAt: z.string(),
    online: z.boolean(),
    lastSeen: z.string().nullable(),
    info: DeviceInfoSchema.nullable(),
    telemetry: TelemetrySampleSchema.nullable(),
    /** Why it went offline, from its last will or its goodbye. */
    offlineReason: z.string().nullable().optional(),
    /** False for a device the controller saw on an external broker without provisioning it. */
    provisioned: z.boolean().optional(),
    /** Provisioned by itself with the fleet provisioning key (POST /enrol). */
    enrolled: z.boolean().optional(),
    /** The operator's labels (`site=plant-1`), for rollout selectors; see rollouts/target.ts. */
    labels: z.record(LabelKeySchema, LabelValueSchema).optional(),
    /** The local inference API port its start command was given (unique among the fleet, so two agents can share a machine). */
    agentHttpPort: z.number().int().min(1).max(65535).optional(),
  })
  .strict();
export type DeviceRecord = z.infer<typeof DeviceRecordSchema>;

export const LineageSchema = z
  .object({ dataset: z.string().optional(), metrics: z.record(z.string(), z.number()).optional(), notes: z.string().optional(), gitCommit: z.string().optional() })
  .strict();

const Sha256 = z.string().regex(/^[0-9a-f]{64}$/);

/**
 * How devices check a version before they switch to it, chosen when it was added (models/checks.ts):
 * the policy, whether NaN is acceptable, the sample request and the expected outputs (files kept by their
 * sha256 under `<dataDir>/blobs/checks/`; here only what they are).
 */
export const VersionCheckSchema = z
  .object({
    policy: z.enum(CHECK_POLICIES),
    allowNaN: z.boolean(),
    sample: z
      .object({
        sha256: Sha256,
        length: z.number().int().positive(),
        /** Inference-Header-Content-Length of a binary body; null for a JSON body. */
        headerLength: z.number().int().nonnegative().nullable(),
        /** What it feeds the model. */
        inputs: z.array(z.object({ name: z.string(), dtype: z.string(), shape: z.array(z.number().int().nonnegative()) }).strict()),
      })
      .strict()
      .nullable(),
    expected: z
      .object({
        sha256: Sha256,
        length: z.number().int().positive(),
        /** The outputs it names. */
        outputs: z.array(z.string()),
        atol: z.number().nonnegative(),
        rtol: z.number().nonnegative(),
        /** Given by the operator, or computed by this controller's onnxruntime when the version was added. */
        from: z.enum(['operator', 'controller']),
      })
      .strict()
      .nullable(),
  })
  .strict();
export type VersionCheck = z.infer<typeof VersionCheckSchema>;
/** What every registry version stores about its blob: name, number, the bytes' sha256 and length, where it is. */
const storedBlob = {
  name: NameSchema,
  version: VersionSchema,
  sha256: Sha256,
  length: z.number().int().nonnegative(),
  addedAt: Iso,
  /** Path of the content-addressed blob, relative to the data directory. */
  blob: z.string(),
};

export const ModelVersionRecordSchema = z
  .object({
    ...storedBlob,
    inputs: z.array(TensorInfoSchema),
    outputs: z.array(TensorInfoSchema),
    opset: z.number().int().nullable(),
    minOnnxruntime: z.string().nullable(),
    lineage: LineageSchema.nullable(),
    processing: ProcessingSchema.nullable(),
    /** Absent on versions added before checks were chosen per version: those are checked with zeros. */
    check: VersionCheckSchema.optional(),
  })
  .strict();
export type ModelVersionRecord = z.infer<typeof ModelVersionRecordSchema>;

/** A Docker image in the registry: the `docker save` archive (content-addressed like a model) and how it runs. */
export const ImageVersionRecordSchema = z
  .object({
    /** The blob is the `docker save` archive: what a transfer delivers and a device checks. */
    ...storedBlob,
    /** The operator's reference, the image ID read from the archive itself (what manifests pin), its platform. */
    image: ImageRefSchema,
    /** Bytes of the layer tars (about what the image takes unpacked). */
    layerBytes: z.number().int().nonnegative(),
    /** How devices run it; null: an image that is installed only (a runtime for models). */
    container: ContainerSpecSchema.nullable(),
  })
  .strict();
export type ImageVersionRecord = z.infer<typeof ImageVersionRecordSchema>;

/**
 * An agent bundle in the registry (`hostManager agent bundle|add`): the tarball (content-addressed like a model)
 * and what its own bundle.json says. `version` is the release number every bundle of one agent version shares,
 * across architectures: it is the signed manifest's version, the devices' anti-rollback counter for the agent.
 */
export const AgentBundleRecordSchema = z
  .object({
    ...storedBlob,
    name: z.literal('edgefleet-agent'),
    agentVersion: AgentBundleInfoSchema.shape.version,
    arch: z.enum(AGENT_ARCHES),
    /** Node.js and the inference runtime inside, from bundle.json. */
    node: z.string(),
    runtime: z.string(),
    /** Signed into the manifest: the new version must report healthy within this, or the device falls back. */
    healthDeadlineS: z.number().int().min(5).max(3600),
  })
  .strict();
export type AgentBundleRecord = z.infer<typeof AgentBundleRecordSchema>;

export const AuditEntrySchema = z
  .object({
    ts: Iso,
    /** 'operator:<id>', 'device:<id>', 'enrolment' or 'controller'. */
    actor: z.string(),
    action: z.string(),
    target: z.string().optional(),
    result: z.enum(['ok', 'error']),
    detail: z.unknown().optional(),
  })
  .strict();
export type AuditEntry = z.infer<typeof AuditEntrySchema>;

// ---------------------------------------------------------------- rollouts

/** A daily maintenance window, `start`-`end` (HH:MM, 24 h) in an IANA time zone; `end` before `start` runs past midnight. */
export const MaintenanceWindowSchema = z
  .object({
    start: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'expected HH:MM'),
    end: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'expected HH:MM'),
    timeZone: z.string().min(1).max(64),
  })
  .strict();
export type MaintenanceWindow = z.infer<typeof MaintenanceWindowSchema>;

/** What a rollout is allowed to do and when it must stop. */
export const RolloutPolicyRecordSchema = z
  .object({
    /** Devices in the first (canary) wave; 0 = no canary wave. */
    canary: z.number().int().min(0),
    /** Cumulative percentages of the target reached after each wave that follows the canary; the last is forced to 100. */
    waves: z.array(z.number()),
    /** Install failures tolerated per wave, as a percentage of the wave's devices (0 = none). */
    maxFailuresPercent: z.number(),
    /** Seconds the switched devices of a wave are watched before the next wave starts. */
    soakS: z.number(),
    /** Error rate (errors / requests) of the new version above which the gate fails, whatever it was before. */
    maxErrorRate: z.number(),
    /** Error rate allowed above the same devices' rate before the switch. */
    maxErrorRateIncrease: z.number(),
    /** p95 latency of the new version divided by the old version's p95 on the same devices above which the gate fails. */
    maxLatencyRatio: z.number(),
    /** p95 latencies under this many milliseconds never fail the gate (noise on tiny models). */
    latencyFloorMs: z.number(),
    /** Requests the switched devices must serve during the soak for the health part of the gate to count; fewer = gate passes on install results alone, noted. */
    minRequests: z.number().int(),
    /** A device offline during its wave is retried when it returns, until this many seconds after the rollout started. */
    offlineDeadlineS: z.number(),
    /** Roll the switched devices back when a gate fails. */
    rollbackOnFailure: z.boolean(),
    /** Deliveries (and so switches) start only inside this daily window; absent = any time. */
    window: MaintenanceWindowSchema.optional(),
  })
  .strict();
export type RolloutPolicy = z.infer<typeof RolloutPolicyRecordSchema>;

export const ROLLOUT_STATUSES = ['running', 'aborted', 'succeeded', 'failed', 'rolled-back'] as const;
export type RolloutStatus = (typeof ROLLOUT_STATUSES)[number];

export const ROLLOUT_DEVICE_STATES = [
  'pending', // not reached yet
  'delivering',
  'switched', // the new version is active
  'failed', // delivery or activation failed
  'waiting', // offline when its wave came; retried when it returns
  'skipped', // still offline at the deadline
  'rolled-back',
] as const;
export type RolloutDeviceState = (typeof ROLLOUT_DEVICE_STATES)[number];

/** Aggregate inference health of some devices for one model version over a time window. */
export const HealthSummarySchema = z
  .object({
    requests: z.number(),
    errors: z.number(),
    errorRate: z.number().nullable(),
    p95Ms: z.number().nullable(),
    samples: z.number(),
  })
  .strict();
export type HealthSummary = z.infer<typeof HealthSummarySchema>;

export const RolloutDeviceSchema = z
  .object({
    id: NameSchema,
    wave: z.number().int().nonnegative(),
    state: z.enum(ROLLOUT_DEVICE_STATES),
    /** The version active before the switch (null = none). */
    previous: VersionSchema.nullable(),
    attempts: z.number().int().nonnegative(),
    switchedAt: Iso.optional(),
    error: ErrorBodySchema.optional(),
    /** Health of the previous version on this device just before the switch. */
    before: HealthSummarySchema.optional(),
  })
  .strict();
export type RolloutDevice = z.infer<typeof RolloutDeviceSchema>;

export const GateResultSchema = z
  .object({
    pass: z.boolean(),
    /** Image rollouts: the switched devices whose container of the new version runs and is not unhealthy at the gate. */
    containers: z.object({ healthy: z.number(), unhealthy: z.number() }).strict().optional(),
    /** Every finding of the gate, for people, in order. */
    reasons: z.array(z.string()),
    /** The findings that failed the gate (a subset of `reasons`); absent in records written before it was kept. */
    failures: z.array(z.string()).optional(),
    install: z.object({ switched: z.number(), failed: z.number(), waiting: z.number() }).strict(),
    before: HealthSummarySchema,
    after: HealthSummarySchema,
  })
  .strict();
export type GateResult = z.infer<typeof GateResultSchema>;

export const RolloutWaveSchema = z
  .object({
    index: z.number().int().nonnegative(),
    /** 'canary' or a cumulative percentage. */
    label: z.string(),
    devices: z.array(NameSchema),
    state: z.enum(['pending', 'delivering', 'soaking', 'passed', 'failed']),
    startedAt: Iso.optional(),
    switchedAt: Iso.optional(),
    soakUntil: Iso.optional(),
    finishedAt: Iso.optional(),
    gate: GateResultSchema.optional(),
  })
  .strict();
export type RolloutWave = z.infer<typeof RolloutWaveSchema>;

/** One term of a selector: a label or a reported fact (arch, runtime, ...) equal or not equal to a value. */
export const SelectorTermSchema = z.object({ key: LabelKeySchema, op: z.enum(['=', '!=']), value: LabelValueSchema }).strict();
export type SelectorTerm = z.infer<typeof SelectorTermSchema>;

export const RolloutTargetSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('device'), name: NameSchema }).strict(),
  z.object({ kind: z.literal('group'), name: NameSchema }).strict(),
  z.object({ kind: z.literal('all') }).strict(),
  /** Every device whose labels and facts match all terms, evaluated again as each wave starts. */
  z.object({ kind: z.literal('selector'), match: z.array(SelectorTermSchema).min(1).max(16) }).strict(),
]);
export type RolloutTarget = z.infer<typeof RolloutTargetSchema>;

export const ARTIFACT_KINDS = ['model', 'image', 'agent'] as const;
export type ArtifactKind = (typeof ARTIFACT_KINDS)[number];

export const RolloutRecordSchema = z
  .object({
    id: NameSchema,
    /** What is rolled out: a model version, or an image version (an app); absent in records written before images. */
    kind: z.enum(ARTIFACT_KINDS).optional(),
    /** The model's name, or the image's (the app on the devices); 'edgefleet-agent' for an agent rollout. */
    model: NameSchema,
    /** The version; for an agent rollout the release number of its bundles. */
    version: VersionSchema,
    /** An agent rollout: the agent version, and the architectures it is for (absent: every one it has a bundle for). */
    agent: z.object({ version: z.string(), arches: z.array(z.enum(AGENT_ARCHES)).min(1).optional() }).strict().optional(),
    target: RolloutTargetSchema,
    policy: RolloutPolicyRecordSchema,
    status: z.enum(ROLLOUT_STATUSES),
    createdAt: Iso,
    updatedAt: Iso,
    createdBy: z.string(),
    /** Why it stopped (failed gate, abort, rollback), in a sentence. */
    reason: z.string().optional(),
    waves: z.array(RolloutWaveSchema),
    devices: byName(RolloutDeviceSchema),
    /** Offline devices are retried until then. */
    deadline: Iso,
    finishedAt: Iso.optional(),
  })
  .strict();
export type RolloutRecord = z.infer<typeof RolloutRecordSchema>;

// ---------------------------------------------------------------- the whole file

export const GroupRecordSchema = z.object({ name: NameSchema, createdAt: z.string(), description: z.string().optional() }).strict();
export type GroupRecord = z.infer<typeof GroupRecordSchema>;

export const OperatorRecordSchema = z.object({ id: NameSchema, tokenHash: z.string(), createdAt: z.string() }).strict();
export type OperatorRecord = z.infer<typeof OperatorRecordSchema>;

export const EnrolmentRecordSchema = z.object({ keyHash: z.string(), createdAt: z.string(), groups: z.array(NameSchema) }).strict();
export type EnrolmentRecord = z.infer<typeof EnrolmentRecordSchema>;

export const FleetStateSchema = z
  .object({
    devices: byName(DeviceRecordSchema),
    groups: byName(GroupRecordSchema),
    /** Model name → its versions, oldest first. */
    models: byName(z.array(ModelVersionRecordSchema)),
    /** The highest version number ever given per model, so a removed number is never reused. */
    modelVersionHighWater: byName(VersionSchema).optional(),
    /** Image name → its versions, oldest first. */
    images: byName(z.array(ImageVersionRecordSchema)).optional(),
    /** The highest version number ever given per image. */
    imageVersionHighWater: byName(VersionSchema).optional(),
    /** Agent bundles, oldest first; the highest release number ever given (a removed one is never reused). */
    agentBundles: z.array(AgentBundleRecordSchema).optional(),
    agentReleaseHighWater: VersionSchema.optional(),
    rollouts: byName(RolloutRecordSchema),
    operators: byName(OperatorRecordSchema),
    /**
     * The sequence number of the last rollback manifest signed: each new one gets a higher number
     * (at least the current time in ms, so a restored older state file still moves forward), and a
     * device refuses a rollback whose number it has already used for that model.
     */
    lastRollbackSeq: z.number().int().nonnegative().optional(),
    /** Enrolment with the fleet provisioning key (off unless the controller runs with --enrolment). */
    enrolment: EnrolmentRecordSchema.optional(),
    /** Newest last; capped at AUDIT_LIMIT entries (oldest dropped). */
    audit: z.array(AuditEntrySchema),
  })
  .strict();
export type FleetState = z.output<typeof FleetStateSchema>;

export const AUDIT_LIMIT = 20_000;

/**
 * The document as it goes to disk. A device's presence and its latest telemetry sample are
 * volatile: they come back from the devices themselves (retained presence, the next sample)
 * and after a restart every device starts offline anyway. Kept out of the file, telemetry
 * never makes it grow or be rewritten, however many devices report how often.
 */
export function durableView(state: FleetState): FleetState {
  const devices = nameRecord<DeviceRecord>();
  for (const [id, d] of Object.entries(state.devices)) devices[id] = d.online || d.telemetry ? { ...d, online: false, telemetry: null } : d;
  return { ...state, devices };
}

export function emptyState(): FleetState {
  return { devices: nameRecord(), groups: nameRecord(), models: nameRecord(), rollouts: nameRecord(), operators: nameRecord(), audit: [] };
}
