/**
 * What the dashboard reads from the controller: the API's own types (imported, so a change
 * there is a compile error here), widened where newer agents report more (runtime, containers).
 */
import type { PublicDevice, RolloutView as ApiRolloutView, ModelView } from '../../src/api/contract.js';
import type { RolloutSummary } from '../../src/rollouts/summary.js';
import type { VitalsSeries } from '../../src/devices/vitals-history.js';
import type { ModelVersionRecord } from '../../src/state/schema.js';

/** A container as agents with container support report it (DeviceInfo.containers / telemetry.containers). */
export interface ContainerView {
  app: string;
  version: number;
  role?: string;
  id: string;
  name: string;
  image?: string;
  state: string;
  running?: boolean;
  health?: string;
  restarts?: number;
  startedAt?: number | null;
  exitCode?: number | null;
}

export type DeviceInfoView = NonNullable<PublicDevice['info']> & { runtime?: { name?: string; version?: string; backend?: string } | string | null; containers?: ContainerView[] };
export type DeviceView = Omit<PublicDevice, 'info' | 'telemetry'> & {
  info: DeviceInfoView | null;
  telemetry: (NonNullable<PublicDevice['telemetry']> & { containers?: ContainerView[] }) | null;
};
export type RolloutView = ApiRolloutView;
export type { ModelView, ModelVersionRecord, RolloutSummary, VitalsSeries };

/** A version record, with what newer controllers add (a check policy). */
export type VersionView = ModelVersionRecord & { check?: unknown };

export type FeedEvent =
  | { type: 'snapshot'; devices: DeviceView[]; rollouts: RolloutSummary[] }
  | { type: 'device'; device: string; online: boolean; record: DeviceView }
  | { type: 'telemetry'; device: string; seq?: number; sample: NonNullable<DeviceView['telemetry']> }
  /** A device's own event (its word, not the controller's): `text` is the controller's marked, printable line for it. */
  | { type: 'event'; device: string; reportedBy?: string; text?: string; event: { event: string; ts: number; data: Record<string, unknown> } }
  | { type: 'rollout'; id: string; status: string; summary: RolloutSummary }
  | { type: 'audit'; entry: { ts: string; actor: string; action: string; target?: string; result: string; detail?: unknown } };
