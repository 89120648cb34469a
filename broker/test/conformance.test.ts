/**
 * MQTT 3.1.1 clauses the embedded broker used to get wrong, one test per clause, with raw
 * packets through real sockets (and MQTT.js as a real MQTT 5 client).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Socket } from 'node:net';
import { pino } from 'pino';
import { topics } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { TOKEN, closed, connectClient, endClient, rawSocket, withDeadline } from './helpers.js';
import * as p from './packets.js';

interface Handshake {
  socket: Socket;
  /** Bytes the broker sent before it closed the socket or sent a whole CONNACK. */
  reply: Buffer;
  /** Resolves once the broker has closed the socket. */
  closed: Promise<Buffer>;
}

/** Sends one CONNECT and resolves with the CONNACK (4 bytes) or with nothing when the broker just closes. */
async function handshake(port: number, connect: Buffer): Promise<Handshake> {
  const socket = await rawSocket(port);
  const gone = closed(socket, 10_000);
  const received: Buffer[] = [];
  const reply = new Promise<Buffer>((resolve) => {
    socket.on('data', (d: Buffer) => {
      received.push(d);
      if (Buffer.concat(received).length >= 4) resolve(Buffer.concat(received));
    });
    void gone.then(() => resolve(Buffer.concat(received)), () => resolve(Buffer.concat(received)));
  });
  socket.write(connect);
  return { socket, reply: await withDeadline(reply, 10_000, 'a CONNACK or a close'), closed: gone };
}

const CONNACK = (code: number) => [0x20, 0x02, 0x00, code];

