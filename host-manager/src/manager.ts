/**
 * The controller: `createManager(options)` connects to the broker (or starts
 * the embedded one in this process), learns the fleet, keeps the state file as
 * its only writer, runs rollouts and serves the HTTP API. Every operator action
 * goes through one of the operations below; the HTTP API, the CLI and the
 * console are only ways of calling them.
 */
import { mkdir, realpath, rm } from 'node:fs/promises';
import { homedir, networkInterfaces } from 'node:os';
import { join, resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { createBroker } from '@edgefleet/broker';
import type { RunningBroker } from '@edgefleet/broker';
import { FleetError, LegacyCommandSchema, assertName, toErrorBody, topics } from '@edgefleet/protocol';
import type { CommandParams, CommandResult, ErrorBody, LegacyCommand } from '@edgefleet/protocol';
import { openState, appendAudit } from './state.js';
import type { AuditEntry, DeviceRecord, FleetDb, ModelVersionRecord, RolloutTarget } from './state.js';
import { createRequester } from './requester.js';
import type { Requester } from './requester.js';
import { loadOrCreateFleetKeys } from './keys.js';
import type { FleetKeys } from './keys.js';
import { createRegistry } from './registry.js';
import type { AddOptions, Registry } from './registry.js';
import { Fleet } from './fleet.js';
import { createMetrics } from './metrics.js';
import type { Metrics } from './metrics.js';
import { Rollouts } from './rollout.js';
import type { CreateRolloutInput, DeliverFn, RollbackFn } from './rollout.js';
import { ensureEnrolmentKey, ensureOperator, provisionDevice, stateCredentials, DEFAULT_OPERATOR } from './provisioning.js';
import { verifySecretAsync, writeFileAtomic } from '@edgefleet/node-io';
import type { ProvisionResult } from './provisioning.js';
import { makeDeliver, makeRollback } from './delivery.js';
import { startApi } from './api.js';
import { deliverViaSsh, readPrivateKeyFile } from './ssh.js';
import type { RunningApi } from './api.js';

export const DEFAULT_MQTT_PORT = 1883;
export const DEFAULT_MQTT_WS_PORT = 8083;
export const DEFAULT_HTTP_PORT = 7420;
export const CONTROLLER_FILE = 'controller.json';

export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env['EDGEFLEET_DATA'] ?? join(homedir(), '.edgefleet'));
}

export interface ManagerOptions {
  dataDir: string;
  /** An external broker (IP, host:port or URL). Omitted: the embedded broker starts in this process. */
  broker?: string | undefined;
  /** Embedded broker listeners. */
  mqttHost?: string;
  mqttPort?: number;
  /** MQTT over WebSocket for the embedded broker; false = off. */
  mqttWsPort?: number | false;
  httpHost?: string;
  httpPort?: number;
  operatorId?: string;
  /** Credentials for an external broker (defaults: the operator id and token). */
  brokerUsername?: string | undefined;
  brokerPassword?: string | undefined;
  /** The original plain-text command topic; '' = off. Default 'hello'. */
  legacyTopic?: string;
  /** The broker URL devices are told to use (default: derived from the listener). */
  advertiseUrl?: string | undefined;
  logger?: Logger;
  /** Rollout executor tick (tests). */
  tickMs?: number;
  /** Default request timeout in ms for commands sent to devices. */
  requestTimeoutMs?: number;
  /** Enrolment with a fleet provisioning key (POST /enrol); off by default. Enrolled devices join `groups`. */
  enrolment?: { groups?: string[] } | false;
  /** Transfer tuning passed to deliverModel. */
  chunkSize?: number;
  window?: number;
}

export interface Manager {
  dataDir: string;
  /** Base URL of the HTTP API, e.g. http://127.0.0.1:7420 */
  url: string;
  /** Where the controller's MQTT client is connected. */
  brokerUrl: string;
  /** What devices are told to use. */
  advertisedBrokerUrl: string;
  broker: RunningBroker | null;
  operator: { id: string; token: string; created: boolean };
  /** The provisioning key when enrolment is on (`created`: made now, print it once). */
  enrolment: { key: string; created: boolean } | null;
  keys: FleetKeys;
  db: FleetDb;
  fleet: Fleet;
  rollouts: Rollouts;
  registry: Registry;
  ops: Operations;
  metrics: Metrics;
  close(): Promise<void>;
}

