/** The HTTP API's routes: each parses its request (schemas.ts) and calls one of the `Operations`. */
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { FleetError } from '@edgefleet/protocol';
import type { Operations } from './contract.js';
import { bearer, route } from './http.js';
import type { RequestContext, Route } from './http.js';
import { intParam, parseBody, schemas, versionParam } from './schemas.js';
import { parseTarget } from '../rollouts/target.js';
import { summarize } from '../rollouts/summary.js';

export function apiRoutes(ops: Operations): Route[] {
  return [...deviceRoutes(ops), ...modelRoutes(ops), ...rolloutRoutes(ops), ...controllerRoutes(ops)];
}

function deviceRoutes(ops: Operations): Route[] {
  return [
    // Enrolment: authenticated by the fleet provisioning key instead of the operator token (404 when off).
    route('POST', '/enrol', async (req, _p, c) => {
      const body = parseBody(schemas.enrol, await c.body());
      const result = await ops.enrol({ id: body.id, key: bearer(req) });
      if (!result) throw new FleetError('unauthorized', 'wrong or missing provisioning key: send Authorization: Bearer <enrolment key>');
      return result;
    }, { auth: false, created: true }),
    route('GET', '/api/devices', () => ops.listDevices()),
    route('POST', '/api/devices', async (_req, _p, c) => {
      const body = parseBody(schemas.addDevice, await c.body());
      return ops.addDevice({ id: body.id, groups: body.groups, actor: c.actor });
    }, { created: true }),
    route('POST', '/api/devices/batch', async (_req, _p, c) => {
      const body = parseBody(schemas.addDevices, await c.body());
      return ops.addDevices({ devices: body.devices.map((d) => ({ id: d.id, groups: [...body.groups, ...(d.groups ?? [])] })), actor: c.actor });
    }, { created: true }),
    route('POST', '/api/devices/batch-remove', async (_req, _p, c) => ops.removeDevices({ ids: parseBody(schemas.removeDevices, await c.body()).ids, actor: c.actor })),
    route('GET', '/api/devices/:id', (_r, p) => ops.showDevice(p['id']!)),
    route('DELETE', '/api/devices/:id', (_r, p, c) => ops.removeDevice({ id: p['id']!, actor: c.actor })),
    route('GET', '/api/devices/:id/logs', (_r, p, c) => ops.logs({ device: p['id']!, lines: Math.min(5000, Math.max(1, intParam(c.url.searchParams.get('lines'), 'lines', 100))) })),
    route('POST', '/api/devices/:id/infer', async (_r, p, c) => {
      const { timeoutMs, ...params } = parseBody(schemas.infer, await c.body());
      return ops.infer({ device: p['id']!, params, actor: c.actor, ...(timeoutMs ? { timeoutMs } : {}) });
    }),
    route('GET', '/api/groups', () => ops.listGroups()),
    route('POST', '/api/exec', async (_r, _p, c) => {
      const body = parseBody(schemas.exec, await c.body());
      return ops.exec({ to: parseTarget(body.to), command: body.command, actor: c.actor, ...(body.via ? { via: body.via } : {}) });
    }),
  ];
}

function modelRoutes(ops: Operations): Route[] {
  return [
    route('GET', '/api/models', (_r, _p, c) => ops.listModels(c.url.searchParams.get('name') ?? undefined)),
    route('POST', '/api/models', async (req, _p, c) => {
      if ((req.headers['content-type'] ?? '').includes('application/octet-stream')) return uploadModel(ops, req, c);
      const body = parseBody(schemas.addModelPath, await c.body());
      return ops.addModel({
        file: body.path,
        opts: { name: body.name, ...(body.lineage ? { lineage: body.lineage } : {}), ...(body.processing ? { processing: body.processing } : {}), ...(body.minOnnxruntime ? { minOnnxruntime: body.minOnnxruntime } : {}) },
        actor: c.actor,
      });
    }, { created: true }),
    route('GET', '/api/models/:name', (_r, p) => ops.showModel(p['name']!)),
    route('GET', '/api/models/:name/:version', (_r, p) => ops.showModel(p['name']!, versionParam(p['version']))),
    route('DELETE', '/api/models/:name/:version', (_r, p, c) => ops.removeModel({ name: p['name']!, version: versionParam(p['version']), actor: c.actor })),
    route('POST', '/api/deliveries/ssh', async (_r, _p, c) => {
      const { version: v, port, remotePath, hostKeyFingerprint, ...body } = parseBody(schemas.sshDeliver, await c.body());
      return ops.deliverSsh({
        ...body,
        ...(v !== undefined ? { version: v } : {}),
        ...(port !== undefined ? { port } : {}),
        ...(remotePath !== undefined ? { remotePath } : {}),
        ...(hostKeyFingerprint !== undefined ? { hostKeyFingerprint } : {}),
        actor: c.actor,
      });
    }),
  ];
}

function rolloutRoutes(ops: Operations): Route[] {
  return [
    route('GET', '/api/rollouts', () => ops.listRollouts().map(summarize)),
    route('POST', '/api/rollouts', async (_r, _p, c) => {
      const body = parseBody(schemas.deploy, await c.body());
      return ops.deploy({
        model: body.model,
        ...(body.version !== undefined ? { version: body.version } : {}),
        to: parseTarget(body.to),
        ...(body.policy ? { policy: body.policy } : {}),
        actor: c.actor,
      });
    }, { created: true }),
    route('GET', '/api/rollouts/:id', (_r, p) => ops.showRollout(p['id']!)),
    route('POST', '/api/rollouts/:id/abort', (_r, p, c) => ops.abortRollout(p['id']!, c.actor)),
    route('POST', '/api/rollouts/:id/resume', (_r, p, c) => ops.resumeRollout(p['id']!, c.actor)),
    route('POST', '/api/rollouts/:id/rollback', (_r, p, c) => ops.rollbackRollout(p['id']!, c.actor)),
    route('POST', '/api/rollback', async (_r, _p, c) => ops.rollbackRollout(parseBody(schemas.rollback, await c.body()).rollout, c.actor)),
  ];
}

function controllerRoutes(ops: Operations): Route[] {
  return [
    route('GET', '/health', () => ops.health(), { auth: false }),
    route('GET', '/api/keys', () => ops.keys()),
    route('GET', '/api/audit', (_r, _p, c) => ops.audit(intParam(c.url.searchParams.get('limit'), 'limit', 100))),
  ];
}

/** `POST /api/models?name=NAME` with the file as the body (lineage and processing as base64 JSON headers). */
async function uploadModel(ops: Operations, req: IncomingMessage, c: RequestContext): Promise<unknown> {
  const name = c.url.searchParams.get('name');
  if (!name) throw new FleetError('invalid_params', 'give the model a name: POST /api/models?name=NAME');
  const header = (h: string): unknown => {
    const v = req.headers[h];
    if (typeof v !== 'string') return undefined;
    try {
      return JSON.parse(Buffer.from(v, 'base64').toString('utf8'));
    } catch {
      throw new FleetError('bad_request', `${h} must be base64 of JSON`);
    }
  };
  const lineage = header('x-model-lineage');
  const processing = header('x-model-processing');
  const dir = join(ops.dataDir, 'uploads');
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `${randomBytes(8).toString('hex')}.onnx`);
  try {
    await pipeline(req, createWriteStream(tmp, { mode: 0o600 }));
    return await ops.addModel({
      file: tmp,
      opts: { name, ...(lineage ? { lineage: lineage as never } : {}), ...(processing ? { processing: processing as never } : {}) },
      actor: c.actor,
    });
  } finally {
    await rm(tmp, { force: true });
  }
}
