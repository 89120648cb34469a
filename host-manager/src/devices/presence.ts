/**
 * What the controller learns from the fleet without asking: presence (retained
 * status + last will), telemetry and events of every device, each validated
 * with the protocol's schemas (size and depth before parsing). Bad messages are
 * counted by channel and error code, logged and dropped.
 *
 * Everything a device can make the controller hold is bounded: its status by the
 * protocol's schema, its telemetry to the models the controller knows it runs (the
 * rest is dropped and counted) in a fixed ring (telemetry-history.ts) and the dashboard's
 * fixed-size charts (vitals-history.ts), its events in a ring of its own with a rate
 * (reports.ts), apart from the operator audit.
 *
 * Presence is hot (ten thousand devices reconnecting at once) and comes back from the
 * devices after a restart (retained status), so the state file is not rewritten for each
 * change of it: a status that changes what is kept about the device (its info, its groups,
 * a device seen for the first time) is written within `flushMs`; one that only changes
 * online, offline, last seen or the offline reason within `presenceFlushMs`. Telemetry is
 * never written (state/schema.ts, durableView): it is held in memory, and the next sample
 * replaces it.
 */
import { EventEmitter } from 'node:events';
import type { BrokerClient } from '../broker-client.js';
import type { Logger } from 'pino';
import {
  EventSchema,
  FleetError,
  StatusMessageSchema,
  TelemetryMessageSchema,
  parseMessage,
  parseTopic,
  topics,
} from '@edgefleet/protocol';
import type { FleetEvent, ModelHealth, StatusMessage, TelemetryMessage, TelemetrySample } from '@edgefleet/protocol';
import type { FleetRepository } from '../state/repository.js';
import type { AuditEntry, DeviceRecord } from '../state/schema.js';
import type { Metrics } from '../api/metrics.js';
import { DeviceReports } from './reports.js';
import { TelemetryHistory } from './telemetry-history.js';
import { TelemetrySequences } from './telemetry-seq.js';
import { VitalsHistory } from './vitals-history.js';

export type FeedEvent =
  | { type: 'device'; device: string; online: boolean; record: DeviceRecord }
  | { type: 'telemetry'; device: string; seq: number; sample: TelemetrySample }
  /**
   * A device's own event: `reportedBy` is `device:<id>`, and it is that device's word; `text` is its
   * report's line (reports.ts: "reported by device <id>: …", printable, cut), absent for transfer progress.
   */
  | { type: 'event'; device: string; reportedBy: string; event: FleetEvent; text?: string }
  | { type: 'rollout'; id: string; status: string; summary: unknown }
  | { type: 'audit'; entry: AuditEntry };

export interface FleetOptions {
  mqtt: BrokerClient;
  state: FleetRepository;
  logger: Logger;
  metrics?: Metrics;
  /** How soon a status that changed the device's info or groups is written (default 2 s). */
  flushMs?: number;
  /** How soon a status that changed only presence (online, offline, last seen) is written (default 60 s; never sooner than flushMs). */
  presenceFlushMs?: number;
  /**
   * Record devices that were never provisioned here when they show up (an external broker
   * authenticates them itself). Off with the embedded broker: there only provisioned
   * devices can connect, so a message from an unknown id is a stale retained message or
   * the last will of a device just removed.
   */
  discover?: boolean;
  /** Whether a registry (models or images) has `name@version`; telemetry of others is dropped. Default: every model is known. */
  knownModel?: (name: string, version: number) => boolean;
}

/** Whether the device's status says it runs `name@version`: a model, or an app's container. */
function runs(rec: DeviceRecord, name: string, version: number): boolean {
  const info = rec.info;
  if (!info) return false;
  return info.models.some((m) => m.name === name && m.version === version) || (info.containers ?? []).some((c) => c.app === name && c.version === version);
}

/** What a status can change of the device's record beyond presence, as text to compare. */
function keptOf(rec: DeviceRecord): string {
  return JSON.stringify([rec.info, rec.groups]);
}

/** Whether a running rollout switches `device` to or from `name@version` (its telemetry is then kept before the status says so). */
export type ExpectedModel = (device: string, name: string, version: number) => boolean;

