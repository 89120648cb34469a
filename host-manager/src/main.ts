/**
 * The controller: `createManager(options)` opens the state, connects to the broker (or
 * starts the embedded one in this process), learns the fleet, runs rollouts and serves
 * the HTTP API. This module only wires the feature folders together; every operator
 * action is one of the `Operations` (api/contract.ts), and the HTTP API, the CLI and
 * the console are only ways of calling them.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { BrokerClient } from './broker-client.js';
import { pino } from 'pino';
import type { Logger } from 'pino';
import type { RunningBroker } from '@edgefleet/broker';
import { writeFileAtomic } from '@edgefleet/node-io';
import { loadOrCreateFleetKeys } from './access/fleet-keys.js';
import type { FleetKeys } from './access/fleet-keys.js';
import { ensureEnrolmentKey, ensureOperator } from './access/tokens.js';
import type { Operations } from './api/contract.js';
import { registerFleetGauges } from './api/fleet-gauges.js';
import { createMetrics } from './api/metrics.js';
import type { Metrics } from './api/metrics.js';
import { startApi } from './api/server.js';
import { connectBroker } from './broker-link.js';
import type { BrokerLinkOptions } from './broker-link.js';
import { CONTROLLER_FILE, DEFAULTS } from './defaults.js';
import { makeDeliver, makeRollback } from './delivery/rollout-actions.js';
import { createSshDelivery } from './delivery/ssh-operation.js';
import { createDeviceOperations } from './devices/operations.js';
import { Fleet } from './devices/presence.js';
import { createRequester } from './devices/requester.js';
import type { Requester } from './devices/requester.js';
import { createImageOperations } from './images/operations.js';
import { createImageRegistry } from './images/registry.js';
import { createAgentRegistry } from './agents/registry.js';
import type { AgentRegistry } from './agents/registry.js';
import { createAgentOperations } from './agents/operations.js';
import type { ImageRegistry } from './images/registry.js';
import { createModelOperations } from './models/operations.js';
import { INCOMING_DIR } from './models/blobs.js';
import { createRegistry } from './models/registry.js';
import type { Registry } from './models/registry.js';
import { Rollouts } from './rollouts/executor.js';
import { createRolloutOperations } from './rollouts/operations.js';
import { brokerAccountsFor, reconcileAccounts } from './broker-setup/dynsec.js';
import type { BrokerAccounts, BrokerAccountsMode } from './broker-setup/dynsec.js';
import { auditRecorder } from './state/audit.js';
import { openState } from './state/repository.js';
import type { FleetRepository } from './state/repository.js';

export interface ManagerOptions extends BrokerLinkOptions {
  dataDir: string;
  httpHost?: string;
  httpPort?: number;
  operatorId?: string;
  /** The original plain-text command topic; '' = off. Default LEGACY_TOPIC ('hello'). */
  legacyTopic?: string;
  logger?: Logger;
  /** Rollout executor tick (tests). */
  tickMs?: number;
  /** Default request timeout in ms for commands sent to devices. */
  requestTimeoutMs?: number;
  /** Enrolment with a fleet provisioning key (POST /enrol); off by default. Enrolled devices join `groups`. */
  enrolment?: { groups?: string[] } | false;
  /** Names besides the listening addresses that HTTP requests may use in Host (DNS rebinding guard). */
  httpAllowedHosts?: string[];
  /** The largest model the registry takes (uploads included), in bytes; default DEFAULTS.maxModelBytes (2 GiB). */
  maxModelBytes?: number;
  /** The largest agent bundle upload, in bytes; default DEFAULTS.maxAgentBundleBytes (1 GiB). */
  maxAgentBundleBytes?: number;
  /** An external broker's accounts: Mosquitto's dynamic security when it answers (`auto`, the default), required, or `none`. */
  brokerAccounts?: BrokerAccountsMode;
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
  state: FleetRepository;
  fleet: Fleet;
  rollouts: Rollouts;
  registry: Registry;
  images: ImageRegistry;
  ops: Operations;
  metrics: Metrics;
  close(): Promise<void>;
}

