/**
 * Telemetry through a broker restart: the agent buffers samples on disk while
 * the broker is gone, reconnects with backoff to a new broker on the same
 * port, re-announces itself and flushes every sample, in order.
 */
import { describe, it, expect, afterAll } from '@jest/globals';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TelemetryMessageSchema, topics } from '@edgefleet/protocol';
import type { StatusMessage, TelemetryMessage } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { cleanupAgents, spawnAgent } from '../../test/support/agent-process.js';
import type { AgentProcess } from '../../test/support/agent-process.js';

const DEVICE = { id: 'pi-telemetry', token: 'device-token-t' };
let broker: RunningBroker | undefined;
let agent: AgentProcess | undefined;

afterAll(async () => {
  await cleanupAgents(agent);
  await broker?.close();
});

/** Collects the device's telemetry and status inside the broker itself (subscribed before any client can connect). */
function collect(b: RunningBroker, telemetry: TelemetryMessage[], status: StatusMessage[], onChange: () => void): void {
  b.aedes.subscribe(
    topics.device(DEVICE.id, 'telemetry'),
    (packet, cb) => {
      telemetry.push(TelemetryMessageSchema.parse(JSON.parse(packet.payload.toString())));
      onChange();
      cb();
    },
    () => undefined,
  );
  b.aedes.subscribe(
    topics.device(DEVICE.id, 'status'),
    (packet, cb) => {
      status.push(JSON.parse(packet.payload.toString()) as StatusMessage);
      onChange();
      cb();
    },
    () => undefined,
  );
}

function until(what: string, check: () => boolean, listeners: Set<() => void>, timeoutMs = 15_000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (check()) return resolve();
    const timer = setTimeout(() => {
      listeners.delete(fn);
      reject(new Error(`timed out waiting for ${what}`));
    }, timeoutMs);
    const fn = () => {
      if (check()) {
        clearTimeout(timer);
        listeners.delete(fn);
        resolve();
      }
    };
    listeners.add(fn);
  });
}

describe('telemetry', () => {
  it('has the protocol shape, and samples taken during a broker restart all arrive, in order', async () => {
    const telemetry: TelemetryMessage[] = [];
    const status: StatusMessage[] = [];
    const listeners = new Set<() => void>();
    const changed = () => {
      for (const l of [...listeners]) l();
    };
    broker = await startTestBroker({ devices: [DEVICE] });
    const port = broker.ports.tcp!;
    collect(broker, telemetry, status, changed);
    agent = await spawnAgent({ broker: broker.url, ...DEVICE, telemetryIntervalMs: 150 });
    await until('3 samples', () => telemetry.length >= 3, listeners);

    const first = telemetry[0]!;
    expect(first.sample.memoryTotalBytes).toBeGreaterThan(first.sample.memoryUsedBytes);
    expect(first.sample.diskFreeBytes).toBeGreaterThan(0);
    expect(first.sample.cpuPercent).toBeGreaterThanOrEqual(0);
    expect(first.sample.load).toHaveLength(3);
    expect(first.sample.uptimeS).toBeGreaterThan(0);
    expect(first.dropped).toBe(0);

    // broker gone: the agent keeps sampling into its disk buffer
    await broker.close();
    const bufferFile = join(agent.dataDir, 'telemetry', 'buffer.jsonl');
    await agent.waitForLog((l) => l.msg === 'disconnected from the broker');
    const buffered = async () => (await readFile(bufferFile, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
    await agent.waitForLog((l) => l.msg === 'telemetry sample' && l.connected === false && Number(l.pending) >= 4);
    expect(await buffered()).toBeGreaterThanOrEqual(4);

    // a new broker on the same port
    broker = await startTestBroker({ devices: [DEVICE], tcp: { host: '127.0.0.1', port } });
    const statusBefore = status.length;
    collect(broker, telemetry, status, changed);
    await until('online again', () => status.slice(statusBefore).some((s) => s.online), listeners);
    const target = telemetry.length + 6;
    await until('the buffer flushed and new samples flowing', () => telemetry.length >= target, listeners);

    // complete and in order: seq contiguous from the first sample (duplicates allowed, QoS 1 is at least once)
    const seqs = telemetry.map((m) => m.seq);
    const firstSeen: number[] = [];
    for (const s of seqs) if (!firstSeen.includes(s)) firstSeen.push(s);
    expect(firstSeen).toEqual(Array.from({ length: firstSeen.length }, (_, i) => i));
    expect(telemetry.every((m) => m.dropped === 0)).toBe(true);
    // and the disk buffer drained: a later sample finds at most itself pending
    const last = Math.max(...seqs);
    await agent.waitForLog((l) => l.msg === 'telemetry sample' && l.connected === true && Number(l.seq) > last && Number(l.pending) <= 1);
    // reconnects were spread by backoff, not a fixed period
    const delays = agent.logs.filter((l) => l.msg === 'reconnecting after backoff').map((l) => Number(l.delayMs));
    expect(delays.length).toBeGreaterThan(1);
    expect(Math.max(...delays)).toBeLessThanOrEqual(1000);
  });

  it('starts with the broker down, keeps retrying with backoff, and delivers what it sampled before the first connection', async () => {
    // a port nothing listens on (a broker that was there and left)
    const gone = await startTestBroker({ devices: [DEVICE] });
    const port = gone.ports.tcp!;
    await gone.close();
    await cleanupAgents(agent);
    agent = await spawnAgent({ broker: `mqtt://127.0.0.1:${port}`, ...DEVICE, telemetryIntervalMs: 150 });
    await agent.waitForLog((l) => l.msg === 'reconnecting after backoff' && Number(l.attempt) >= 3);
    await agent.waitForLog((l) => l.msg === 'telemetry sample' && l.connected === false && Number(l.pending) >= 2);
    const telemetry: TelemetryMessage[] = [];
    const status: StatusMessage[] = [];
    const listeners = new Set<() => void>();
    await broker?.close();
    broker = await startTestBroker({ devices: [DEVICE], tcp: { host: '127.0.0.1', port } });
    collect(broker, telemetry, status, () => {
      for (const l of [...listeners]) l();
    });
    await until('online', () => status.some((s) => s.online), listeners);
    await until('the offline samples', () => telemetry.length >= 3, listeners);
    const first = telemetry[0]!;
    expect(first.sample.ts).toBeLessThan(status.find((s) => s.online)!.ts); // sampled before the connection existed
    const seqs = telemetry.map((m) => m.seq);
    expect(seqs.slice(0, 3)).toEqual([0, 1, 2]);
  });
});