/** `10.0.0.5`, `10.0.0.5:1884`, `mqtt://host:1883`, `ws://host:8083` → a URL. */
export function brokerUrlOf(text: string): string {
  if (/^[a-z]+:\/\//i.test(text)) return text;
  if (/:\d+$/.test(text)) return `mqtt://${text}`;
  return `mqtt://${text}:${DEFAULT_MQTT_PORT}`;
}

function lanAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

export async function createManager(options: ManagerOptions): Promise<Manager> {
  const log = options.logger ?? pino({ name: 'hostManager' }, pino.destination(2));
  const dataDir = resolve(options.dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const db = await openState(join(dataDir, 'state.json'));
  const keys = await loadOrCreateFleetKeys(dataDir);
  const operator = await ensureOperator(db, dataDir, options.operatorId ?? DEFAULT_OPERATOR);
  const enrolment = options.enrolment ? await ensureEnrolmentKey(db, dataDir, options.enrolment.groups ?? []) : null;
  const legacyTopic = options.legacyTopic ?? 'hello';
  const metrics = createMetrics();

  let broker: RunningBroker | null = null;
  let brokerUrl: string;
  let advertised: string;
  if (options.broker === undefined) {
    const host = options.mqttHost ?? '0.0.0.0';
    broker = await createBroker({
      credentials: stateCredentials(db),
      tcp: { host, port: options.mqttPort ?? DEFAULT_MQTT_PORT },
      ...(options.mqttWsPort === false ? {} : { ws: { host, port: options.mqttWsPort ?? DEFAULT_MQTT_WS_PORT } }),
      ...(legacyTopic ? { legacyTopic } : {}),
      logger: log,
    });
    brokerUrl = `mqtt://127.0.0.1:${broker.ports.tcp}`;
    const advHost = host === '0.0.0.0' || host === '::' ? lanAddress() : host;
    advertised = options.advertiseUrl ?? `mqtt://${advHost}:${broker.ports.tcp}`;
  } else {
    brokerUrl = brokerUrlOf(options.broker);
    advertised = options.advertiseUrl ?? brokerUrl;
  }

  const clientId = `${options.brokerUsername ?? operator.id}-controller-${randomBytes(3).toString('hex')}`;
  log.info({ broker: brokerUrl }, `Connecting to broker at ${brokerUrl}`);
  const client: MqttClient = await mqtt.connectAsync(brokerUrl, {
    clientId,
    username: options.brokerUsername ?? operator.id,
    password: options.brokerPassword ?? operator.token,
    protocolVersion: 4,
    clean: true,
    reconnectPeriod: 2000,
    connectTimeout: 10_000,
  }).catch(async (error: Error) => {
    await broker?.close();
    throw new FleetError('unavailable', `cannot connect to the broker at ${brokerUrl}: ${error.message}; check the address and the operator credentials`);
  });
  client.on('error', (error) => log.warn({ err: error.message }, 'broker connection error'));
  client.on('offline', () => log.warn('lost the broker connection; reconnecting'));
  client.on('connect', () => log.info('Connected'));
  log.info({ clientId }, 'Connected');

  const requester = await createRequester(client);
  const fleet = new Fleet({ mqtt: client, db, logger: log.child({ component: 'fleet' }), metrics, discover: broker === null });
  await fleet.start();
  const registry = createRegistry(db, dataDir);
  const timeoutMs = options.requestTimeoutMs ?? 10_000;
  const deliver: DeliverFn = makeDeliver({
    mqtt: client,
    requester,
    registry,
    keys,
    db,
    ...(options.chunkSize !== undefined ? { chunkSize: options.chunkSize } : {}),
    ...(options.window !== undefined ? { window: options.window } : {}),
    onPhase: (phase, ms) => metrics.deliveryPhase.observe({ phase }, ms / 1000),
  });
  const rollback: RollbackFn = makeRollback({ requester, registry, keys, timeoutMs });
  const rollouts = new Rollouts({ db, fleet, deliver, rollback, logger: log, metrics, ...(options.tickMs ? { tickMs: options.tickMs } : {}) });
  const ops = createOperations({ db, fleet, registry, rollouts, requester, client, keys, log, legacyTopic, advertised, broker, dataDir, timeoutMs, enrolmentOn: enrolment !== null });

  const api = await startApi({
    ops,
    db,
    fleet,
    metrics,
    logger: log.child({ component: 'api' }),
    host: options.httpHost ?? '127.0.0.1',
    port: options.httpPort ?? DEFAULT_HTTP_PORT,
  });
  const controllerFile = join(dataDir, CONTROLLER_FILE);
  await writeFileAtomic(
    controllerFile,
    JSON.stringify({ pid: process.pid, url: api.url, broker: brokerUrl, advertisedBroker: advertised, mqtt: broker?.ports ?? null, startedAt: new Date().toISOString() }, null, 1),
  );
  rollouts.resumeAll();
  log.info({ url: api.url, broker: brokerUrl }, 'controller ready');

  let closed = false;
  return {
    dataDir,
    url: api.url,
    brokerUrl,
    advertisedBrokerUrl: advertised,
    broker,
    operator,
    enrolment,
    keys,
    db,
    fleet,
    rollouts,
    registry,
    ops,
    metrics,
    async close() {
      if (closed) return;
      closed = true;
      await api.close();
      await rollouts.close();
      await fleet.stop();
      requester.close();
      await client.endAsync().catch(() => undefined);
      await broker?.close();
      await db.write();
      await rm(controllerFile, { force: true });
    },
  };
}

// ---------------------------------------------------------------- operations

export type Operations = ReturnType<typeof createOperations>;

/** A model copied to a device over SSH (`deploy --via ssh`). */
export interface SshDeliveryView {
  model: string;
  version: number;
  target: { username: string; host: string; port: number };
  remotePath: string;
  sha256: string;
  bytes: number;
  seconds: number;
  hostKeyPinned: boolean;
}

/** Where `deploy --via ssh` puts a model when no remote path is given (home of the login user on the device). */
export function defaultSshRemotePath(model: string, version: number): string {
  return `~/models/${model}/${version}/model.onnx`;
}

export interface ExecResult {
  device: string;
  ok: boolean;
  message?: string;
  error?: ErrorBody;
}


function publicDevice(d: DeviceRecord): Omit<DeviceRecord, 'tokenHash'> & { provisioned: boolean } {
  const { tokenHash, ...rest } = d;
  return { ...rest, provisioned: d.provisioned ?? tokenHash !== '' };
}

function createOperations(ctx: {
  db: FleetDb;
  fleet: Fleet;
  registry: Registry;
  rollouts: Rollouts;
  requester: Requester;
  client: MqttClient;
  keys: FleetKeys;
  log: Logger;
  legacyTopic: string;
  advertised: string;
  broker: RunningBroker | null;
  dataDir: string;
  timeoutMs: number;
  enrolmentOn: boolean;
}) {
  const { db, fleet, registry, rollouts, requester } = ctx;

  async function audit(entry: Omit<AuditEntry, 'ts'>): Promise<void> {
    const full = appendAudit(db.data, entry);
    fleet.emitFeed({ type: 'audit', entry: full });
    await db.write();
  }

  /** Creates a device's credential (by the operator or by enrolment); a bad id or group is the caller's error. */
  async function provision(id: string, groups: string[]): Promise<ProvisionResult> {
    try {
      return await provisionDevice(db, {
        id,
        groups,
        brokerUrl: ctx.advertised,
        fleetPublicKeyPem: ctx.keys.publicKeyPem,
        legacyTopic: ctx.legacyTopic || undefined,
      });
    } catch (error) {
      if (error instanceof TypeError) throw new FleetError('invalid_params', error.message);
      throw error;
    }
  }

  function device(id: string): DeviceRecord {
    const d = db.data.devices[id];
    if (!d) throw new FleetError('not_found', `no device ${id}; see \`hostManager devices list\``);
    return d;
  }

  function membersOf(target: RolloutTarget): DeviceRecord[] {
    const all = Object.values(db.data.devices);
    if (target.kind === 'all') return all;
    if (target.kind === 'device') return [device(target.name)];
    const members = all.filter((d) => d.groups.includes(target.name));
    if (members.length === 0) throw new FleetError('not_found', `group ${target.name} has no devices; see \`hostManager groups\``);
    return members;
  }

  return {
    health() {
      const all = Object.values(db.data.devices);
      return {
        ok: ctx.client.connected,
        broker: { connected: ctx.client.connected, embedded: ctx.broker !== null, url: ctx.advertised },
        devices: { total: all.length, online: all.filter((d) => d.online).length },
        rollouts: { running: rollouts.list().filter((r) => r.status === 'running').length },
      };
    },

    listDevices() {
      return Object.values(db.data.devices)
        .sort((a, b) => (a.id < b.id ? -1 : 1))
        .map(publicDevice);
    },
    showDevice(id: string) {
      return publicDevice(device(id));
    },
    async addDevice(args: { id: string; groups: string[]; actor: string }): Promise<ProvisionResult> {
      const result = await provision(args.id, args.groups);
      fleet.admitDevice(args.id);
      await audit({ actor: args.actor, action: 'device.add', target: args.id, result: 'ok', detail: { groups: result.device.groups } });
      return result;
    },
    /**
     * A new device exchanges the fleet provisioning key for its own credential.
     * Returns undefined when the key is wrong (the API answers 401 without saying more).
     */
    async enrol(args: { id: string; key: string | undefined }): Promise<ProvisionResult | undefined> {
      const enrolment = db.data.enrolment;
      if (!ctx.enrolmentOn || !enrolment) throw new FleetError('not_found', 'enrolment is off on this controller; ask the operator to provision the device (devices add)');
      if (!args.key || args.key.length > 512 || !(await verifySecretAsync(args.key, enrolment.keyHash))) {
        appendAudit(db.data, { actor: 'enrolment', action: 'device.enrol', target: args.id, result: 'error', detail: { reason: 'wrong provisioning key' } });
        await db.write();
        return undefined;
      }
      const result = await provision(args.id, enrolment.groups);
      result.device.enrolled = true;
      fleet.admitDevice(args.id);
      await audit({ actor: 'enrolment', action: 'device.enrol', target: args.id, result: 'ok', detail: { groups: result.device.groups } });
      return result;
    },
    async removeDevice(args: { id: string; actor: string }) {
      device(args.id);
      delete db.data.devices[args.id];
      fleet.forgetDevice(args.id);
      await audit({ actor: args.actor, action: 'device.remove', target: args.id, result: 'ok' });
      // Its credential is gone: disconnect it now and clear its retained presence.
      const aedesClients = (ctx.broker?.aedes as unknown as { clients?: Record<string, { close(): void } | undefined> } | undefined)?.clients;
      aedesClients?.[args.id]?.close();
      ctx.client.publish(topics.device(args.id, 'status'), '', { qos: 1, retain: true });
      return { removed: args.id };
    },

    listGroups() {
      const groups = new Map<string, { name: string; devices: string[]; online: number }>();
      for (const g of Object.values(db.data.groups)) groups.set(g.name, { name: g.name, devices: [], online: 0 });
      for (const d of Object.values(db.data.devices)) {
        for (const g of d.groups) {
          const entry = groups.get(g) ?? { name: g, devices: [], online: 0 };
          entry.devices.push(d.id);
          if (d.online) entry.online += 1;
          groups.set(g, entry);
        }
      }
      return [...groups.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
    },

    listModels(name?: string): ModelVersionRecord[] {
      return registry.list(name);
    },
    showModel(name: string, version?: number) {
      const rec = registry.require(name, version);
      const deployed = Object.values(db.data.devices)
        .filter((d) => d.info?.models.some((m) => m.name === name && m.version === rec.version))
        .map((d) => d.id);
      return { ...rec, versions: registry.list(name).map((v) => v.version), activeOn: deployed };
    },
    async addModel(args: { file: string; opts: AddOptions; actor: string }) {
      try {
        const rec = await registry.add(args.file, args.opts);
        await audit({ actor: args.actor, action: 'model.add', target: `${rec.name}@${rec.version}`, result: 'ok', detail: { sha256: rec.sha256, created: rec.created } });
        return rec;
      } catch (error) {
        await audit({ actor: args.actor, action: 'model.add', target: args.opts.name, result: 'error', detail: toErrorBody(error) });
        throw error;
      }
    },
    async removeModel(args: { name: string; version: number; actor: string }) {
      registry.require(args.name, args.version);
      const running = rollouts.list().find((r) => r.status === 'running' && r.model === args.name && r.version === args.version);
      if (running) throw new FleetError('conflict', `rollout ${running.id} is delivering ${args.name}@${args.version}; abort it first`);
      const result = await registry.remove(args.name, args.version);
      await audit({ actor: args.actor, action: 'model.remove', target: `${args.name}@${args.version}`, result: 'ok' });
      return result;
    },

    /**
     * Copies a registry version to a device that runs no agent, over SSH: upload,
     * sha256 checked on the device, atomic rename (ssh.ts). The private key is read
     * here, on the controller host, from `keyPath`; it is never logged, audited or
     * returned.
     */
    async deliverSsh(args: {
      model: string;
      version?: number;
      host: string;
      port?: number;
      username: string;
      keyPath: string;
      remotePath?: string;
      hostKeyFingerprint?: string;
      actor: string;
    }): Promise<SshDeliveryView> {
      const port = args.port ?? 22;
      const target = `ssh:${args.username}@${args.host.includes(':') ? `[${args.host}]` : args.host}:${port}`;
      const rec = registry.require(args.model, args.version);
      const remotePath = args.remotePath ?? defaultSshRemotePath(rec.name, rec.version);
      const detail = { model: rec.name, version: rec.version, remotePath, hostKeyPinned: args.hostKeyFingerprint !== undefined };
      try {
        // The controller's own secrets are never used as SSH keys.
        const keysDir = resolve(ctx.dataDir, 'keys');
        const real = await realpath(args.keyPath).catch(() => resolve(args.keyPath));
        const realKeysDir = await realpath(keysDir).catch(() => keysDir);
        if (real === realKeysDir || real.startsWith(realKeysDir + sep)) {
          throw new FleetError('invalid_params', `${args.keyPath} is one of the controller's own keys; give an SSH key made for the device (ssh-keygen -t ed25519)`);
        }
        const privateKey = await readPrivateKeyFile(args.keyPath);
        const r = await deliverViaSsh({
          host: args.host,
          port,
          username: args.username,
          privateKey,
          file: registry.blobPath(rec),
          remotePath,
          sha256: rec.sha256,
          ...(args.hostKeyFingerprint ? { hostKeyFingerprint: args.hostKeyFingerprint } : {}),
        });
        const view: SshDeliveryView = {
          model: rec.name,
          version: rec.version,
          target: { username: args.username, host: args.host, port },
          remotePath: r.remotePath,
          sha256: r.sha256,
          bytes: r.bytes,
          seconds: r.ms / 1000,
          hostKeyPinned: detail.hostKeyPinned,
        };
        await audit({ actor: args.actor, action: 'model.deliver.ssh', target, result: 'ok', detail: { ...detail, remotePath: r.remotePath, sha256: r.sha256, bytes: r.bytes, seconds: view.seconds } });
        return view;
      } catch (error) {
        await audit({ actor: args.actor, action: 'model.deliver.ssh', target, result: 'error', detail: { ...detail, error: toErrorBody(error) } });
        throw error;
      }
    },

    async deploy(input: CreateRolloutInput) {
      return rollouts.create(input, (model, version) => registry.require(model, version).version);
    },
    listRollouts() {
      return rollouts.list();
    },
    showRollout(id: string) {
      const r = rollouts.get(id);
      const progress = rollouts.progress.get(id);
      return { ...r, progress: progress ? Object.fromEntries(progress) : {} };
    },
    abortRollout(id: string, actor: string) {
      return rollouts.abort(id, actor);
    },
    resumeRollout(id: string, actor: string) {
      return rollouts.resume(id, actor);
    },
    rollbackRollout(id: string | undefined, actor: string) {
      const target = id ?? rollouts.list().find((r) => Object.values(r.devices).some((d) => d.state === 'switched'))?.id;
      if (!target) throw new FleetError('not_found', 'no rollout has switched devices to roll back; see `hostManager rollouts list`');
      return rollouts.rollbackRollout(target, actor);
    },

    async infer(args: { device: string; params: CommandParams<'infer'>; actor: string; timeoutMs?: number }): Promise<CommandResult<'infer'>> {
      device(args.device);
      return requester.request(args.device, 'infer', args.params, args.timeoutMs ?? ctx.timeoutMs);
    },

    async logs(args: { device: string; lines: number }) {
      device(args.device);
      return requester.request(args.device, 'logs', { lines: args.lines }, ctx.timeoutMs);
    },

    /**
     * The original plain-text commands. `via: 'command'` (default) sends the
     * `legacy` request to each target device and collects their answers;
     * `via: 'topic'` publishes the bare word on the legacy topic, as the C host
     * manager did (every listening device acts; nobody answers).
     */
    async exec(args: { to: RolloutTarget; command: string; actor: string; via?: 'command' | 'topic' }): Promise<{ via: string; results: ExecResult[] }> {
      const parsed = LegacyCommandSchema.safeParse(args.command);
      if (!parsed.success) {
        throw new FleetError('invalid_params', `unknown command "${args.command}"; use one of start, stop, update, install, done, exit`);
      }
      const command: LegacyCommand = parsed.data;
      if (args.via === 'topic') {
        if (!ctx.legacyTopic) throw new FleetError('unavailable', 'the legacy topic is off; start the controller with --legacy-topic hello');
        await ctx.client.publishAsync(ctx.legacyTopic, command, { qos: 1 });
        await audit({ actor: args.actor, action: 'exec', target: ctx.legacyTopic, result: 'ok', detail: { command, via: 'topic' } });
        return { via: 'topic', results: [] };
      }
      const members = membersOf(args.to);
      const results: ExecResult[] = [];
      if (args.to.kind === 'group') {
        const replies = await requester.requestGroup(args.to.name, members.map((d) => d.id), 'legacy', { command }, ctx.timeoutMs);
        for (const [id, r] of replies) results.push(r.ok ? { device: id, ok: true, message: r.data.message } : { device: id, ok: false, error: r.error.toJSON() });
      } else {
        await Promise.all(
          members.map(async (d) => {
            try {
              const r = await requester.request(d.id, 'legacy', { command }, d.online || args.to.kind === 'device' ? ctx.timeoutMs : 1);
              results.push({ device: d.id, ok: true, message: r.message });
            } catch (error) {
              results.push({ device: d.id, ok: false, error: toErrorBody(error) });
            }
          }),
        );
      }
      results.sort((a, b) => (a.device < b.device ? -1 : 1));
      await audit({
        actor: args.actor,
        action: 'exec',
        target: args.to.kind === 'all' ? 'all' : args.to.kind === 'group' ? `group:${args.to.name}` : args.to.name,
        result: results.every((r) => r.ok) ? 'ok' : 'error',
        detail: { command, results },
      });
      return { via: 'command', results };
    },

    keys() {
      return { keyId: ctx.keys.keyId, publicKeyPem: ctx.keys.publicKeyPem };
    },

    audit(limit = 100) {
      return db.data.audit.slice(-Math.max(1, Math.min(limit, 5000)));
    },

    assertName(kind: string, name: string) {
      try {
        return assertName(kind, name);
      } catch (error) {
        throw new FleetError('invalid_params', (error as Error).message);
      }
    },
    dataDir: ctx.dataDir,
  };
}
