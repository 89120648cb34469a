/**
 * When presence reaches the state file: a status that changes what is kept about a device
 * (its info) is written within `flushMs`; one that only says online or offline again waits
 * for `presenceFlushMs` (after a restart presence comes back from the retained status), so
 * ten thousand devices reconnecting do not rewrite the whole file every two seconds.
 * Real state file, real Fleet intake fed raw payloads as the broker delivers them.
 */
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { makeOffline, makeStatus, topics } from '@edgefleet/protocol';
import type { DeviceInfo } from '@edgefleet/protocol';
import { deviceInfo as info } from './support/device-info.js';
import type { BrokerClient } from '../src/broker-client.js';
import { Fleet } from '../src/devices/presence.js';
import { openState } from '../src/state/repository.js';
import type { FleetRepository } from '../src/state/repository.js';

/** The fleet is fed through `handle` here; start/stop only add and remove its message listener. */
const noBroker = { on: () => undefined, off: () => undefined } as unknown as BrokerClient;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('presence and the state file', () => {
  let dir: string;
  let state: FleetRepository;
  let writes: number;
  let fleet: Fleet;
  const status = (payload: unknown): void => fleet.handle(topics.device('dev-1', 'status'), Buffer.from(JSON.stringify(payload)));
  const onDisk = async (): Promise<{ info: DeviceInfo | null; offlineReason?: string | null }> => JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')).devices['dev-1'];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'presence-writes-'));
    writes = 0;
    state = await openState(join(dir, 'state.json'), { onWritten: () => void writes++ });
    state.putDevice({ id: 'dev-1', groups: ['g'], tokenHash: 'sha256$x', createdAt: new Date().toISOString(), online: false, lastSeen: null, info: null, telemetry: null, provisioned: true });
    await state.write();
    writes = 0;
    fleet = new Fleet({ mqtt: noBroker, state, logger: pino({ level: 'silent' }), flushMs: 50, presenceFlushMs: 1500 });
  });

  afterEach(async () => {
    await fleet.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('writes a status with new device info within flushMs', async () => {
    status(makeStatus(info));
    await sleep(400);
    expect(writes).toBe(1);
    expect((await onDisk()).info?.models).toEqual([{ name: 'm', version: 1 }]);

    // the device swapped its model: what is kept changed, written again soon
    status(makeStatus({ ...info, models: [{ name: 'm', version: 2 }] }));
    await sleep(400);
    expect(writes).toBe(2);
    expect((await onDisk()).info?.models).toEqual([{ name: 'm', version: 2 }]);
  });

  it('does not rewrite the file soon for presence alone, but does within presenceFlushMs', async () => {
    status(makeStatus(info));
    await sleep(400);
    expect(writes).toBe(1);

    // offline (last will) and back with the same info, five times: presence only
    for (let i = 0; i < 5; i++) {
      status(makeOffline('connection lost'));
      status(makeStatus(info));
    }
    await sleep(400);
    expect(writes).toBe(1);
    expect(fleet.isOnline('dev-1')).toBe(true);
    await sleep(1500);
    expect(writes).toBe(2); // all of it in one write
  });

  it('brings a pending presence write forward when a durable change arrives', async () => {
    status(makeStatus(info));
    await sleep(400);
    status(makeOffline('connection lost')); // presence only: due in 1.5 s
    status(makeStatus({ ...info, hostname: 'renamed' })); // durable: due in 50 ms
    await sleep(400);
    expect(writes).toBe(2);
    expect((await onDisk()).info?.hostname).toBe('renamed');
  });

  it('keeps a pending soon write soon when presence alone arrives after it, and writes the presence with it', async () => {
    status(makeStatus(info)); // durable: due in 50 ms
    status(makeOffline('connection lost')); // presence only, after it: must not push the write to 1.5 s
    await sleep(400);
    expect(writes).toBe(1);
    expect(await onDisk()).toMatchObject({ offlineReason: 'connection lost' });
  });

  it('keeps last seen from a retained offline status (after a restart): the device was seen when it left, not now', async () => {
    status(makeStatus(info));
    const seen = state.device('dev-1')!.lastSeen;
    expect(seen).not.toBeNull();
    await sleep(20);
    fleet.handle(topics.device('dev-1', 'status'), Buffer.from(JSON.stringify(makeOffline('connection lost'))), true);
    expect(fleet.isOnline('dev-1')).toBe(false);
    expect(state.device('dev-1')!.lastSeen).toBe(seen);
    fleet.handle(topics.device('dev-1', 'status'), Buffer.from(JSON.stringify(makeOffline('connection lost')))); // said now: its will
    expect(state.device('dev-1')!.lastSeen).not.toBe(seen);
  });

  it('writes what is pending when it stops', async () => {
    status(makeStatus(info));
    await sleep(400);
    status(makeOffline('shutting down'));
    await fleet.stop();
    expect(writes).toBe(2);
  });
});
