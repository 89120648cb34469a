/**
 * What the controller saw of each device's telemetry sequence (volatile: one small entry per
 * device, gone with the device or a restart). Agents number their samples; a jump in the
 * numbers that the agent's own `dropped` count (samples its offline buffer had to drop)
 * does not explain is telemetry lost on the way, and a number not above the last one is a
 * repeat (a QoS 1 redelivery after a reconnect) or a reordering.
 */
export interface DeviceSequence {
  /** The first and the last sequence number seen since the controller started. */
  first: number;
  last: number;
  received: number;
  /** Samples never seen that the agent did not report as dropped. */
  missing: number;
  /** Samples the agent reported as dropped by its buffer. */
  dropped: number;
  /** Samples whose number was not above the last one seen. */
  repeated: number;
}

export type SequenceVerdict = 'next' | 'first' | 'gap' | 'repeat';

export class TelemetrySequences {
  readonly #byDevice = new Map<string, DeviceSequence>();

  /** Records one sample; says how it relates to what came before. */
  observe(device: string, seq: number, dropped: number): { verdict: SequenceVerdict; missing: number } {
    const s = this.#byDevice.get(device);
    if (!s) {
      this.#byDevice.set(device, { first: seq, last: seq, received: 1, missing: 0, dropped, repeated: 0 });
      return { verdict: 'first', missing: 0 };
    }
    s.received++;
    s.dropped += dropped;
    if (seq <= s.last) {
      s.repeated++;
      return { verdict: 'repeat', missing: 0 };
    }
    const missing = Math.max(0, seq - s.last - 1 - dropped);
    s.last = seq;
    s.missing += missing;
    return { verdict: missing > 0 ? 'gap' : 'next', missing };
  }

  of(device: string): DeviceSequence | undefined {
    const s = this.#byDevice.get(device);
    return s ? { ...s } : undefined;
  }

  forget(device: string): void {
    this.#byDevice.delete(device);
  }
}