export class Fleet extends EventEmitter<{ feed: [FeedEvent] }> {
  readonly history = new TelemetryHistory();
  readonly reports = new DeviceReports();
  /** Each device's telemetry numbering as seen here: samples missing on the way, repeats. */
  readonly sequences = new TelemetrySequences();
  /** What the dashboard charts (a fixed size per device, fed only the models kept; see vitals-history.ts). */
  readonly vitals = new VitalsHistory();
  readonly #knownModel: (name: string, version: number) => boolean;
  #expectedModel: ExpectedModel = () => false;
  readonly #mqtt: BrokerClient;
  readonly #state: FleetRepository;
  readonly #log: Logger;
  readonly #metrics: Metrics | undefined;
  readonly #flushMs: number;
  readonly #presenceFlushMs: number;
  readonly #discover: boolean;
  /** Devices removed by the operator: their last will and stale messages must not bring them back. */
  readonly #removed = new Set<string>();
  #dirty = false;
  #flushTimer: NodeJS.Timeout | null = null;
  /** When the pending write is due (ms since epoch). */
  #flushDue = Infinity;
  readonly #onMessage = (topic: string, payload: Buffer, packet: { retain: boolean }): void => this.handle(topic, payload, packet.retain);

  constructor(opts: FleetOptions) {
    super();
    this.setMaxListeners(100);
    this.#mqtt = opts.mqtt;
    this.#state = opts.state;
    this.#log = opts.logger;
    this.#metrics = opts.metrics;
    this.#flushMs = opts.flushMs ?? 2000;
    this.#presenceFlushMs = Math.max(this.#flushMs, opts.presenceFlushMs ?? 60_000);
    this.#discover = opts.discover ?? true;
    this.#knownModel = opts.knownModel ?? (() => true);
  }

  /** Set by the rollouts once they exist (they are built after the fleet). */
  expectModels(expected: ExpectedModel): void {
    this.#expectedModel = expected;
  }

  /** The operator removed this device: forget what we know and ignore its last words. */
  forgetDevice(device: string): void {
    this.history.forget(device);
    this.sequences.forget(device);
    this.reports.forget(device);
    this.vitals.forget(device);
    this.#removed.add(device);
  }

  /** The device was provisioned (again). */
  admitDevice(device: string): void {
    this.#removed.delete(device);
  }

