/**
 * The device agent: one MQTT connection under the device's own identity,
 * presence (retained status, retained last will), telemetry through the disk
 * buffer, request/response commands, the legacy plain-text channel, the local
 * HTTP inference API, and an orderly stop.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { hostname, arch, platform, cpus, totalmem } from 'node:os';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { FleetError, makeOffline, makeStatus, parseTopic, topics } from '@edgefleet/protocol';
import type { CommandName, DeviceIdentity, DeviceInfo, FleetEvent, Reply, TelemetrySample } from '@edgefleet/protocol';
import type { AgentConfig } from './config.js';
import { Backoff } from './backoff.js';
import { Dispatcher } from './commands.js';
import type { HandlerTable } from './commands.js';
import { LegacyChannel } from './legacy.js';
import { logPath, tailFile } from './logs.js';
import { createSampler } from './telemetry.js';
import { TelemetryBuffer } from './telemetry-buffer.js';
import { createModelService } from './models/index.js';
import type { ModelService } from './models/index.js';
import { createInferenceServer } from './http.js';
import type { InferenceServer } from './http.js';
import { createTransferReceiver } from './transfer.js';
import { dockerReachable } from './docker-probe.js';
import { createAgentUpdater } from './update/index.js';
import type { AgentUpdater } from './update/index.js';
import type { TransferReceiver } from './transfer.js';

export interface AgentDeps {
  logger: Logger;
  /** A model service to use instead of creating one (tests). */
  models?: ModelService;
  /** Where legacy console lines go (stdout by default). */
  print?: (line: string) => void;
  /** Called once the agent stopped because of `exit` on the legacy channel. */
  onExit?: (reason: string) => void;
  /** Called once the agent stopped to restart into a new version it installed (exit with RESTART_EXIT_CODE). */
  onRestart?: () => void;
  /** Random source for reconnect jitter (tests). */
  random?: () => number;
}

export interface Agent {
  start(): Promise<void>;
  stop(reason?: string): Promise<void>;
  /** Resolves on every (re)connection; `connected()` says whether it is connected now. */
  connected(): boolean;
  /** The local HTTP API port, when it runs. */
  httpPort(): number | undefined;
  info(): Promise<DeviceInfo>;
  readonly models: ModelService | undefined;
}

const STARTED = Date.now();

async function agentVersion(): Promise<string> {
  try {
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0'; // running from an unusual layout; the version is informative only
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((r) => {
      timer = setTimeout(() => r(fallback), ms);
    }),
  ]);
}

