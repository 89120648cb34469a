/**
 * The artifact manifest and its ed25519 signature: who may install what, until when,
 * with which bytes (the security model is in the top-level README).
 * Signing is over a canonical JSON encoding (sorted keys, no spaces), so the
 * same manifest always yields the same bytes on host and device.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { FleetError } from './errors.js';
import { InferBodySchema } from './inference.js';
import type { InferBody } from './inference.js';
import { NAME_PATTERN } from './topics.js';

const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'a lowercase hex sha256');
const Name = z.string().regex(NAME_PATTERN);

/** Image classification: decode, resize, centre-crop, normalise, NCHW; softmax and top-k with labels. */
export const ImageClassificationSchema = z.object({
  kind: z.literal('image-classification'),
  input: z.string(),
  output: z.string().optional(),
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  /** Resize the shorter side to this before the centre crop (default: the crop size). */
  resize: z.number().int().positive().optional(),
  layout: z.enum(['NCHW', 'NHWC']).default('NCHW'),
  /** Pixel values are divided by 255 and then normalised per channel. */
  mean: z.tuple([z.number(), z.number(), z.number()]).default([0.485, 0.456, 0.406]),
  std: z.tuple([z.number(), z.number(), z.number()]).default([0.229, 0.224, 0.225]),
  softmax: z.boolean().default(true),
  topK: z.number().int().positive().default(5),
  labels: z.array(z.string()),
});

/** Text bag-of-words: words to indices, a multi-hot vector, a threshold to a label. */
export const TextBagOfWordsSchema = z.object({
  kind: z.literal('text-bow'),
  input: z.string(),
  output: z.string().optional(),
  vocabularySize: z.number().int().positive(),
  wordIndex: z.record(z.string(), z.number().int().nonnegative()),
  /** What to do with a word not in the index: ignore it, or refuse the request. */
  unknownWords: z.enum(['ignore', 'error']).default('ignore'),
  threshold: z.number().default(0.5),
  /** Apply a sigmoid to the model's output first (set when the model ends in a logit, not a probability). */
  sigmoid: z.boolean().default(false),
  /** [label below threshold, label at or above]. */
  labels: z.tuple([z.string(), z.string()]),
});

export const ProcessingSchema = z.discriminatedUnion('kind', [ImageClassificationSchema, TextBagOfWordsSchema]);
export type Processing = z.infer<typeof ProcessingSchema>;
export type ProcessingInput = z.input<typeof ProcessingSchema>;

/** Same shape as the protocol's Tensor (messages.ts imports this file, so it is repeated here). */
const SampleTensorSchema = z.object({
  dtype: z.string(),
  shape: z.array(z.number().int().nonnegative()).max(16),
  data: z.array(z.union([z.number(), z.string(), z.boolean()])),
});

// ---------------------------------------------------------------- images and containers

/**
 * A Docker image ID: `sha256:` + the sha256 of the image's config JSON (`docker image inspect -f '{{.Id}}'`).
 *
 * This is what a manifest pins, not a registry manifest digest (`RepoDigests`, `name@sha256:…`). A registry
 * digest is the hash of the distribution manifest a registry serves; a `docker save` archive does not carry
 * that document, and `docker load` (no registry involved) can neither reproduce nor check it: a loaded image
 * has no RepoDigests at all. The image ID is reproduced by `docker load` from the archive alone, and it pins
 * every byte of the image: the config lists the sha256 of each uncompressed layer (rootfs.diff_ids), and the
 * engine refuses a layer that does not hash to its entry while it loads.
 */
export const ImageIdSchema = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'an image ID: sha256: and 64 lowercase hex digits');

/** Docker's platform naming (Go's GOARCH): amd64, arm64, arm (with variant v6 or v7), 386, ppc64le, s390x, riscv64. */
export const ImagePlatformSchema = z.object({
  os: z.literal('linux').default('linux'),
  architecture: z.string().regex(/^[a-z0-9]{2,16}$/, 'a Docker architecture name such as amd64, arm64 or arm'),
  variant: z.string().regex(/^v[0-9]{1,2}$/, 'a variant such as v7 or v8').optional(),
});
export type ImagePlatform = z.infer<typeof ImagePlatformSchema>;

export const ImageRefSchema = z.object({
  /** The operator's name for it (name:tag), informative only: the agent tags what it loads edgefleet/<app>:<version>. */
  reference: z.string().min(1).max(256),
  digest: ImageIdSchema,
  /** The image config's platform; the device refuses a manifest whose platform it cannot run before anything is sent. */
  platform: ImagePlatformSchema.optional(),
});
export type ImageRef = z.infer<typeof ImageRefSchema>;

