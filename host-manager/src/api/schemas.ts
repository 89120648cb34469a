/** The HTTP API's request bodies, each a zod schema; the infer body is the protocol's `infer` params plus a timeout. */
import { z } from 'zod';
import { AGENT_ARCHES, ContainerSpecSchema, NameSchema, ProcessingSchema, VersionSchema, describe, inferParamsSchema } from '@edgefleet/protocol';
import { FleetError } from '@edgefleet/protocol';
import { ARTIFACT_KINDS, LabelKeySchema, LabelValueSchema, LineageSchema } from '../state/schema.js';
import { RolloutPolicySchema } from '../rollouts/policy.js';
import { CheckRequestSchema } from '../models/checks.js';

const TargetSchema = z
  .string()
  .min(1)
  .max(1024)
  .refine((t) => t === 'all' || t.includes('=') || /^(group:)?[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(t), 'expected a device id, group:NAME, all or a selector such as arch=arm64,site=plant-1');

const SshHost = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$|^[0-9A-Fa-f:.]{2,45}$/, 'expected a host name, an IPv4 or an IPv6 address (without brackets)');

/** Where and as whom the controller logs in over SSH (`deploy --via ssh`, `image push --via ssh`). */
const sshLogin = {
  host: SshHost,
  port: z.number().int().min(1).max(65535).optional(),
  username: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$/, 'expected a user name of letters, digits, ".", "_" or "-"'),
  /** A private key file on the controller host (absolute). The key itself is never sent. */
  keyPath: z.string().min(1).max(4096),
  hostKeyFingerprint: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'expected SHA256:<43 base64 characters>, as `ssh-keygen -lf <host key>.pub` prints it').optional(),
};

export const schemas = {
  addDevice: z.object({ id: z.string().min(1), groups: z.array(z.string()).default([]) }).strict(),
  addDevices: z
    .object({
      devices: z.array(z.object({ id: z.string().min(1).max(64), groups: z.array(z.string()).optional() }).strict()).min(1),
      /** Groups every device of the batch joins (besides its own). */
      groups: z.array(z.string()).default([]),
    })
    .strict(),
  removeDevices: z.object({ ids: z.array(z.string().min(1).max(64)).min(1) }).strict(),
  updateDevice: z
    .object({ groups: z.array(NameSchema).max(64).optional(), labels: z.record(LabelKeySchema, LabelValueSchema.nullable()).optional() })
    .strict()
    .refine((b) => b.groups !== undefined || b.labels !== undefined, 'give groups, labels or both'),
  addModelPath: z
    .object({
      path: z.string().min(1),
      name: NameSchema,
      lineage: LineageSchema.optional(),
      processing: ProcessingSchema.optional(),
      minOnnxruntime: z.string().optional(),
      /** How devices check the version before switching (models/checks.ts). */
      check: CheckRequestSchema.optional(),
    })
    .strict(),
  deploy: z
    .object({
      kind: z.enum(ARTIFACT_KINDS).optional(),
      /** Required for a model or an image; an agent rollout is always of 'edgefleet-agent'. */
      model: NameSchema.optional(),
      version: VersionSchema.optional(),
      /** kind 'agent': the agent version, and the architectures (default: every one it has a bundle for). */
      agent: z.object({ version: z.string().min(1).max(64), arches: z.array(z.enum(AGENT_ARCHES)).min(1).optional() }).strict().optional(),
      to: TargetSchema,
      policy: RolloutPolicySchema.optional(),
    })
    .strict()
    .refine((b) => b.kind === 'agent' || b.model !== undefined, { message: 'name the model (or image) to roll out', path: ['model'] })
    .refine((b) => (b.kind === 'agent') === (b.agent !== undefined), { message: 'an agent rollout ({"kind": "agent"}) names the agent: {"agent": {"version": "0.2.0"}}, and only an agent rollout does', path: ['agent'] }),
  infer: inferParamsSchema({ timeoutMs: z.number().int().min(1).max(600_000).optional() }),
  exec: z.object({ to: TargetSchema, command: z.string().min(1), via: z.enum(['command', 'topic']).optional() }).strict(),
  rollback: z.object({ rollout: z.string().min(1).optional(), kind: z.enum(ARTIFACT_KINDS).optional() }).strict(),
  rollbackDevice: z.object({ model: NameSchema }).strict(),
  addImagePath: z
    .object({ path: z.string().min(1), name: NameSchema, reference: z.string().min(1).max(256).optional(), container: ContainerSpecSchema.optional(), imageId: z.string().optional() })
    .strict(),
  imageCommand: z.object({ version: VersionSchema.optional(), to: TargetSchema }).strict(),
  sshDeliver: z
    .object({
      model: NameSchema,
      version: VersionSchema.optional(),
      ...sshLogin,
      remotePath: z.string().min(1).max(4096).optional(),
    })
    .strict(),
  sshImage: z.object({ version: VersionSchema.optional(), ...sshLogin }).strict(),
  enrol: z.object({ id: z.string().min(1).max(64) }).strict(),
};

/** A request body checked against its schema; `invalid_params` with every problem otherwise. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const r = schema.safeParse(body);
  if (!r.success) throw new FleetError('invalid_params', describe(r.error));
  return r.data;
}

/** A whole number from the query string, or the fallback when it is absent. */
export function intParam(value: string | null, what: string, fallback: number): number {
  if (value === null) return fallback;
  if (!/^\d+$/.test(value)) throw new FleetError('invalid_params', `${what} must be a whole number`);
  return Number(value);
}

/** A version in a path: a positive whole number. */
export function versionParam(s: string | undefined): number {
  if (!s || !/^\d+$/.test(s) || Number(s) < 1) throw new FleetError('invalid_params', `version must be a positive whole number, got "${s}"`);
  return Number(s);
}
