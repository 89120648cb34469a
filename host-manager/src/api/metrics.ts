/**
 * Prometheus metrics of the controller, in a registry of its own (no global state). Every label
 * value comes from a bounded set the controller owns (channels, error codes, registry model
 * names, routes, reasons), never from what a device says, and there is no per-device label: a
 * device cannot mint a series.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface Metrics {
  registry: Registry;
  devices: Gauge<'state'>;
  messages: Counter<'channel'>;
  badMessages: Counter<'channel' | 'code'>;
  telemetryModelsDropped: Counter<'reason'>;
  deviceEventsDropped: Counter;
  enrolmentsRefused: Counter<'reason'>;
  inferenceRequests: Counter<'model'>;
  inferenceErrors: Counter<'model'>;
  httpRequests: Counter<'method' | 'route' | 'status'>;
  rollouts: Gauge<'status'>;
  deliveries: Counter<'result'>;
  deliveryPhase: Histogram<'phase'>;
  /** Telemetry samples never seen that the agents did not report as dropped (seq gaps). */
  telemetryMissing: Counter;
  /** Telemetry samples agents reported as dropped by their offline buffer. */
  telemetryDropped: Counter;
  /** Telemetry samples whose sequence number was not above the last one seen (QoS 1 redeliveries). */
  telemetryRepeated: Counter;
  /** Bytes the durable state writes put on disk (the file and its last-good copy). */
  stateBytesWritten: Counter;
  /** Where the devices gauge reads its values at scrape time (counting on every message would be O(fleet) each). */
  onCollectDevices(read: () => { online: number; offline: number }): void;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'edgefleet_controller_' });
  const registers = [registry];
  let readDevices: (() => { online: number; offline: number }) | undefined;
  return {
    registry,
    onCollectDevices(read) {
      readDevices = read;
    },
    devices: new Gauge({
      name: 'edgefleet_devices',
      help: 'Devices known to the controller, by presence',
      labelNames: ['state'],
      registers,
      collect() {
        if (!readDevices) return;
        const counts = readDevices();
        this.set({ state: 'online' }, counts.online);
        this.set({ state: 'offline' }, counts.offline);
      },
    }),
    messages: new Counter({ name: 'edgefleet_messages_total', help: 'Device messages received, by channel', labelNames: ['channel'], registers }),
    badMessages: new Counter({
      name: 'edgefleet_bad_messages_total',
      help: 'Device messages dropped because they failed validation, by channel and error code (too_long and too_deep: refused before parsing)',
      labelNames: ['channel', 'code'],
      registers,
    }),
    telemetryModelsDropped: new Counter({
      name: 'edgefleet_telemetry_models_dropped_total',
      help: 'Telemetry entries dropped because the controller does not know the device runs that model (unknown_model: not in the registry; not_running: not active on the device)',
      labelNames: ['reason'],
      registers,
    }),
    enrolmentsRefused: new Counter({
      name: 'edgefleet_enrolments_refused_total',
      help: 'Enrolment attempts refused (wrong_key, rate_limited); they are not audited',
      labelNames: ['reason'],
      registers,
    }),
    deviceEventsDropped: new Counter({
      name: 'edgefleet_device_events_dropped_total',
      help: 'Device events dropped because the device was over its rate',
      registers,
    }),
    inferenceRequests: new Counter({
      name: 'edgefleet_inference_requests_total',
      help: 'Inference requests devices reported in telemetry, by model (registry models only)',
      labelNames: ['model'],
      registers,
    }),
    inferenceErrors: new Counter({
      name: 'edgefleet_inference_errors_total',
      help: 'Failed inference requests devices reported in telemetry, by model',
      labelNames: ['model'],
      registers,
    }),
    httpRequests: new Counter({
      name: 'edgefleet_http_requests_total',
      help: 'HTTP API requests, by method, route and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    }),
    rollouts: new Gauge({ name: 'edgefleet_rollouts', help: 'Rollouts by status', labelNames: ['status'], registers }),
    telemetryMissing: new Counter({ name: 'edgefleet_telemetry_missing_total', help: 'Telemetry samples never received that the devices did not report as dropped', registers }),
    telemetryDropped: new Counter({ name: 'edgefleet_telemetry_dropped_total', help: "Telemetry samples the devices' offline buffers dropped (reported by the devices)", registers }),
    telemetryRepeated: new Counter({ name: 'edgefleet_telemetry_repeated_total', help: 'Telemetry samples received again or out of order (QoS 1 redelivery)', registers }),
    stateBytesWritten: new Counter({ name: 'edgefleet_state_bytes_written_total', help: 'Bytes written to the state file and its last-good copy', registers }),
    deliveries: new Counter({ name: 'edgefleet_deliveries_total', help: 'Model deliveries to devices, by result', labelNames: ['result'], registers }),
    deliveryPhase: new Histogram({
      name: 'edgefleet_delivery_phase_seconds',
      help: 'Time spent in each phase of a delivery (hash, offer, chunks, commit)',
      labelNames: ['phase'],
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300],
      registers,
    }),
  };
}