/** An absolute path inside the container, without ".." segments. */
const ContainerPath = z
  .string()
  .max(1024)
  .regex(/^\/[^\0]*$/, 'an absolute path inside the container')
  .refine((p) => !p.split('/').includes('..'), 'no ".." segments');

export const ContainerPortSchema = z.object({
  container: z.number().int().min(1).max(65535),
  protocol: z.enum(['tcp', 'udp']).default('tcp'),
  /** 0 (default): the engine picks a free host port, so a new version can start beside the old one (blue/green); a fixed port forces stop-then-start. */
  host: z.number().int().min(0).max(65535).default(0),
  /** The host address the port is published on: loopback unless the operator opens it. */
  hostIp: z.union([z.ipv4(), z.ipv6()]).default('127.0.0.1'),
});
export type ContainerPort = z.infer<typeof ContainerPortSchema>;

/** Mount sources are named, never host paths: each resolves inside the agent's data directory. */
export const ContainerMountSchema = z.discriminatedUnion('kind', [
  /** The active version's directory of a model in the agent's store (model.onnx, manifest.json), always read-only. */
  z.object({ kind: z.literal('model'), model: Name, target: ContainerPath }),
  /** A directory of this app's own under <dataDir>/containers/volumes/<app>/<name>, kept across versions. */
  z.object({ kind: z.literal('volume'), name: Name, target: ContainerPath, readOnly: z.boolean().default(false) }),
]);
export type ContainerMount = z.infer<typeof ContainerMountSchema>;

const Millis = (min: number, max: number) => z.number().int().min(min).max(max);

export const ContainerHealthSchema = z.discriminatedUnion('kind', [
  /** The image's own HEALTHCHECK; an image without one counts as healthy once it has run `settleMs` without exiting or restarting. */
  z.object({ kind: z.literal('image'), settleMs: Millis(0, 600_000).default(2000) }),
  /** A Docker HEALTHCHECK that replaces the image's (the engine runs `test` inside the container). */
  z.object({
    kind: z.literal('docker'),
    test: z.array(z.string().min(1)).min(1).max(64),
    intervalMs: Millis(100, 3_600_000).default(1000),
    timeoutMs: Millis(100, 3_600_000).default(1000),
    retries: z.number().int().min(1).max(100).default(3),
    startPeriodMs: Millis(0, 3_600_000).default(0),
  }),
  /** An HTTP GET the agent sends to a published port: healthy on a 2xx answer. */
  z.object({
    kind: z.literal('http'),
    port: z.number().int().min(1).max(65535),
    path: z.string().regex(/^\/[\x21-\x7e]*$/, 'a path starting with /').default('/'),
    intervalMs: Millis(50, 60_000).default(250),
  }),
]);
export type ContainerHealth = z.infer<typeof ContainerHealthSchema>;

export const UPDATE_STRATEGIES = ['download-then-replace', 'stop-then-download'] as const;

/** How the agent runs an image (kind 'image'), or the container that serves a model (kind 'model' with `inference`). */
export const ContainerSpecSchema = z.object({
  /** Replaces the image's CMD (and, with `entrypoint`, its ENTRYPOINT). */
  command: z.array(z.string()).max(256).optional(),
  entrypoint: z.array(z.string()).max(64).optional(),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'an environment variable name'), z.string().max(8192)).default({}),
  ports: z.array(ContainerPortSchema).max(64).default([]),
  mounts: z.array(ContainerMountSchema).max(32).default([]),
  restart: z.enum(['no', 'on-failure', 'unless-stopped', 'always']).default('unless-stopped'),
  resources: z
    .object({
      /** Hard memory limit; the engine's minimum is 6 MiB. */
      memoryBytes: z.number().int().min(6 * 1024 * 1024).optional(),
      cpus: z.number().positive().max(1024).optional(),
    })
    .default({}),
  health: ContainerHealthSchema.default({ kind: 'image', settleMs: 2000 }),
  /** A new container not healthy within this long (or one that exits) is stopped and the previous one restarted. */
  healthyWithinMs: Millis(100, 3_600_000).default(60_000),
  update: z
    .object({
      /** download-then-replace: the old container serves while the image arrives; stop-then-download: for devices short of disk. */
      strategy: z.enum(UPDATE_STRATEGIES).default('download-then-replace'),
      /** Images of earlier versions kept for rollback, besides the running one. */
      keepPrevious: z.number().int().min(0).max(20).default(1),
    })
    .default({ strategy: 'download-then-replace', keepPrevious: 1 }),
  /** The container serves a model over the Open Inference Protocol (KServe V2) on HTTP: the agent forwards inference to it. */
  inference: z
    .object({
      protocol: z.literal('oip-http'),
      port: z.number().int().min(1).max(65535),
      /** An image app's model name on its OIP server (default: the app's name); devices route `infer {model: <app>}` to it. */
      model: Name.optional(),
      /** Where the model's version directory is mounted: <modelRoot>/<model>/<version>/model.onnx (Triton's repository layout). */
      modelRoot: ContainerPath.default('/models'),
    })
    .optional(),
});
export type ContainerSpec = z.infer<typeof ContainerSpecSchema>;
export type ContainerSpecInput = z.input<typeof ContainerSpecSchema>;

