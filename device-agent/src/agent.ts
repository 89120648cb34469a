/**
 * The device agent: one MQTT connection under the device's own identity (connection.ts),
 * presence (retained status, retained last will), telemetry through the disk buffer
 * (telemetry/), request/response commands (commands.ts, handlers.ts), model transfers
 * (transfer/), the fleet's containers (containers/), the legacy plain-text channel, the
 * local HTTP inference API, and an orderly stop. This module only wires those parts together.
 */
import { mkdir } from 'node:fs/promises';
import { arch } from 'node:os';
import type { MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { makeStatus, parseTopic, topics } from '@edgefleet/protocol';
import type { ContainerState, DeviceIdentity, DeviceInfo, FleetEvent, Reply } from '@edgefleet/protocol';
import type { AgentConfig } from './config.js';
import { Dispatcher } from './commands.js';
import { DeviceConnection, withTimeout } from './connection.js';
import { agentVersion, deviceInfo } from './device-info.js';
import { STATUS_CHANGING, createHandlers } from './handlers.js';
import { LegacyChannel } from './legacy.js';
import { createSampler } from './telemetry/sampler.js';
import { TelemetryBuffer } from './telemetry/buffer.js';
import { TelemetryFlusher } from './telemetry/flush.js';
import { createModelService } from './models/index.js';
import type { ModelService } from './models/index.js';
import { createInferenceServer } from './http.js';
import { createAgentMetrics } from './metrics.js';
import type { AgentMetrics } from './metrics.js';
import type { InferenceServer } from './http.js';
import { createTransferReceiver } from './transfer/index.js';
import type { TransferReceiver } from './transfer/index.js';
import { createContainerService } from './containers/index.js';
import type { ContainerService } from './containers/index.js';

export interface AgentDeps {
  logger: Logger;
  /** A model service to use instead of creating one (tests). */
  models?: ModelService;
  /** Where legacy console lines go (stdout by default). */
  print?: (line: string) => void;
  /** Called once the agent stopped because of `exit` on the legacy channel. */
  onExit?: (reason: string) => void;
  /** Random source for reconnect jitter (tests). */
  random?: () => number;
}

export interface Agent {
  start(): Promise<void>;
  stop(reason?: string): Promise<void>;
  /** Whether it is connected to the broker now. */
  connected(): boolean;
  /** The local HTTP API port, when it runs. */
  httpPort(): number | undefined;
  info(): Promise<DeviceInfo>;
  readonly models: ModelService | undefined;
}

export function createAgent(config: AgentConfig, deps: AgentDeps): Agent {
  return new DeviceAgent(config, deps);
}

class DeviceAgent implements Agent {
  readonly #config: AgentConfig;
  readonly #deps: AgentDeps;
  readonly #logger: Logger;
  readonly #identity: DeviceIdentity;
  readonly #link: DeviceConnection;
  readonly #dispatcher: Dispatcher;
  readonly #metrics: AgentMetrics;
  #models: ModelService | undefined;
  #ownModels = false;
  #http: InferenceServer | undefined;
  #transfer: TransferReceiver | undefined;
  #legacy: LegacyChannel | undefined;
  #containers: ContainerService | undefined;
  #telemetry: TelemetryFlusher | undefined;
  #stopping: Promise<void> | undefined;
  #acceptingCommands = true;
  #version = '0.0.0';
  #dockerOk = false;

  constructor(config: AgentConfig, deps: AgentDeps) {
    this.#config = config;
    this.#deps = deps;
    this.#models = deps.models;
    this.#logger = deps.logger.child({ device: config.device });
    this.#identity = { id: config.device, groups: config.groups, arch: arch() };
    this.#metrics = createAgentMetrics(config.device);
    this.#link = new DeviceConnection(config, this.#logger, { onConnected: (c) => this.#onConnected(c), onMessage: (t, p, r) => this.#onMessage(t, p, r) }, deps.random);
    this.#dispatcher = new Dispatcher({
      handlers: createHandlers({
        config,
        info: () => this.info(),
        models: () => this.#models,
        transfer: () => this.#transfer,
        legacy: () => this.#legacy,
        containers: () => this.#containers,
      }),
      logger: this.#logger,
      send: (reply: Reply, binary) => this.#link.publishJson(topics.device(config.device, 'replies'), reply, false, binary),
      onSuccess: (command) => {
        if (STATUS_CHANGING.has(command)) void this.#publishStatus();
      },
    });
  }

  get models(): ModelService | undefined {
    return this.#models;
  }

  connected(): boolean {
    return this.#link.connected;
  }

  httpPort(): number | undefined {
    return this.#http?.port;
  }

  async info(): Promise<DeviceInfo> {
    await this.#containers?.start(); // the first engine probe (then cached): `docker` is known before it is reported
    return deviceInfo({ version: this.#version, groups: this.#config.groups, models: this.#models, docker: this.#dockerOk, containers: await this.#containerStates() });
  }

  /** Empty without an engine; a failing engine call leaves them out of one status or sample, nothing more. */
  async #containerStates(): Promise<ContainerState[]> {
    if (!this.#dockerOk || !this.#containers) return [];
    return this.#containers.states().catch(() => []);
  }

  async start(): Promise<void> {
    const config = this.#config;
    const logger = this.#logger;
    this.#version = await agentVersion();
    await mkdir(config.dataDir, { recursive: true });
    const containers = await createContainerService({
      device: config.device,
      dataDir: config.dataDir,
      logger,
      socketPath: config.dockerSocket,
      engineRoot: config.dockerRoot,
      publishEvent: (e) => {
        this.#publishEvent(e);
        void this.#publishStatus();
      },
    });
    this.#containers = containers;
    // not awaited: the engine may be slow or absent (a runtime container waits for this clean-up itself)
    void containers.start().then((status) => (this.#dockerOk = status.available));
    if (!this.#models) {
      this.#models = await createModelService({
        dataDir: config.dataDir,
        threads: config.inferenceThreads,
        workerSessionBytes: config.workerSessionMb * 1024 * 1024,
        keepVersions: config.keepVersions,
        logger,
        identity: this.#identity,
        ...(config.fleetPublicKeyPem ? { publicKeyPem: config.fleetPublicKeyPem } : {}),
        openRuntime: (request) => containers.runtime.sessionFor(request),
      });
      this.#ownModels = true;
    }
    const service = (this.#models = this.#metrics.instrument(this.#models));
    containers.useModels((model) => service.active().find((m) => m.name === model)?.version);
    if (config.fleetPublicKeyPem) {
      this.#transfer = createTransferReceiver({
        dataDir: config.dataDir,
        publicKeyPem: config.fleetPublicKeyPem,
        identity: this.#identity,
        models: service,
        images: containers,
        publishEvent: (e) => {
          this.#publishEvent(e);
          if (e.event === 'model.activated') void this.#publishStatus();
        },
        logger,
        expiryMs: config.transferExpiryS * 1000,
      });
    }
    if (config.http) {
      const maxBodyBytes = Math.round(config.httpMaxBodyMb * 1024 * 1024);
      this.#http = await createInferenceServer(service, {
        host: config.httpHost,
        port: config.httpPort,
        logger,
        maxBodyBytes,
        serverVersion: this.#version,
        metrics: (req, res) => this.#metrics.handle(req, res),
        apps: containers,
      });
      logger.info({ host: config.httpHost, port: this.#http.port }, 'HTTP inference API listening');
    }
    this.#legacy = new LegacyChannel({
      program: config.legacyProgram,
      install: config.legacyInstall,
      stopTimeoutMs: config.legacyStopTimeoutMs,
      models: service,
      logger,
      ...(this.#deps.print ? { print: this.#deps.print } : {}),
      onExit: () => {
        void this.stop('exit command').then(() => this.#deps.onExit?.('exit command'));
      },
    });
    const buffer = await TelemetryBuffer.open(config.dataDir, config.telemetryBufferMax, logger);
    this.#telemetry = new TelemetryFlusher(buffer, (m) => this.#link.publishJson(topics.device(config.device, 'telemetry'), m), () => this.#link.connected, logger);
    const sampler = createSampler({
      dataDir: config.dataDir,
      // per name@version: models of the model service, and image apps that serve inference
      drainHealth: () => ({ ...(this.#models ? this.#models.drainHealth() : {}), ...containers.drainHealth() }),
      containers: () => this.#containerStates(),
    });
    this.#telemetry.start(sampler, config.telemetryIntervalMs);
    this.#link.connect();
    logger.info({ broker: config.broker, groups: config.groups, version: this.#version }, 'agent started');
  }

  stop(reason = 'stopped'): Promise<void> {
    this.#stopping ??= this.#stop(reason);
    return this.#stopping;
  }

  /** No new requests; those in flight finish (or the shutdown timeout); then every part closes, the offline status last. */
  async #stop(reason: string): Promise<void> {
    const logger = this.#logger;
    logger.info({ reason }, 'stopping: no new requests, finishing those in flight');
    this.#acceptingCommands = false;
    this.#dispatcher.close();
    this.#telemetry?.stop();
    this.#link.stopReconnecting();
    const c = this.#link.client;
    if (c?.connected) {
      await withTimeout(c.unsubscribeAsync(this.#subscriptions()).then(() => undefined), 2000, undefined).catch((error: unknown) => logger.warn({ err: error }, 'unsubscribe failed'));
    }
    const closingHttp = this.#http ? this.#http.close().catch((error: unknown) => logger.warn({ err: error }, 'HTTP close failed')) : undefined;
    const drained = await this.#dispatcher.drain(this.#config.shutdownTimeoutMs);
    await closingHttp;
    logger.info({ ...this.#dispatcher.stats, drained }, 'requests finished');
    await this.#legacy?.close();
    await this.#transfer?.close().catch((error: unknown) => logger.warn({ err: error }, 'transfer close failed'));
    if (this.#ownModels) await this.#models?.close().catch((error: unknown) => logger.warn({ err: error }, 'model service close failed'));
    await this.#containers?.close().catch((error: unknown) => logger.warn({ err: error }, 'containers service close failed'));
    await this.#link.close(reason);
    await this.#telemetry?.buffer.close();
    logger.info({ reason, pendingTelemetry: this.#telemetry?.buffer.size ?? 0 }, 'agent stopped');
  }

  async #publishStatus(): Promise<void> {
    if (!this.#link.connected) return;
    try {
      await this.#link.publishJson(topics.device(this.#config.device, 'status'), makeStatus(await this.info()), true);
    } catch (error) {
      this.#logger.warn({ err: error }, 'could not publish status');
    }
  }

  #publishEvent(event: FleetEvent): void {
    this.#link.publishJson(topics.device(this.#config.device, 'events'), event).catch((error: unknown) => this.#logger.warn({ err: error }, 'could not publish an event'));
  }

  #subscriptions(): string[] {
    const { device, groups, legacyTopic } = this.#config;
    const list = [topics.device(device, 'commands'), ...groups.map((g) => topics.group(g, 'commands'))];
    if (this.#transfer) {
      list.push(topics.transferFilter({ kind: 'device', name: device }));
      for (const g of groups) list.push(topics.transferFilter({ kind: 'group', name: g }));
    }
    if (legacyTopic) list.push(legacyTopic);
    return list;
  }

  /** Subscribes (unless stopping), announces the legacy channel, publishes status, flushes telemetry, rechecks Docker. */
  async #onConnected(c: MqttClient): Promise<void> {
    const { device, groups, legacyTopic } = this.#config;
    if (this.#acceptingCommands) {
      // chunk topics at QoS 0: the sender resends whatever a device reports missing, and a persistent
      // session must not make the broker queue whole models for a device that is offline
      const chunkFilters = new Set([device, ...groups].map((name, i) => topics.transferFilter({ kind: i === 0 ? 'device' : 'group', name })));
      const granted = await c.subscribeAsync(Object.fromEntries(this.#subscriptions().map((t) => [t, { qos: chunkFilters.has(t) ? 0 : 1 }])) as Record<string, { qos: 0 | 1 }>);
      const refused = granted.filter((g) => g.qos === 128).map((g) => g.topic);
      if (refused.length > 0) this.#logger.error({ refused }, 'the broker refused subscriptions; check the device groups and the broker ACL');
      if (legacyTopic) this.#legacy?.announce(legacyTopic);
    }
    await this.#publishStatus();
    const flushed = this.#telemetry?.flush();
    // the engine may have come or gone while we were away: say so when it changed
    // (start() again: it retries its clean-up if the engine was absent before)
    const containers = this.#containers;
    const docker = containers ? (await containers.start(), (await containers.engineStatus()).available) : false;
    if (docker !== this.#dockerOk) {
      this.#dockerOk = docker;
      await this.#publishStatus();
    }
    await flushed;
  }

  #onMessage(topic: string, payload: Buffer, retained: boolean): void {
    const { device, legacyTopic } = this.#config;
    if (legacyTopic !== undefined && topic === legacyTopic) {
      if (!this.#acceptingCommands || !this.#legacy) return;
      this.#legacy.onMessage(topic, payload, retained).catch((error: unknown) => this.#logger.error({ err: error }, 'legacy command failed'));
      return;
    }
    const parsed = parseTopic(topic);
    if (parsed?.kind === 'transfer') {
      this.#metrics.chunk(payload.length, parsed.target.kind);
      try {
        this.#transfer?.chunk(parsed.transferId, parsed.index, payload);
      } catch (error) {
        this.#logger.warn({ err: error, transferId: parsed.transferId, index: parsed.index }, 'chunk rejected');
      }
      return;
    }
    if ((parsed?.kind === 'device' && parsed.device === device && parsed.channel === 'commands') || parsed?.kind === 'group') {
      void this.#dispatcher.handle(payload);
      return;
    }
    this.#logger.warn({ topic }, 'message on an unexpected topic ignored');
  }
}