export function createAgent(config: AgentConfig, deps: AgentDeps): Agent {
  const logger = deps.logger.child({ device: config.device });
  const id = config.device;
  const statusTopic = topics.device(id, 'status');
  const commandTopics = [topics.device(id, 'commands'), ...config.groups.map((g) => topics.group(g, 'commands'))];
  const backoff = new Backoff({ minMs: config.reconnectMinMs, maxMs: config.reconnectMaxMs }, deps.random);

  let client: MqttClient | undefined;
  let models: ModelService | undefined = deps.models;
  let ownModels = false;
  let http: InferenceServer | undefined;
  let transfer: TransferReceiver | undefined;
  let updater: AgentUpdater | undefined;
  let legacy: LegacyChannel | undefined;
  let buffer: TelemetryBuffer | undefined;
  let telemetryTimer: NodeJS.Timeout | undefined;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let stopping: Promise<void> | undefined;
  let acceptingCommands = true;
  let flushing = false;
  let version = '0.0.0';
  let dockerOk = false;

  const identity: DeviceIdentity = { id, groups: config.groups, arch: arch() };

  async function info(): Promise<DeviceInfo> {
    const runtime = models ? models.runtime() : null;
    return {
      agentVersion: version,
      hostname: hostname(),
      arch: arch(),
      platform: platform(),
      cpus: cpus().length,
      memoryBytes: totalmem(),
      onnxruntime: runtime ? { version: runtime.version, executionProviders: runtime.executionProviders } : null,
      runtime: runtime ? { name: runtime.name, version: runtime.version, backend: runtime.backend } : null,
      docker: dockerOk,
      groups: [...config.groups],
      models: models ? models.active() : [],
      ...(updater?.state() ? { agentUpdate: updater.state() } : {}),
    };
  }

  function publishJson(topic: string, body: unknown, retain = false): Promise<void> {
    if (!client) return Promise.reject(new FleetError('unavailable', 'the agent has no MQTT connection'));
    return client.publishAsync(topic, JSON.stringify(body), { qos: 1, retain }).then(() => undefined);
  }

  async function publishStatus(): Promise<void> {
    if (!client?.connected) return;
    try {
      await publishJson(statusTopic, makeStatus(await info()), true);
    } catch (error) {
      logger.warn({ err: error }, 'could not publish status');
    }
  }

  function publishEvent(event: FleetEvent): void {
    publishJson(topics.device(id, 'events'), event).catch((error: unknown) => logger.warn({ err: error }, 'could not publish an event'));
  }

  const requireModels = (): ModelService => {
    if (!models) throw new FleetError('unavailable', 'the model service is not running on this device');
    return models;
  };
  const requireTransfer = (): TransferReceiver => {
    if (!transfer) {
      throw new FleetError(
        'unavailable',
        config.fleetPublicKeyPem
          ? 'model transfer is not running'
          : 'model transfer is off: configure fleetPublicKey (the fleet public key) on this device',
      );
    }
    return transfer;
  };

  const handlers: HandlerTable = {
    ping: async () => ({ pong: true, uptimeS: Math.round((Date.now() - STARTED) / 1000) }),
    info: async () => info(),
    infer: async (params) => requireModels().infer(params),
    'models.list': async () => ({ models: requireModels().list() }),
    'models.activate': async (p) => requireModels().activate(p.model, p.version),
    'models.rollback': async (p) => requireModels().rollback(p.model, p.manifest),
    'models.remove': async (p) => requireModels().remove(p.model, p.version),
    logs: async (p) => ({ lines: tailFile(logPath(config.dataDir), p.lines) }),
    'transfer.offer': async (p) => requireTransfer().offer(p),
    'transfer.status': async (p) => requireTransfer().status(p),
    'transfer.commit': async (p) => requireTransfer().commit(p),
    legacy: async (p) => {
      if (!legacy) throw new FleetError('unavailable', 'the legacy channel is not set up');
      return { message: await legacy.run(p.command) };
    },
  };

  const STATUS_CHANGING: ReadonlySet<CommandName> = new Set(['models.activate', 'models.rollback', 'models.remove', 'transfer.commit', 'legacy']);
  const dispatcher = new Dispatcher({
    handlers,
    logger,
    send: (reply: Reply) => publishJson(topics.device(id, 'replies'), reply),
    onSuccess: (command) => {
      if (STATUS_CHANGING.has(command)) void publishStatus();
    },
  });

  function subscriptions(): string[] {
    const list = [...commandTopics];
    if (transfer) {
      list.push(topics.transferFilter({ kind: 'device', name: id }));
      for (const g of config.groups) list.push(topics.transferFilter({ kind: 'group', name: g }));
    }
    if (config.legacyTopic) list.push(config.legacyTopic);
    return list;
  }

  function onMessage(topic: string, payload: Buffer): void {
    if (config.legacyTopic !== undefined && topic === config.legacyTopic) {
      if (!acceptingCommands || !legacy) return;
      legacy.onMessage(topic, payload).catch((error: unknown) => logger.error({ err: error }, 'legacy command failed'));
      return;
    }
    const parsed = parseTopic(topic);
    if (!parsed) {
      logger.warn({ topic }, 'message on an unexpected topic ignored');
      return;
    }
    if (parsed.kind === 'transfer') {
      if (transfer) {
        try {
          transfer.chunk(parsed.transferId, parsed.index, payload);
        } catch (error) {
          logger.warn({ err: error, transferId: parsed.transferId, index: parsed.index }, 'chunk rejected');
        }
      }
      return;
    }
    if ((parsed.kind === 'device' && parsed.device === id && parsed.channel === 'commands') || parsed.kind === 'group') {
      void dispatcher.handle(payload);
      return;
    }
    logger.warn({ topic }, 'message on an unexpected topic ignored');
  }

  async function flushTelemetry(): Promise<void> {
    if (flushing || !buffer || !client?.connected) return;
    flushing = true;
    try {
      while (client.connected && buffer.size > 0) {
        const batch = buffer.peek(32);
        const last = batch[batch.length - 1];
        if (!last) break;
        // QoS 1 on one connection keeps order; the buffer entry goes only once PUBACKed
        await Promise.all(batch.map((m) => publishJson(topics.device(id, 'telemetry'), m)));
        await buffer.ack(last.seq);
      }
    } catch (error) {
      logger.warn({ err: error, pending: buffer.size }, 'telemetry flush interrupted; will retry on reconnect');
    } finally {
      flushing = false;
    }
  }

  function scheduleReconnect(): void {
    if (stopping || reconnectTimer || !client) return;
    const delay = backoff.next();
    logger.info({ delayMs: delay, attempt: backoff.attempts }, 'reconnecting after backoff');
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      if (stopping || !client) return;
      // keep the stores: QoS 1 messages not yet acknowledged are resent after the reconnect
      client.reconnect({ incomingStore: client.incomingStore, outgoingStore: client.outgoingStore });
    }, delay);
  }

  function connect(): MqttClient {
    const will = makeOffline('connection lost');
    const options: IClientOptions = {
      clientId: id,
      username: id,
      password: config.token,
      protocolVersion: 4,
      // a persistent session: QoS 1 commands sent during a short disconnect arrive after it
      clean: false,
      keepalive: config.keepaliveS,
      reconnectPeriod: 0, // reconnects are ours: exponential backoff with full jitter
      connectTimeout: 10_000,
      resubscribe: false,
      // mqtt-packet would otherwise build 65,536 two-byte buffers (~6 MB of heap) for message ids at the first packet
      writeCache: false,
      will: { topic: statusTopic, payload: Buffer.from(JSON.stringify(will)), qos: 1, retain: true },
      ...(config.tls.ca ? { ca: config.tls.ca } : {}),
      ...(config.tls.cert ? { cert: config.tls.cert } : {}),
      ...(config.tls.key ? { key: config.tls.key } : {}),
    };
    const c = mqtt.connect(config.broker, options);
    c.on('connect', (connack) => {
      backoff.reset();
      // requests and replies are small packets: without this, Nagle + delayed ACK add ~40 ms per hop
      (c.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
      logger.info({ broker: config.broker, sessionPresent: connack.sessionPresent }, 'connected');
      void (async () => {
        try {
          if (acceptingCommands) {
            // chunk topics at QoS 0 (edit by helper C): the sender resends whatever a device reports missing, and a
            // persistent session must not make the broker queue whole models for a device that is offline
            const chunkFilters = new Set([id, ...config.groups].map((name, i) => topics.transferFilter({ kind: i === 0 ? 'device' : 'group', name })));
            const granted = await c.subscribeAsync(Object.fromEntries(subscriptions().map((t) => [t, { qos: chunkFilters.has(t) ? 0 : 1 }])) as Record<string, { qos: 0 | 1 }>);
            const refused = granted.filter((g) => g.qos === 128).map((g) => g.topic);
            if (refused.length > 0) logger.error({ refused }, 'the broker refused subscriptions; check the device groups and the broker ACL');
            if (config.legacyTopic) legacy?.announce(config.legacyTopic);
          }
          await publishStatus();
          // a new version on trial is healthy now: connected, status published (see src/update/)
          if (updater && (await updater.onOnline((e) => publishJson(topics.device(id, 'events'), e)))) await publishStatus();
          const flushed = flushTelemetry();
          // the engine may have come or gone while we were away: say so when it changed
          const docker = await dockerReachable();
          if (docker !== dockerOk) {
            dockerOk = docker;
            await publishStatus();
          }
          await flushed;
        } catch (error) {
          logger.warn({ err: error }, 'connection setup interrupted');
        }
      })();
    });
    c.on('message', onMessage);
    c.on('close', () => {
      if (!stopping) logger.warn('disconnected from the broker');
      scheduleReconnect();
    });
    c.on('error', (error) => {
      logger.warn({ err: { message: error.message, code: (error as { code?: unknown }).code } }, 'MQTT error');
    });
    return c;
  }

  async function takeSample(sampler: () => Promise<TelemetrySample>): Promise<void> {
    if (!buffer || stopping) return;
    try {
      const message = await buffer.append(await sampler());
      logger.debug({ seq: message.seq, pending: buffer.size, connected: client?.connected ?? false }, 'telemetry sample');
      await flushTelemetry();
    } catch (error) {
      logger.error({ err: error }, 'telemetry sample failed');
    }
  }

  const agent: Agent = {
    get models() {
      return models;
    },
    connected: () => client?.connected ?? false,
    httpPort: () => http?.port,
    info,

    async start() {
      version = await agentVersion();
      void dockerReachable().then((ok) => (dockerOk = ok));
      await mkdir(config.dataDir, { recursive: true });
      if (!models) {
        models = await createModelService({
          dataDir: config.dataDir,
          threads: config.inferenceThreads,
          runtime: config.runtime,
          workerSessionBytes: config.workerSessionMb * 1024 * 1024,
          keepVersions: config.keepVersions,
          logger,
          identity,
          ...(config.fleetPublicKeyPem ? { publicKeyPem: config.fleetPublicKeyPem } : {}),
        });
        ownModels = true;
      }
      const service = models;
      if (config.agentHome) {
        updater = await createAgentUpdater({
          agentHome: config.agentHome,
          version,
          logger,
          requestRestart: () => void agent.stop('restarting into a new agent version').then(() => deps.onRestart?.()),
          publishEvent,
        });
      }
      if (config.fleetPublicKeyPem) {
        transfer = createTransferReceiver({
          dataDir: config.dataDir,
          publicKeyPem: config.fleetPublicKeyPem,
          identity,
          models: service,
          ...(updater ? { agentBundles: updater.receiver } : {}),
          publishEvent: (e) => {
            publishEvent(e);
            if (e.event === 'model.activated') void publishStatus();
          },
          logger,
        });
      }
      if (config.http) {
        http = await createInferenceServer(service, { host: config.httpHost, port: config.httpPort, logger });
        logger.info({ host: config.httpHost, port: http.port }, 'HTTP inference API listening');
      }
      legacy = new LegacyChannel({
        program: config.legacyProgram,
        install: config.legacyInstall,
        stopTimeoutMs: config.legacyStopTimeoutMs,
        models: service,
        logger,
        ...(deps.print ? { print: deps.print } : {}),
        onExit: () => {
          void agent.stop('exit command').then(() => deps.onExit?.('exit command'));
        },
      });
      buffer = await TelemetryBuffer.open(config.dataDir, config.telemetryBufferMax, logger);
      const sampler = createSampler({ dataDir: config.dataDir, drainHealth: () => (models ? models.drainHealth() : {}) });
      telemetryTimer = setInterval(() => void takeSample(sampler), config.telemetryIntervalMs);
      client = connect();
      logger.info({ broker: config.broker, groups: config.groups, version }, 'agent started');
    },

    stop(reason = 'stopped') {
      stopping ??= (async () => {
        logger.info({ reason }, 'stopping: no new requests, finishing those in flight');
        acceptingCommands = false;
        dispatcher.close();
        clearInterval(telemetryTimer);
        clearTimeout(reconnectTimer);
        reconnectTimer = undefined;
        const c = client;
        if (c?.connected) {
          await withTimeout(c.unsubscribeAsync(subscriptions()).then(() => undefined), 2000, undefined).catch(
            (error: unknown) => logger.warn({ err: error }, 'unsubscribe failed'),
          );
        }
        const closingHttp = http ? http.close().catch((error: unknown) => logger.warn({ err: error }, 'HTTP close failed')) : undefined;
        const drained = await dispatcher.drain(config.shutdownTimeoutMs);
        await closingHttp;
        logger.info({ ...dispatcher.stats, drained }, 'requests finished');
        await legacy?.close();
        await transfer?.close().catch((error: unknown) => logger.warn({ err: error }, 'transfer close failed'));
        if (ownModels) await models?.close().catch((error: unknown) => logger.warn({ err: error }, 'model service close failed'));
        if (c) {
          if (c.connected) {
            await withTimeout(publishJson(statusTopic, makeOffline(reason), true), 3000, undefined).catch((error: unknown) =>
              logger.warn({ err: error }, 'could not publish offline status'),
            );
          }
          // a clean DISCONNECT: the broker discards the will (the offline status is already retained)
          await withTimeout(c.endAsync(false), 3000, undefined).catch(() => undefined);
          if (!c.disconnected) await c.endAsync(true).catch(() => undefined);
        }
        await buffer?.close();
        logger.info({ reason, pendingTelemetry: buffer?.size ?? 0 }, 'agent stopped');
      })();
      return stopping;
    },
  };
  return agent;
}