// ---------------------------------------------------------------- activation checks

/**
 * What the device runs before it switches to a new version: `sample` (the sample request), `zeros` (zeros
 * of the declared shapes, symbolic dimensions 1), `load` (only create the session).
 */
export const CHECK_POLICIES = ['sample', 'zeros', 'load'] as const;
export type CheckPolicy = (typeof CHECK_POLICIES)[number];

/** A sample carried inside the signed manifest is at most this large (its JSON, or its binary body); larger ones go by hash. */
export const SAMPLE_INLINE_MAX_BYTES = 256 * 1024;
/** A sample delivered by hash (`models.sample`) is at most this large. */
export const SAMPLE_MAX_BYTES = 1024 * 1024 * 1024;

/**
 * The sample request: a request body in the format the inference API takes (tensor map or Open Inference
 * Protocol, JSON or binary). Inline as JSON (`body`), inline as a binary body (`base64` + `headerLength`,
 * the Inference-Header-Content-Length), or by hash (`sha256` + `length` [+ `headerLength` when binary]):
 * then the bytes reach the device with the `models.sample` command and are checked against this hash.
 */
export const CheckSampleSchema = z.union([
  z
    .object({ body: InferBodySchema })
    .strict()
    .refine((s) => JSON.stringify(s.body).length <= SAMPLE_INLINE_MAX_BYTES, `an inline sample is at most ${SAMPLE_INLINE_MAX_BYTES} bytes of JSON; send a larger one by sha256 and length`),
  z
    .object({ base64: z.string().max(Math.ceil(SAMPLE_INLINE_MAX_BYTES / 3) * 4), headerLength: z.number().int().nonnegative() })
    .strict(),
  z
    .object({ sha256: Sha256Hex, length: z.number().int().positive().max(SAMPLE_MAX_BYTES), headerLength: z.number().int().nonnegative().optional() })
    .strict(),
]);
export type CheckSample = z.infer<typeof CheckSampleSchema>;

/** Outputs the sample must produce: floats within atol + rtol·|expected| (NaN matches NaN), everything else exactly. */
export const ExpectedOutputsSchema = z
  .object({
    outputs: z.record(z.string(), z.object({ dtype: z.string(), shape: z.array(z.number().int().nonnegative()).max(16), data: z.array(z.unknown()) })),
    atol: z.number().nonnegative().default(1e-4),
    rtol: z.number().nonnegative().default(1e-3),
  })
  .strict()
  .refine((e) => Object.keys(e.outputs).length > 0, 'expected outputs name at least one output');

export const CheckSchema = z
  .object({
    policy: z.enum(CHECK_POLICIES).optional(),
    /** Whether NaN in the outputs is acceptable (some models produce it by design). */
    allowNaN: z.boolean().default(false),
    sample: CheckSampleSchema.optional(),
    expected: ExpectedOutputsSchema.optional(),
  })
  .strict()
  .refine((c) => !(c.policy === 'load' && c.expected), { message: 'expected outputs need a run: use policy sample or zeros, not load', path: ['expected'] });
export type Check = z.infer<typeof CheckSchema>;

