/**
 * The broker under random and mutated MQTT for a bounded time (FUZZ_MS; `npm run fuzz` for
 * longer): raw sockets send random bytes, valid packets with their bytes mutated, and valid
 * sessions (a device's or an operator's CONNECT) followed by mutated packets, split at
 * random points. Nothing may crash; afterwards every fuzzing connection is gone, memory is
 * back within bounds, and a device and an operator still get a message through.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Socket } from 'node:net';
import mqttPacket from 'mqtt-packet';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { FUZZ_MS, fuzzFor, mutateBytes, random } from '../../test/support/fuzz.js';
import type { Random } from '../../test/support/fuzz.js';
import { Inbox, TOKEN, connectClient, endClient, publish, rawSocket, subscribe, withDeadline } from './helpers.js';

const DEVICE = 'dev-f';
const OPERATOR = 'ops';
let broker: RunningBroker;

beforeAll(async () => {
  broker = await startTestBroker({ devices: [{ id: DEVICE, token: TOKEN(DEVICE), groups: ['lab'] }], operators: [{ id: OPERATOR, token: TOKEN(OPERATOR) }], legacyTopic: 'hello' });
});
afterAll(async () => {
  await broker.close();
});

/** mqtt-packet refuses to write some combinations (an empty client id before 3.1.1): those become a PINGREQ. */
const gen = (p: object): Buffer => {
  try {
    return mqttPacket.generate(p as mqttPacket.Packet);
  } catch {
    return mqttPacket.generate({ cmd: 'pingreq' });
  }
};

function connectPacket(r: Random): Buffer {
  const who = r.pick([DEVICE, OPERATOR, 'nobody', '']);
  return gen({
    cmd: 'connect',
    protocolId: r.chance(0.9) ? 'MQTT' : 'MQIsdp',
    protocolVersion: r.pick([4, 4, 4, 3, 5]),
    clean: r.chance(0.7),
    clientId: who === OPERATOR ? `${OPERATOR}-${r.int(1e6)}` : who === '' ? '' : who,
    keepalive: r.int(120),
    ...(who ? { username: who, password: Buffer.from(r.chance(0.8) ? TOKEN(who) : 'wrong') } : {}),
    ...(r.chance(0.2) ? { will: { topic: `fleet/v1/devices/${who || 'x'}/status`, payload: Buffer.from('{}'), qos: r.int(2), retain: r.chance(0.5) } } : {}),
  });
}

const TOPICS = [`fleet/v1/devices/${DEVICE}/telemetry`, `fleet/v1/devices/${DEVICE}/status`, 'fleet/v1/devices/other/commands', 'hello', '$SYS/x', '#', 'fleet/v1/groups/lab/commands', `fleet/v1/devices/${DEVICE}/transfers/#`, 'a/+/b', ''];

function sessionPacket(r: Random): Buffer {
  switch (r.int(7)) {
    case 0:
    case 1:
      return gen({ cmd: 'publish', topic: r.pick(TOPICS), payload: r.bytes(r.int(300)), qos: r.int(2), retain: r.chance(0.2), messageId: 1 + r.int(65535), dup: false });
    case 2:
      return gen({ cmd: 'subscribe', messageId: 1 + r.int(65535), subscriptions: Array.from({ length: 1 + r.int(4) }, () => ({ topic: r.pick(TOPICS) || 'x', qos: r.int(2) })) });
    case 3:
      return gen({ cmd: 'unsubscribe', messageId: 1 + r.int(65535), unsubscriptions: [r.pick(TOPICS) || 'x'] });
    case 4:
      return gen({ cmd: r.pick(['puback', 'pubrec', 'pubrel', 'pubcomp']), messageId: 1 + r.int(65535) });
    case 5:
      return gen({ cmd: 'pingreq' });
    default:
      return gen({ cmd: 'disconnect' });
  }
}

/** One connection's worth of input: maybe a valid CONNECT, then packets (some mutated, some random). */
function conversation(r: Random): Buffer {
  const parts: Buffer[] = [];
  const kind = r.int(4);
  if (kind === 0) parts.push(r.bytes(r.int(2048)));
  else {
    parts.push(kind === 1 ? mutateBytes(connectPacket(r), r) : connectPacket(r));
    for (let n = r.int(6); n > 0; n--) {
      const p = sessionPacket(r);
      parts.push(r.chance(0.5) ? mutateBytes(p, r) : p);
    }
  }
  return Buffer.concat(parts);
}

/** Writes in random pieces, waits a moment for the broker to answer or close, then hangs up. */
async function talk(bytes: Buffer, r: Random): Promise<void> {
  let socket: Socket;
  try {
    socket = await rawSocket(broker.ports.tcp!);
  } catch {
    return; // the broker refused the socket itself (never expected; a crash shows up below)
  }
  socket.on('error', () => {
    /* resets are the broker closing a connection it refused */
  });
  socket.on('data', () => undefined);
  for (let at = 0; at < bytes.length && !socket.destroyed; ) {
    const n = 1 + r.int(Math.min(512, bytes.length - at));
    socket.write(bytes.subarray(at, at + n));
    at += n;
    if (r.chance(0.2)) await new Promise((resolve) => setImmediate(resolve));
  }
  await new Promise((resolve) => setTimeout(resolve, r.int(30)));
  socket.destroy();
}

describe('the broker under fuzzed MQTT', () => {
  it(`survives ${FUZZ_MS} ms of random and mutated packets, leaks no connections, and keeps serving`, async () => {
    const r = random();
    const heapBefore = process.memoryUsage().heapUsed;
    const runs = await fuzzFor(FUZZ_MS, r, async () => {
      await Promise.all(Array.from({ length: 16 }, () => talk(conversation(r), r)));
    });
    expect(runs).toBeGreaterThan(0);
    const clients = () => Object.keys((broker.aedes as unknown as { clients: Record<string, unknown> }).clients).length;
    await withDeadline((async () => { while (clients() > 0) await new Promise((res) => setTimeout(res, 20)); })(), 10_000, `every fuzzing connection to be gone (seed ${r.seed})`);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(200 * 1024 * 1024);

    try {
      const device = await connectClient(broker.url, { clientId: DEVICE, username: DEVICE, password: TOKEN(DEVICE) });
      const operator = await connectClient(broker.url, { clientId: `${OPERATOR}-check`, username: OPERATOR, password: TOKEN(OPERATOR) });
      const inbox = new Inbox(operator);
      await subscribe(operator, `fleet/v1/devices/${DEVICE}/telemetry`);
      await publish(device, `fleet/v1/devices/${DEVICE}/telemetry`, 'after the fuzz');
      await inbox.waitForCount(1, `fleet/v1/devices/${DEVICE}/telemetry`);
      await endClient(device);
      await endClient(operator);
    } catch (error) {
      throw new Error(`after ${runs} rounds of fuzzing (replay with FUZZ_SEED=${r.seed}): ${(error as Error).message}`, { cause: error });
    }
  }, FUZZ_MS + 60_000);
});
