/** The last minutes of telemetry per device, in memory, for rollout gates. Times are the controller's clock. */
import { ownEntry } from '@edgefleet/protocol';
import type { ModelHealth, TelemetrySample } from '@edgefleet/protocol';

export class TelemetryHistory {
  readonly #byDevice = new Map<string, { at: number; sample: TelemetrySample }[]>();
  constructor(
    readonly keepMs = 30 * 60_000,
    readonly maxPerDevice = 2000,
  ) {}

  push(device: string, sample: TelemetrySample, at = Date.now()): void {
    let list = this.#byDevice.get(device);
    if (!list) this.#byDevice.set(device, (list = []));
    list.push({ at, sample });
    while (list.length > this.maxPerDevice || (list[0] && list[0].at < at - this.keepMs)) list.shift();
  }

  /** Per-interval health of `model@version` on a device, received in [from, to). */
  health(device: string, modelKey: string, from: number, to = Number.POSITIVE_INFINITY): ModelHealth[] {
    return (this.#byDevice.get(device) ?? [])
      .filter((e) => e.at >= from && e.at < to)
      .map((e) => ownEntry(e.sample.models, modelKey))
      .filter((h): h is ModelHealth => h !== undefined);
  }

  forget(device: string): void {
    this.#byDevice.delete(device);
  }
}