export const ManifestSchema = z
  .object({
    kind: z.enum(['model', 'image']),
    name: Name,
    version: z.number().int().positive(),
    sha256: Sha256Hex,
    length: z.number().int().nonnegative(),
    issuedAt: z.string().datetime(),
    expiresAt: z.string().datetime(),
    /** Who may install it; a device must match at least one entry. */
    target: z
      .object({
        devices: z.array(Name).optional(),
        groups: z.array(Name).optional(),
        arch: z.array(z.string()).optional(),
      })
      .refine((t) => (t.devices?.length ?? 0) + (t.groups?.length ?? 0) + (t.arch?.length ?? 0) > 0, 'target names no device, group or arch'),
    chunking: z.object({ size: z.number().int().positive(), sha256: z.array(Sha256Hex) }),
    /** Set only when the operator deliberately signs a version lower than the highest accepted. */
    rollback: z.boolean().default(false),
    /**
     * Makes a rollback manifest single-use: a device installs or activates a version below the
     * highest it accepted only with a sequence number above the last one it used for that model
     * (which it records durably). The controller signs each rollback with a new, higher one.
     */
    rollbackSeq: z.number().int().positive().optional(),
    requires: z
      .object({
        opset: z.number().int().optional(),
        onnxruntime: z.string().optional(),
        memoryBytes: z.number().int().optional(),
      })
      .default({}),
    processing: ProcessingSchema.optional(),
    /** Input tensors for the activation check (the original form; `check.sample` takes any request body). */
    sample: z.record(z.string(), SampleTensorSchema).optional(),
    /** How the device checks this version before switching to it (see CheckSchema). */
    check: CheckSchema.optional(),
    /**
     * kind 'image': the image the archive (`docker save`) holds, pinned by its ID. kind 'model' with a container
     * runtime: the image that serves the model (delivered beforehand by its own image manifest).
     */
    image: ImageRefSchema.optional(),
    /** kind 'image': how the image runs. kind 'model': a container that serves the model (needs `inference`). */
    container: ContainerSpecSchema.optional(),
  })
  .refine((m) => m.chunking.sha256.length === Math.max(1, Math.ceil(m.length / m.chunking.size)), {
    message: 'chunking.sha256 must list one hash per chunk',
    path: ['chunking'],
  })
  .refine((m) => m.kind !== 'image' || m.image !== undefined, { message: "an image manifest pins its image: set image.digest", path: ['image'] })
  .refine((m) => m.kind !== 'model' || m.container === undefined || (m.container.inference !== undefined && m.image !== undefined), {
    message: 'a model served by a container names its image and container.inference (protocol and port)',
    path: ['container'],
  })
  .refine((m) => !(m.sample && m.check?.sample), { message: 'give the sample once: in check.sample (any request body) or in sample, not both', path: ['check', 'sample'] })
  .refine((m) => m.check?.policy !== 'sample' || m.sample !== undefined || m.check.sample !== undefined, {
    message: 'check policy "sample" needs a sample request (check.sample)',
    path: ['check', 'policy'],
  });
export type Manifest = z.infer<typeof ManifestSchema>;
export type ManifestInput = z.input<typeof ManifestSchema>;

export interface ActivationCheck {
  policy: CheckPolicy;
  allowNaN: boolean;
  sample: CheckSample | undefined;
  expected: z.infer<typeof ExpectedOutputsSchema> | undefined;
}

/** The check a device runs for this manifest: `sample` when it carries one, `zeros` otherwise, unless it says. */
export function activationCheck(manifest: Pick<Manifest, 'sample' | 'check'>): ActivationCheck {
  const sample: CheckSample | undefined = manifest.check?.sample ?? (manifest.sample ? { body: { inputs: manifest.sample as InferBody['inputs'] } as InferBody } : undefined);
  return {
    policy: manifest.check?.policy ?? (sample ? 'sample' : 'zeros'),
    allowNaN: manifest.check?.allowNaN ?? false,
    sample,
    expected: manifest.check?.expected,
  };
}

export const SignedManifestSchema = z.object({
  manifest: z.unknown(),
  keyId: z.string().regex(/^[0-9a-f]{16}$/),
  signature: z.string().min(1),
});
export type SignedManifest = z.infer<typeof SignedManifestSchema>;