export async function createManager(options: ManagerOptions): Promise<Manager> {
  const log = options.logger ?? pino({ name: 'hostManager' }, pino.destination(2));
  const dataDir = resolve(options.dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const metrics = createMetrics();
  const state = await openState(join(dataDir, 'state.json'), { onWritten: (bytes) => metrics.stateBytesWritten.inc(bytes) });
  const keys = await loadOrCreateFleetKeys(dataDir);
  const operator = await ensureOperator(state, dataDir, options.operatorId ?? DEFAULTS.operatorId);
  const enrolment = options.enrolment ? await ensureEnrolmentKey(state, dataDir, options.enrolment.groups ?? []) : null;
  const legacyTopic = options.legacyTopic ?? DEFAULTS.legacyTopic;
  registerFleetGauges(metrics.registry, state);
  const link = await connectBroker(options, { state, operator, legacyTopic, log });
  const requester = await createRequester(link.client);
  const accounts = link.broker ? undefined : await brokerAccountsFor(link.client, options.brokerAccounts ?? 'auto', { legacyTopic, log });
  if (accounts) await reconcileAccounts(accounts, state, log);
  const fleet = new Fleet({
    mqtt: link.client,
    state,
    logger: log.child({ component: 'fleet' }),
    metrics,
    discover: link.broker === null,
    // telemetry is kept only for versions a registry holds: models, and image apps that serve inference
    knownModel: (name, version) => state.modelVersions(name).some((v) => v.version === version) || state.imageVersions(name).some((v) => v.version === version),
  });
  await fleet.start();
  const maxModelBytes = options.maxModelBytes ?? DEFAULTS.maxModelBytes;
  const registry = createRegistry(state, dataDir, { maxModelBytes });
  const images = createImageRegistry(state, dataDir);
  const agents = createAgentRegistry(state, dataDir);
  // uploads and copies cut off by a crash are never kept
  for (const leftovers of ['uploads', INCOMING_DIR]) await rm(join(dataDir, leftovers), { recursive: true, force: true });
  const timeoutMs = options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
  const deliver = makeDeliver({
    mqtt: link.client,
    requester,
    registry,
    images,
    agents,
    keys,
    state,
    ...(options.chunkSize !== undefined ? { chunkSize: options.chunkSize } : {}),
    ...(options.window !== undefined ? { window: options.window } : {}),
    onPhase: (phase, ms) => metrics.deliveryPhase.observe({ phase }, ms / 1000),
  });
  const rollback = makeRollback({ requester, registry, images, keys, state, timeoutMs, agents: { mqtt: link.client, requester, agents, keys, state } });
  const rollouts = new Rollouts({ state, fleet, deliver, rollback, logger: log, metrics, agentRelease: (v) => agents.releaseOf(v), ...(options.tickMs ? { tickMs: options.tickMs } : {}) });
  fleet.expectModels((device, name, version) => rollouts.expects(device, name, version));
  const ops = createOperations({
    state,
    fleet,
    registry,
    images,
    agents,
    rollouts,
    requester,
    client: link.client,
    keys,
    legacyTopic,
    advertised: link.advertised,
    broker: link.broker,
    dataDir,
    timeoutMs,
    enrolmentOn: enrolment !== null,
    disconnect: link.disconnect,
    metrics,
    ...(accounts ? { brokerAccounts: accounts } : {}),
  });
  const api = await startApi({
    ops,
    state,
    fleet,
    metrics,
    logger: log.child({ component: 'api' }),
    host: options.httpHost ?? DEFAULTS.httpHost,
    port: options.httpPort ?? DEFAULTS.httpPort,
    maxModelBytes,
    maxAgentBundleBytes: options.maxAgentBundleBytes ?? DEFAULTS.maxAgentBundleBytes,
    ...(options.httpAllowedHosts ? { allowedHosts: options.httpAllowedHosts } : {}),
  });
  const controllerFile = join(dataDir, CONTROLLER_FILE);
  const announced = { pid: process.pid, url: api.url, broker: link.brokerUrl, advertisedBroker: link.advertised, mqtt: link.broker?.ports ?? null, startedAt: new Date().toISOString() };
  await writeFileAtomic(controllerFile, JSON.stringify(announced, null, 1));
  rollouts.resumeAll();
  log.info({ url: api.url, broker: link.brokerUrl }, 'controller ready');

  let closed = false;
  return {
    dataDir,
    url: api.url,
    brokerUrl: link.brokerUrl,
    advertisedBrokerUrl: link.advertised,
    broker: link.broker,
    operator,
    enrolment,
    keys,
    state,
    fleet,
    rollouts,
    registry,
    images,
    ops,
    metrics,
    async close() {
      if (closed) return;
      closed = true;
      await api.close();
      await rollouts.close();
      await fleet.stop();
      requester.close();
      await link.close();
      await state.write();
      await rm(controllerFile, { force: true });
    },
  };
}

/** The operations of every feature folder, as the one `Operations` object the API is written against. */
function createOperations(ctx: {
  state: FleetRepository;
  fleet: Fleet;
  registry: Registry;
  images: ImageRegistry;
  agents: AgentRegistry;
  rollouts: Rollouts;
  requester: Requester;
  client: BrokerClient;
  keys: FleetKeys;
  legacyTopic: string;
  advertised: string;
  broker: RunningBroker | null;
  dataDir: string;
  timeoutMs: number;
  enrolmentOn: boolean;
  disconnect(id: string): void;
  metrics: Metrics;
  brokerAccounts?: BrokerAccounts;
}): Operations {
  const { state, fleet, rollouts, client } = ctx;
  const audit = auditRecorder(state, (entry) => fleet.emitFeed({ type: 'audit', entry }));
  return {
    ...createDeviceOperations({ ...ctx, audit }),
    ...createModelOperations({ ...ctx, audit }),
    deliverSsh: createSshDelivery({ ...ctx, audit }),
    ...createImageOperations({ ...ctx, audit }),
    ...createAgentOperations({ ...ctx, audit }),
    ...createRolloutOperations(ctx),
    dataDir: ctx.dataDir,
    health() {
      const all = state.devices();
      return {
        ok: client.connected,
        broker: { connected: client.connected, embedded: ctx.broker !== null, url: ctx.advertised, accounts: ctx.broker ? 'embedded' : (ctx.brokerAccounts?.kind ?? 'external') },
        devices: { total: all.length, online: all.filter((d) => d.online).length },
        rollouts: { running: rollouts.list().filter((r) => r.status === 'running').length },
      };
    },
    keys: () => ({ keyId: ctx.keys.keyId, publicKeyPem: ctx.keys.publicKeyPem }),
    audit: (limit) => state.auditTail(limit),
  };
}
