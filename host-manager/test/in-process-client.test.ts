/**
 * The controller as an in-process client of the embedded broker (src/broker-client.ts), with a
 * real broker and a real device connection: messages and publishes both ways, retained
 * messages on subscribe, held filters that lose nothing published before the controller's
 * parts subscribe; and the per-device telemetry numbering (src/devices/telemetry-seq.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import mqtt from 'mqtt';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { InProcessClient } from '../src/broker-client.js';
import { TelemetrySequences } from '../src/devices/telemetry-seq.js';

const TOKEN = 'token-dev-1-0123456789abcdefghijklmnop';
let broker: RunningBroker;
let device: mqtt.MqttClient;

beforeAll(async () => {
  broker = await startTestBroker({ devices: [{ id: 'dev-1', token: TOKEN, groups: ['lab'] }] });
});
afterAll(async () => {
  await device?.endAsync(true);
  await broker.close();
});

const until = async (check: () => boolean, what: string, ms = 5000): Promise<void> => {
  for (const deadline = Date.now() + ms; !check(); ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('the in-process client', () => {
  it('holds what devices publish before the controller subscribes, then delivers it in order; retained status too; publishes reach devices', async () => {
    const client = new InProcessClient(broker.aedes, { hold: ['fleet/v1/devices/+/telemetry', 'fleet/v1/devices/+/status'] });
    const got: string[] = [];
    client.on('message', (topic, payload, packet) => got.push(`${topic} ${payload.toString()}${packet.retain ? ' (retained)' : ''}`));
    device = await mqtt.connectAsync(broker.url, { clientId: 'dev-1', username: 'dev-1', password: TOKEN, protocolVersion: 4, reconnectPeriod: 0 });
    await device.publishAsync('fleet/v1/devices/dev-1/status', 'online', { qos: 1, retain: true });
    for (let i = 0; i < 5; i++) await device.publishAsync('fleet/v1/devices/dev-1/telemetry', `t${i}`, { qos: 1 });
    expect(got).toEqual([]); // acknowledged by the broker, held for the controller

    await client.subscribeAsync('fleet/v1/devices/+/telemetry', { qos: 1 });
    expect(got).toEqual([0, 1, 2, 3, 4].map((i) => `fleet/v1/devices/dev-1/telemetry t${i}`));
    await client.subscribeAsync('fleet/v1/devices/+/status', { qos: 1 });
    expect(got.slice(5)).toEqual(['fleet/v1/devices/dev-1/status online', 'fleet/v1/devices/dev-1/status online (retained)']);

    await device.publishAsync('fleet/v1/devices/dev-1/telemetry', 'live', { qos: 1 });
    await until(() => got.includes('fleet/v1/devices/dev-1/telemetry live'), 'a live message');

    const commands: string[] = [];
    await device.subscribeAsync('fleet/v1/devices/dev-1/commands', { qos: 1 });
    device.on('message', (topic, payload) => commands.push(`${topic} ${payload.toString()}`));
    await client.publishAsync('fleet/v1/devices/dev-1/commands', 'ping', { qos: 1 });
    await until(() => commands.length === 1, 'the command at the device');
    expect(commands).toEqual(['fleet/v1/devices/dev-1/commands ping']);

    await client.unsubscribeAsync('fleet/v1/devices/+/telemetry');
    const before = got.length;
    await device.publishAsync('fleet/v1/devices/dev-1/telemetry', 'after', { qos: 1 });
    await new Promise((r) => setTimeout(r, 50));
    expect(got.length).toBe(before);
    await client.endAsync();
    expect(client.connected).toBe(false);
    await expect(client.publishAsync('fleet/v1/devices/dev-1/commands', 'late', { qos: 1 })).rejects.toThrow(/closed/);
  });
});

describe('telemetry numbering per device', () => {
  it('counts samples missing on the way, apart from those the agent dropped, and repeats', () => {
    const s = new TelemetrySequences();
    expect(s.observe('d', 10, 0)).toEqual({ verdict: 'first', missing: 0 });
    expect(s.observe('d', 11, 0)).toEqual({ verdict: 'next', missing: 0 });
    expect(s.observe('d', 14, 0)).toEqual({ verdict: 'gap', missing: 2 });
    expect(s.observe('d', 20, 5)).toEqual({ verdict: 'next', missing: 0 }); // 15..19 dropped by its own buffer
    expect(s.observe('d', 20, 0)).toEqual({ verdict: 'repeat', missing: 0 });
    expect(s.observe('d', 18, 0)).toEqual({ verdict: 'repeat', missing: 0 });
    expect(s.of('d')).toEqual({ first: 10, last: 20, received: 6, missing: 2, dropped: 5, repeated: 2 });
    s.forget('d');
    expect(s.of('d')).toBeUndefined();
  });
});