/** Sorted keys, no whitespace: the bytes that are signed. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
        .map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

export interface FleetKeyPair {
  privateKeyPem: string;
  publicKeyPem: string;
}

export function generateFleetKeys(): FleetKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** A short fingerprint of a public key, so a device can tell which key signed a manifest. */
export function keyId(publicKey: string | KeyObject): string {
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  return createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

export function signManifest(manifest: ManifestInput, privateKeyPem: string): SignedManifest {
  const parsed = ManifestSchema.parse(manifest);
  const privateKey = createPrivateKey(privateKeyPem);
  const signature = sign(null, Buffer.from(canonicalJson(parsed)), privateKey).toString('base64');
  return { manifest: parsed, keyId: keyId(createPublicKey(privateKey)), signature };
}

export type ManifestCheck = { ok: true; manifest: Manifest } | { ok: false; code: 'bad_signature' | 'invalid'; reason: string };

/** Verifies the signature over the canonical bytes, then the manifest's shape. Nothing unsigned gets parsed further. */
export function verifyManifest(signed: SignedManifest, publicKeyPem: string): ManifestCheck {
  const publicKey = createPublicKey(publicKeyPem);
  if (signed.keyId !== keyId(publicKey)) {
    return { ok: false, code: 'bad_signature', reason: `signed by key ${signed.keyId}, but this device trusts key ${keyId(publicKey)}` };
  }
  let good = false;
  try {
    good = verify(null, Buffer.from(canonicalJson(signed.manifest)), publicKey, Buffer.from(signed.signature, 'base64'));
  } catch {
    good = false; // a malformed signature is simply a bad one
  }
  if (!good) return { ok: false, code: 'bad_signature', reason: 'the manifest signature does not verify with the fleet key' };
  const parsed = ManifestSchema.safeParse(signed.manifest);
  if (!parsed.success) return { ok: false, code: 'invalid', reason: `signed manifest is malformed: ${parsed.error.issues[0]?.message}` };
  return { ok: true, manifest: parsed.data };
}

/** A verified manifest, or the FleetError that says why not: `bad_signature`, or `invalid_params` when it is malformed. */
export function verifiedManifest(signed: SignedManifest, publicKeyPem: string): Manifest {
  const check = verifyManifest(signed, publicKeyPem);
  if (!check.ok) throw new FleetError(check.code === 'bad_signature' ? 'bad_signature' : 'invalid_params', check.reason);
  return check.manifest;
}

export interface DeviceIdentity {
  id: string;
  groups: readonly string[];
  arch: string;
}

/** Whether the manifest names this device, one of its groups, or its architecture. */
export function targetsDevice(manifest: Manifest, device: DeviceIdentity): boolean {
  const t = manifest.target;
  return (
    (t.devices?.includes(device.id) ?? false) ||
    (t.groups?.some((g) => device.groups.includes(g)) ?? false) ||
    (t.arch?.includes(device.arch) ?? false)
  );
}

/** Splits a file into chunk hashes, as the manifest's `chunking` field wants them. */
export function chunkHashes(bytes: Uint8Array, chunkSize: number): string[] {
  const hashes: string[] = [];
  for (let offset = 0; offset < bytes.length || hashes.length === 0; offset += chunkSize) {
    hashes.push(createHash('sha256').update(bytes.subarray(offset, offset + chunkSize)).digest('hex'));
  }
  return hashes;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export interface AcceptanceContext {
  device: DeviceIdentity;
  /** The highest version of this model the device has ever accepted (persisted), or 0. */
  highestAccepted: number;
  /** The highest rollback sequence number the device has used for this model (persisted), or 0. */
  lastRollbackSeq?: number;
  now: Date;
}

/** Whether installing or activating this manifest moves the model below the highest version accepted: a rollback, which uses up its sequence number. */
export function isRollbackBelow(manifest: Manifest, highestAccepted: number): boolean {
  return manifest.version < highestAccepted;
}

/**
 * Whether a verified manifest may be installed on this device: target, expiry,
 * and the anti-rollback rule. Pure; the agent persists `highestAccepted`.
 */
export function checkAcceptance(manifest: Manifest, ctx: AcceptanceContext): FleetError | undefined {
  if (!targetsDevice(manifest, ctx.device)) {
    return new FleetError('wrong_target', `${manifest.name}@${manifest.version} is not meant for device ${ctx.device.id}`);
  }
  if (Date.parse(manifest.expiresAt) <= ctx.now.getTime()) {
    return new FleetError('expired', `the manifest for ${manifest.name}@${manifest.version} expired at ${manifest.expiresAt}; sign a fresh one`);
  }
  if (!isRollbackBelow(manifest, ctx.highestAccepted)) return undefined;
  const what = `${manifest.name}@${manifest.version}`;
  if (!manifest.rollback) {
    return new FleetError('lower_version', `${what} is lower than version ${ctx.highestAccepted} already accepted; sign an explicit rollback to install it`);
  }
  if (manifest.rollbackSeq === undefined) {
    return new FleetError('lower_version', `the rollback manifest for ${what} carries no sequence number (rollbackSeq), so it could be replayed; ask the controller for a fresh rollback`);
  }
  const last = ctx.lastRollbackSeq ?? 0;
  if (manifest.rollbackSeq <= last) {
    return new FleetError(
      'replayed',
      `the rollback manifest for ${what} has sequence number ${manifest.rollbackSeq}, and this device already used ${last} for ${manifest.name}: a rollback manifest works once; ask the controller for a fresh rollback`,
    );
  }
  return undefined;
}