  async start(): Promise<void> {
    // The controller's view after a restart comes from the retained status messages, not from the file.
    for (const d of this.#state.devices()) d.online = false;
    this.#mqtt.on('message', this.#onMessage);
    this.#metrics?.onCollectDevices(() => {
      const all = this.#state.devices();
      const online = all.filter((d) => d.online).length;
      return { online, offline: all.length - online };
    });
    await this.#mqtt.subscribeAsync(
      [topics.allDevices('status'), topics.allDevices('telemetry'), topics.allDevices('events')],
      { qos: 1 },
    );
  }

  async stop(): Promise<void> {
    this.#mqtt.off('message', this.#onMessage);
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flushTimer = null;
    if (this.#dirty) await this.#state.write();
  }

  isOnline(device: string): boolean {
    return this.#state.device(device)?.online === true;
  }

  emitFeed(event: FeedEvent): void {
    this.emit('feed', event);
  }

  /** One incoming message. Public so tests can feed raw payloads. */
  handle(topic: string, payload: Buffer, retained = false): void {
    const parsed = parseTopic(topic);
    if (parsed?.kind !== 'device') return;
    const { device, channel } = parsed;
    if (channel !== 'status' && channel !== 'telemetry' && channel !== 'events') return;
    this.#metrics?.messages.inc({ channel });
    if (payload.length === 0) return; // a cleared retained message
    if (this.#removed.has(device) || (!this.#discover && !this.#state.device(device))) {
      this.#log.debug({ device, channel }, 'ignored a message from a device that is not in the fleet');
      return;
    }
    try {
      if (channel === 'status') this.#onStatus(device, parseMessage(StatusMessageSchema, payload), retained);
      else if (channel === 'telemetry') this.#onTelemetry(device, parseMessage(TelemetryMessageSchema, payload));
      else this.#onEvent(device, parseMessage(EventSchema, payload));
    } catch (error) {
      const code = error instanceof FleetError ? error.code : 'internal';
      this.#metrics?.badMessages.inc({ channel, code });
      this.#log.warn({ device, channel, code, err: (error as Error).message }, 'ignored a malformed message');
    }
  }

  #record(device: string): DeviceRecord {
    let rec = this.#state.device(device);
    if (!rec) {
      // Seen on an external broker without being provisioned here: recorded so the operator can see it.
      rec = {
        id: device,
        groups: [],
        tokenHash: '',
        createdAt: new Date().toISOString(),
        online: false,
        lastSeen: null,
        info: null,
        telemetry: null,
        provisioned: false,
      };
      this.#state.putDevice(rec);
      this.#log.info({ device }, 'discovered a device that was not provisioned here');
    }
    return rec;
  }

  /** `retained`: stored by the broker, not said now (a subscription's first messages, as after a restart). */
  #onStatus(device: string, msg: StatusMessage, retained: boolean): void {
    const isNew = this.#state.device(device) === undefined;
    const rec = this.#record(device);
    const was = rec.online;
    const before = keptOf(rec);
    // a retained offline status is old news: the device was last seen when it left, not now
    if (msg.online || !retained) rec.lastSeen = new Date().toISOString();
    if (msg.online) {
      rec.online = true;
      rec.info = msg.device;
      rec.offlineReason = null;
      if (rec.groups.length === 0 && rec.provisioned === false) rec.groups = [...msg.device.groups];
    } else {
      rec.online = false;
      rec.offlineReason = msg.reason;
    }
    if (was !== rec.online) this.#log.info({ device, online: rec.online }, rec.online ? 'device online' : 'device offline');
    this.emitFeed({ type: 'device', device, online: rec.online, record: rec });
    this.#markDirty(isNew || keptOf(rec) !== before ? this.#flushMs : this.#presenceFlushMs);
  }

  #onTelemetry(device: string, msg: TelemetryMessage): void {
    const rec = this.#record(device);
    const sample = { ...msg.sample, models: this.#modelsItRuns(rec, msg.sample.models) };
    rec.telemetry = sample;
    rec.lastSeen = new Date().toISOString();
    this.history.push(device, sample.models);
    this.vitals.push(device, sample);
    for (const [key, h] of Object.entries(sample.models)) {
      const model = key.slice(0, key.lastIndexOf('@')); // a registry model's name: a bounded set of label values
      this.#metrics?.inferenceRequests.inc({ model }, h.requests);
      this.#metrics?.inferenceErrors.inc({ model }, h.errors);
    }
    const order = this.sequences.observe(device, msg.seq, msg.dropped);
    if (order.missing > 0) this.#metrics?.telemetryMissing.inc(order.missing);
    if (order.verdict === 'repeat') this.#metrics?.telemetryRepeated.inc();
    if (msg.dropped > 0) this.#metrics?.telemetryDropped.inc(msg.dropped);
    this.emitFeed({ type: 'telemetry', device, seq: msg.seq, sample });
  }

  /**
   * The entries of `models` (`name@version` → health) for models the controller knows this device
   * runs: in the registry (models, or image apps serving inference), and active on it by its status
   * (its models or its containers) or switched by a running rollout. The
   * others are dropped and counted, so no device can make the controller hold a model it invented.
   */
  #modelsItRuns(rec: DeviceRecord, models: Record<string, ModelHealth>): Record<string, ModelHealth> {
    const kept: Record<string, ModelHealth> = Object.create(null) as Record<string, ModelHealth>;
    let unknown = 0;
    let notRunning = 0;
    for (const key of Object.keys(models)) {
      const at = key.lastIndexOf('@');
      const name = key.slice(0, at);
      const version = Number(key.slice(at + 1));
      if (at <= 0 || !Number.isInteger(version) || !this.#knownModel(name, version)) unknown++;
      else if (!runs(rec, name, version) && !this.#expectedModel(rec.id, name, version)) notRunning++;
      else kept[key] = models[key]!;
    }
    if (unknown > 0) this.#metrics?.telemetryModelsDropped.inc({ reason: 'unknown_model' }, unknown);
    if (notRunning > 0) this.#metrics?.telemetryModelsDropped.inc({ reason: 'not_running' }, notRunning);
    this.reports.countDroppedModels(rec.id, unknown + notRunning);
    return kept;
  }

  /** A device's event: within its rate it is kept as that device's report (never in the operator audit) and shown on the feed. */
  #onEvent(device: string, event: FleetEvent): void {
    if (!this.reports.admit(device)) {
      this.#metrics?.deviceEventsDropped.inc();
      return;
    }
    const report = this.reports.record(device, event);
    this.emitFeed({ type: 'event', device, reportedBy: `device:${device}`, event, ...(report ? { text: report.text } : {}) });
  }

  /** The state file is written within `withinMs` (sooner if an earlier write is already due). */
  #markDirty(withinMs: number): void {
    this.#dirty = true;
    const due = Date.now() + withinMs;
    if (this.#flushTimer && this.#flushDue <= due) return;
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flushDue = due;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = null;
      this.#flushDue = Infinity;
      if (!this.#dirty) return;
      this.#dirty = false;
      void this.#state.write().catch((error: unknown) => this.#log.error({ err: error }, 'could not write the state file'));
    }, withinMs);
    this.#flushTimer.unref();
  }
}
