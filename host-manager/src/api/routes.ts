/** The HTTP API's routes: each parses its request (schemas.ts) and calls one of the `Operations`. */
import { FleetError } from '@edgefleet/protocol';
import type { Operations } from './contract.js';
import { bearer, route } from './http.js';
import type { Route } from './http.js';
import { imageRoutes } from './image-routes.js';
import { agentRoutes } from './agent-routes.js';
import { intParam, parseBody, schemas, versionParam } from './schemas.js';
import { uploadModel } from './upload.js';
import { uploadSample } from './check-uploads.js';
import { inferRoute } from './infer-route.js';
import { parseTarget } from '../rollouts/target.js';
import { summarize } from '../rollouts/summary.js';

export interface RouteOptions {
  /** The largest model upload, in bytes (--max-model-mb). */
  maxModelBytes: number;
  /** The largest agent bundle upload, in bytes (--max-agent-bundle-mb). */
  maxAgentBundleBytes: number;
}

/** Bytes an enrolment body may have: `{"id": "<64 characters>"}` with room to spare. */
const ENROL_BODY_LIMIT = 4096;

export function apiRoutes(ops: Operations, opts: RouteOptions): Route[] {
  return [...deviceRoutes(ops), ...modelRoutes(ops, opts), ...imageRoutes(ops), ...agentRoutes(ops, opts), ...rolloutRoutes(ops), ...controllerRoutes(ops)];
}

function deviceRoutes(ops: Operations): Route[] {
  return [
    // Enrolment: authenticated by the fleet provisioning key instead of the operator token (404 when off).
    route('POST', '/enrol', async (req, _p, c) => {
      const body = parseBody(schemas.enrol, await c.body(ENROL_BODY_LIMIT));
      const result = await ops.enrol({ id: body.id, key: bearer(req), source: c.source });
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
    route('PATCH', '/api/devices/:id', async (_r, p, c) => {
      const body = parseBody(schemas.updateDevice, await c.body());
      return ops.updateDevice({ id: p['id']!, ...(body.groups ? { groups: body.groups } : {}), ...(body.labels ? { labels: body.labels } : {}), actor: c.actor });
    }),
    route('GET', '/api/devices/:id/telemetry', (_r, p, c) => ops.telemetryHistory({ device: p['id']!, minutes: Math.min(24 * 60, Math.max(1, intParam(c.url.searchParams.get('minutes'), 'minutes', 30))) })),
    route('POST', '/api/devices/:id/rollback', async (_r, p, c) => ops.rollbackDevice({ device: p['id']!, model: parseBody(schemas.rollbackDevice, await c.body()).model, actor: c.actor })),
    route('GET', '/api/devices/:id/logs', (_r, p, c) => ops.logs({ device: p['id']!, lines: Math.min(5000, Math.max(1, intParam(c.url.searchParams.get('lines'), 'lines', 100))) })),
    route('POST', '/api/devices/:id/infer', (req, p, c) => inferRoute(ops, req, p['id']!, c)),
    route('GET', '/api/groups', () => ops.listGroups()),
    route('GET', '/api/reports', (_r, _p, c) => {
      const device = c.url.searchParams.get('device') ?? undefined;
      return ops.deviceReports({ ...(device !== undefined ? { device } : {}), limit: intParam(c.url.searchParams.get('limit'), 'limit', 100) });
    }),
    route('POST', '/api/exec', async (_r, _p, c) => {
      const body = parseBody(schemas.exec, await c.body());
      return ops.exec({ to: parseTarget(body.to), command: body.command, actor: c.actor, ...(body.via ? { via: body.via } : {}) });
    }),
  ];
}

function modelRoutes(ops: Operations, opts: RouteOptions): Route[] {
  return [
    route('GET', '/api/models', (_r, _p, c) => ops.listModels(c.url.searchParams.get('name') ?? undefined)),
    route('POST', '/api/models', async (req, _p, c) => {
      if ((req.headers['content-type'] ?? '').includes('application/octet-stream')) return uploadModel(ops, req, c, opts.maxModelBytes);
      const body = parseBody(schemas.addModelPath, await c.body());
      return ops.addModel({
        file: body.path,
        opts: {
          name: body.name,
          ...(body.lineage ? { lineage: body.lineage } : {}),
          ...(body.processing ? { processing: body.processing } : {}),
          ...(body.minOnnxruntime ? { minOnnxruntime: body.minOnnxruntime } : {}),
          ...(body.check ? { check: body.check } : {}),
        },
        actor: c.actor,
      });
    }, { created: true }),
    route('POST', '/api/samples', (req, _p, c) => uploadSample(ops, req, c), { created: true }),
    route('POST', '/api/expected-outputs', async (_r, _p, c) => ops.addExpected({ json: await c.body(), actor: c.actor }), { created: true }),
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
        ...(body.kind ? { kind: body.kind } : {}),
        model: body.model ?? 'edgefleet-agent',
        ...(body.version !== undefined ? { version: body.version } : {}),
        ...(body.agent ? { agent: body.agent } : {}),
        to: parseTarget(body.to),
        ...(body.policy ? { policy: body.policy } : {}),
        actor: c.actor,
      });
    }, { created: true }),
    route('GET', '/api/rollouts/:id', (_r, p) => ops.showRollout(p['id']!)),
    route('POST', '/api/rollouts/:id/abort', (_r, p, c) => ops.abortRollout(p['id']!, c.actor)),
    route('POST', '/api/rollouts/:id/resume', (_r, p, c) => ops.resumeRollout(p['id']!, c.actor)),
    route('POST', '/api/rollouts/:id/rollback', (_r, p, c) => ops.rollbackRollout(p['id']!, c.actor)),
    route('POST', '/api/rollback', async (_r, _p, c) => {
      const body = parseBody(schemas.rollback, await c.body());
      return ops.rollbackRollout(body.rollout, c.actor, body.kind);
    }),
  ];
}

function controllerRoutes(ops: Operations): Route[] {
  return [
    route('GET', '/health', () => ops.health(), { auth: false }),
    route('GET', '/api/keys', () => ops.keys()),
    route('GET', '/api/audit', (_r, _p, c) => ops.audit(intParam(c.url.searchParams.get('limit'), 'limit', 100))),
  ];
}
