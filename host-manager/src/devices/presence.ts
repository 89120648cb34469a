/**
 * What the controller learns from the fleet without asking: presence (retained
 * status + last will), telemetry and events of every device, each validated
 * with the protocol's schemas. Bad messages are counted, logged and dropped.
 *
 * Presence is hot (a thousand devices reconnecting at once), so it is written to the
 * state file at most every `flushMs`; telemetry is never written (state/schema.ts,
 * durableView): it is held in memory, and the next sample replaces it.
 */
import { EventEmitter } from 'node:events';
import type { BrokerClient } from '../broker-client.js';
import type { Logger } from 'pino';
import {
  EventSchema,
  StatusMessageSchema,
  TelemetryMessageSchema,
  parseMessage,
  parseTopic,
  topics,
} from '@edgefleet/protocol';
import type { FleetEvent, StatusMessage, TelemetryMessage, TelemetrySample } from '@edgefleet/protocol';
import type { FleetRepository } from '../state/repository.js';
import type { AuditEntry, DeviceRecord } from '../state/schema.js';
import type { Metrics } from '../api/metrics.js';
import { TelemetryHistory } from './telemetry-history.js';
import { TelemetrySequences } from './telemetry-seq.js';
import { VitalsHistory } from './vitals-history.js';

export type FeedEvent =
  | { type: 'device'; device: string; online: boolean; record: DeviceRecord }
  | { type: 'telemetry'; device: string; seq: number; sample: TelemetrySample }
  | { type: 'event'; device: string; event: FleetEvent }
  | { type: 'rollout'; id: string; status: string; summary: unknown }
  | { type: 'audit'; entry: AuditEntry };

export interface FleetOptions {
  mqtt: BrokerClient;
  state: FleetRepository;
  logger: Logger;
  metrics?: Metrics;
  flushMs?: number;
  /**
   * Record devices that were never provisioned here when they show up (an external broker
   * authenticates them itself). Off with the embedded broker: there only provisioned
   * devices can connect, so a message from an unknown id is a stale retained message or
   * the last will of a device just removed.
   */
  discover?: boolean;
}

export class Fleet extends EventEmitter<{ feed: [FeedEvent] }> {
  readonly history = new TelemetryHistory();
  /** Each device's telemetry numbering as seen here: samples missing on the way, repeats. */
  readonly sequences = new TelemetrySequences();
  /** What the dashboard charts (bounded per device; see vitals-history.ts). */
  readonly vitals = new VitalsHistory();
  readonly #mqtt: BrokerClient;
  readonly #state: FleetRepository;
  readonly #log: Logger;
  readonly #metrics: Metrics | undefined;
  readonly #flushMs: number;
  readonly #discover: boolean;
  /** Devices removed by the operator: their last will and stale messages must not bring them back. */
  readonly #removed = new Set<string>();
  #dirty = false;
  #flushTimer: NodeJS.Timeout | null = null;
  readonly #onMessage = (topic: string, payload: Buffer): void => this.handle(topic, payload);

  constructor(opts: FleetOptions) {
    super();
    this.setMaxListeners(100);
    this.#mqtt = opts.mqtt;
    this.#state = opts.state;
    this.#log = opts.logger;
    this.#metrics = opts.metrics;
    this.#flushMs = opts.flushMs ?? 2000;
    this.#discover = opts.discover ?? true;
  }

  /** The operator removed this device: forget what we know and ignore its last words. */
  forgetDevice(device: string): void {
    this.history.forget(device);
    this.sequences.forget(device);
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
  handle(topic: string, payload: Buffer): void {
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
      if (channel === 'status') this.#onStatus(device, parseMessage(StatusMessageSchema, payload));
      else if (channel === 'telemetry') this.#onTelemetry(device, parseMessage(TelemetryMessageSchema, payload));
      else this.#onEvent(device, parseMessage(EventSchema, payload));
    } catch (error) {
      this.#metrics?.badMessages.inc({ channel });
      this.#log.warn({ device, channel, err: (error as Error).message }, 'ignored a malformed message');
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

  #onStatus(device: string, msg: StatusMessage): void {
    const rec = this.#record(device);
    const was = rec.online;
    rec.lastSeen = new Date().toISOString();
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
    // Presence is not an acknowledged change (after a restart it comes from the retained status
    // messages again), so it is written with the telemetry, not once per message.
    this.#markDirty();
  }

  #onTelemetry(device: string, msg: TelemetryMessage): void {
    const rec = this.#record(device);
    rec.telemetry = msg.sample;
    rec.lastSeen = new Date().toISOString();
    this.history.push(device, msg.sample);
    this.vitals.push(device, msg.sample);
    for (const [key, h] of Object.entries(msg.sample.models)) {
      const model = key.split('@')[0] ?? key;
      this.#metrics?.inferenceRequests.inc({ model }, h.requests);
      this.#metrics?.inferenceErrors.inc({ model }, h.errors);
    }
    const order = this.sequences.observe(device, msg.seq, msg.dropped);
    if (order.missing > 0) this.#metrics?.telemetryMissing.inc(order.missing);
    if (order.verdict === 'repeat') this.#metrics?.telemetryRepeated.inc();
    if (msg.dropped > 0) this.#metrics?.telemetryDropped.inc(msg.dropped);
    this.emitFeed({ type: 'telemetry', device, seq: msg.seq, sample: msg.sample });
  }

  #onEvent(device: string, event: FleetEvent): void {
    if (event.event === 'model.activated' || event.event === 'model.failed') {
      const entry = this.#state.appendAudit({
        actor: `device:${device}`,
        action: event.event,
        target: `${event.data.model}@${event.data.version}`,
        result: event.event === 'model.activated' ? 'ok' : 'error',
        detail: event.data,
      });
      this.emitFeed({ type: 'audit', entry });
      this.#markDirty();
    }
    this.emitFeed({ type: 'event', device, event });
  }

  #markDirty(): void {
    this.#dirty = true;
    if (this.#flushTimer) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = null;
      if (!this.#dirty) return;
      this.#dirty = false;
      void this.#state.write().catch((error: unknown) => this.#log.error({ err: error }, 'could not write the state file'));
    }, this.#flushMs);
    this.#flushTimer.unref();
  }
}