describe('MQTT 3.1.1 conformance, through raw sockets', () => {
  let broker: RunningBroker;
  const logs: { msg: string; reason?: string; clientId?: string; requested?: string }[] = [];
  const clientIds = () => Object.keys((broker.aedes as unknown as { clients: Record<string, unknown> }).clients);

  beforeAll(async () => {
    const logger = pino({ level: 'info' }, { write: (line: string) => logs.push(JSON.parse(line)) });
    broker = await startTestBroker({
      logger,
      allowAnonymous: true,
      devices: [{ id: 'dev1', token: TOKEN('dev1') }],
      operators: [{ id: 'ops', token: TOKEN('ops') }],
    });
  });
  afterAll(() => broker.close());

  describe('[MQTT-1.5.3] control characters U+0001–U+001F and U+007F–U+009F close the connection', () => {
    const controls = ['\u0001', '\u001f', '\u007f', '\u0080', '\u0085', '\u009f'];

    it.each(controls.map((c) => [`U+${c.charCodeAt(0).toString(16).padStart(4, '0')}`, c]))('in a client id, a user name and a will topic: %s', async (_name, c) => {
      const cases: [Buffer, RegExp][] = [
        [p.connect({ clientId: `cam${c}01` }), /^client id contains the control character/],
        [p.connect({ clientId: 'ops-x', username: `ops${c}`, password: TOKEN('ops') }), /^user name contains the control character/],
        [p.connect({ clientId: 'dev1', username: 'dev1', password: TOKEN('dev1'), will: { topic: `fleet/v1/devices/dev1/st${c}atus`, payload: 'x' } }), /^will topic: topic contains the control character/],
      ];
      for (const [connect, reason] of cases) {
        const h = await handshake(broker.ports.tcp!, connect);
        expect(h.reply.length).toBe(0); // no CONNACK: the packet is treated as malformed [MQTT-4.8.0-1]
        await h.closed;
        expect(logs.at(-1)).toMatchObject({ msg: 'closing connection: invalid packet', reason: expect.stringMatching(reason) });
      }
    });

    it('in a PUBLISH topic and a SUBSCRIBE filter of a connected client', async () => {
      for (const packet of [p.publish(`fleet/v1/devices/dev1/\u0007events`, 'x'), p.subscribe(1, [`fleet/v1/devices/dev1/\u009bcommands`])]) {
        const h = await handshake(broker.ports.tcp!, p.connect({ clientId: 'dev1', username: 'dev1', password: TOKEN('dev1') }));
        expect([...h.reply]).toEqual(CONNACK(0));
        h.socket.write(packet);
        await h.closed;
        expect(logs.at(-1)?.reason).toMatch(/^topic contains the control character U\+00(07|9B)/);
      }
    });

    it('but not the characters around them (U+0020, U+00A0, é)', async () => {
      for (const clientId of ['cam 01', 'cam\u00a001', 'caméra']) {
        const h = await handshake(broker.ports.tcp!, p.connect({ clientId }));
        expect([clientId, ...h.reply]).toEqual([clientId, ...CONNACK(0)]);
        h.socket.destroy();
      }
    });
  });

  describe('[MQTT-3.1.2-2] an unsupported protocol level gets CONNACK 0x01, then the connection is closed', () => {
    const levels: [string, number][] = [
      ['MQTT', 0],
      ['MQTT', 3],
      ['MQTT', 5],
      ['MQTT', 6],
      ['MQTT', 0x84], // mosquitto's bridge bit on level 4
      ['MQTT', 255],
      ['MQIsdp', 4],
    ];
    it.each(levels)('%s level %d', async (name, level) => {
      const h = await handshake(broker.ports.tcp!, p.connect({ clientId: 'ops-l', username: 'ops', password: TOKEN('ops'), protocol: { name, level } }));
      expect([...h.reply]).toEqual(CONNACK(1));
      await h.closed;
      expect(logs.at(-1)).toMatchObject({ msg: 'refusing connection', reason: expect.stringMatching(/protocol level \d+ is not supported/) });
    });

    it('a real MQTT 5 client (MQTT.js) is told "unacceptable protocol version"', async () => {
      await expect(connectClient(broker.url, { clientId: 'ops-v5', username: 'ops', password: TOKEN('ops'), protocolVersion: 5 })).rejects.toMatchObject({ code: 1 });
    });

    it('while MQTT 3.1.1 (MQTT, 4) and MQTT 3.1 (MQIsdp, 3) are accepted', async () => {
      for (const protocol of [{ name: 'MQTT', level: 4 }, { name: 'MQIsdp', level: 3 }]) {
        const h = await handshake(broker.ports.tcp!, p.connect({ clientId: 'ops-ok', username: 'ops', password: TOKEN('ops'), protocol }));
        expect([protocol.name, ...h.reply]).toEqual([protocol.name, ...CONNACK(0)]);
        h.socket.destroy();
        await h.closed;
      }
    });
  });

  describe('[MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.1.3-8] a zero-length client id', () => {
    it('gets a unique id assigned for an anonymous (development) client with clean session 1, which then works', async () => {
      const before = new Set(clientIds());
      const client = await connectClient(broker.url, { clientId: '', clean: true });
      const assigned = clientIds().filter((id) => !before.has(id));
      expect(assigned).toEqual([expect.stringMatching(/^aedes_[0-9a-f-]{36}$/)]);
      const granted = await client.subscribeAsync(topics.allDevices('status'), { qos: 1 });
      expect(granted.map((g) => g.qos)).toEqual([1]);
      await endClient(client);
    });

    it("gets `<operator>-<random>` assigned for an operator, inside the operator's client-id rule, unique per connection", async () => {
      const before = new Set(clientIds());
      const a = await connectClient(broker.url, { clientId: '', username: 'ops', password: TOKEN('ops'), clean: true });
      const b = await connectClient(broker.url, { clientId: '', username: 'ops', password: TOKEN('ops'), clean: true });
      const assigned = clientIds().filter((id) => !before.has(id));
      expect(assigned).toHaveLength(2);
      for (const id of assigned) expect(id).toMatch(/^ops-[0-9a-f]{16}$/);
      expect(a.connected && b.connected).toBe(true); // the second did not take the first one's session over
      await Promise.all([endClient(a), endClient(b)]);
    });

    it('is refused with CONNACK 0x02 when clean session is 0, for everyone', async () => {
      for (const connect of [
        p.connect({ clientId: '', clean: false }),
        p.connect({ clientId: '', clean: false, username: 'ops', password: TOKEN('ops') }),
      ]) {
        const h = await handshake(broker.ports.tcp!, connect);
        expect([...h.reply]).toEqual(CONNACK(2));
        await h.closed;
        expect(logs.at(-1)).toMatchObject({ msg: 'connection refused', reason: expect.stringMatching(/MQTT-3\.1\.3-7/) });
      }
    });

    it("is refused with CONNACK 0x02 for a device: a device's client id is its id", async () => {
      const h = await handshake(broker.ports.tcp!, p.connect({ clientId: '', username: 'dev1', password: TOKEN('dev1') }));
      expect([...h.reply]).toEqual(CONNACK(2));
      await h.closed;
      expect(logs.at(-1)?.reason).toBe('a device must send its id "dev1" as client id; none was sent');
      const device = await connectClient(broker.url, { clientId: 'dev1', username: 'dev1', password: TOKEN('dev1') });
      expect(device.connected).toBe(true);
      await endClient(device);
    });
  });
});
