import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { topics } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { hashSecret } from '@edgefleet/node-io';
import { createBroker, staticCredentials } from '@edgefleet/broker';
import type { Credential, CredentialStore } from '@edgefleet/broker';
import { startTestBroker, testLogger } from '../../test/support/broker.js';
import { Inbox, TOKEN, connectClient, endClient, publish, subscribe } from './helpers.js';

describe('credentials', () => {
  it('refuses bad credential lists with a sentence that says what to fix', () => {
    const h = hashSecret('x');
    expect(() => staticCredentials([{ role: 'device', id: '../etc', groups: [], secretHash: h }])).toThrow(/credential id/);
    expect(() => staticCredentials([{ role: 'device', id: 'd1', groups: [], secretHash: 'token' }])).toThrow(/never the token/);
    expect(() =>
      staticCredentials([
        { role: 'device', id: 'd1', groups: [], secretHash: h },
        { role: 'device', id: 'd1', groups: [], secretHash: h },
      ]),
    ).toThrow(/duplicate/);
  });

  it('keeps devices out of the operators\' ids and client ids, and out of reserved ids, in either order', () => {
    const h = hashSecret('x');
    const op = { role: 'operator' as const, id: 'ops', groups: [], secretHash: h };
    const dev = (id: string) => ({ role: 'device' as const, id, groups: [], secretHash: h });
    expect(() => staticCredentials([dev('ops'), op])).toThrow(/share one namespace/);
    expect(() => staticCredentials([op, dev('ops')])).toThrow(/duplicate|share one namespace/);
    expect(() => staticCredentials([dev('ops-cli'), op])).toThrow(/falls in operator "ops"'s client ids/);
    expect(() => staticCredentials([dev('controller')])).toThrow(/reserved/);
    expect(() => staticCredentials([dev('admin')])).toThrow(/reserved/);
    expect(() => staticCredentials([dev('opsx'), dev('pi-ops'), op])).not.toThrow();
  });
});

describe('authentication', () => {
  let broker: RunningBroker;
  beforeAll(async () => {
    broker = await startTestBroker({
      devices: [
        { id: 'dev1', token: TOKEN('dev1'), groups: ['lab'] },
        { id: 'dev2', token: TOKEN('dev2') },
      ],
      operators: [{ id: 'ops', token: TOKEN('ops') }],
    });
  });
  afterAll(() => broker.close());

  it('reports the ephemeral port it listens on', () => {
    expect(broker.ports.tcp).toBeGreaterThan(0);
    expect(broker.url).toBe(`mqtt://127.0.0.1:${broker.ports.tcp}`);
  });

  it('accepts a device with its token and client id = device id', async () => {
    const c = await connectClient(broker.url, { clientId: 'dev1', username: 'dev1', password: TOKEN('dev1') });
    expect(c.connected).toBe(true);
    await endClient(c);
  });

  it('refuses a wrong token, an unknown user and a missing password (CONNACK 4)', async () => {
    await expect(connectClient(broker.url, { clientId: 'dev1', username: 'dev1', password: 'wrong' })).rejects.toMatchObject({ code: 4 });
    await expect(connectClient(broker.url, { clientId: 'ghost', username: 'ghost', password: TOKEN('ghost') })).rejects.toMatchObject({ code: 4 });
    await expect(connectClient(broker.url, { clientId: 'dev1', username: 'dev1' })).rejects.toMatchObject({ code: 4 });
    // another device's token does not open this device
    await expect(connectClient(broker.url, { clientId: 'dev1', username: 'dev1', password: TOKEN('dev2') })).rejects.toMatchObject({ code: 4 });
  });

  it('refuses anonymous clients by default (CONNACK 5)', async () => {
    await expect(connectClient(broker.url, { clientId: 'anon' })).rejects.toMatchObject({ code: 5 });
  });

  it("refuses a device whose client id is not its id, or is another device's id (CONNACK 2)", async () => {
    await expect(connectClient(broker.url, { clientId: 'dev2', username: 'dev1', password: TOKEN('dev1') })).rejects.toMatchObject({ code: 2 });
    await expect(connectClient(broker.url, { clientId: 'dev1-x', username: 'dev1', password: TOKEN('dev1') })).rejects.toMatchObject({ code: 2 });
  });

  it('lets operators use their id or <id>-suffix as client id, nothing else', async () => {
    const a = await connectClient(broker.url, { clientId: 'ops', username: 'ops', password: TOKEN('ops') });
    const b = await connectClient(broker.url, { clientId: 'ops-cli-1', username: 'ops', password: TOKEN('ops') });
    expect(a.connected && b.connected).toBe(true);
    await expect(connectClient(broker.url, { clientId: 'dev1', username: 'ops', password: TOKEN('ops') })).rejects.toMatchObject({ code: 2 });
    await expect(connectClient(broker.url, { clientId: 'opsx', username: 'ops', password: TOKEN('ops') })).rejects.toMatchObject({ code: 2 });
    await Promise.all([endClient(a), endClient(b)]);
  });

  it('refuses a will on a topic the client may not publish to', async () => {
    await expect(
      connectClient(broker.url, {
        clientId: 'dev1',
        username: 'dev1',
        password: TOKEN('dev1'),
        will: { topic: topics.device('dev2', 'status'), payload: Buffer.from('offline'), qos: 1, retain: true },
      }),
    ).rejects.toMatchObject({ code: 5 });
    const ok = await connectClient(broker.url, {
      clientId: 'dev1',
      username: 'dev1',
      password: TOKEN('dev1'),
      will: { topic: topics.device('dev1', 'status'), payload: Buffer.from('offline'), qos: 1, retain: true },
    });
    await endClient(ok);
  });

  it('the same device reconnecting takes over its own session', async () => {
    const first = await connectClient(broker.url, { clientId: 'dev2', username: 'dev2', password: TOKEN('dev2') });
    const firstClosed = new Promise<void>((resolve) => first.once('close', () => resolve()));
    const second = await connectClient(broker.url, { clientId: 'dev2', username: 'dev2', password: TOKEN('dev2') });
    await firstClosed; // [MQTT-3.1.4-2]
    expect(second.connected).toBe(true);
    await Promise.all([endClient(first), endClient(second)]);
  });
});

describe('client id already in use by another credential', () => {
  let broker: RunningBroker;
  beforeAll(async () => {
    // staticCredentials refuses a device inside an operator's client ids; a store that does not
    // check (a state file written before that rule, a store of someone else's) can still hold one
    const list: Credential[] = [
      { role: 'device', id: 'ops-cam', groups: [], secretHash: hashSecret(TOKEN('ops-cam')) },
      { role: 'operator', id: 'ops', groups: [], secretHash: hashSecret(TOKEN('ops')) },
    ];
    const unchecked: CredentialStore = { find: (username) => list.find((c) => c.id === username) };
    broker = await createBroker({ credentials: unchecked, allowAnonymous: true, tcp: { host: '127.0.0.1', port: 0 }, logger: testLogger() });
  });
  afterAll(() => broker.close());

  it('refuses the newcomer and the device keeps its connection and its messages', async () => {
    const device = await connectClient(broker.url, { clientId: 'ops-cam', username: 'ops-cam', password: TOKEN('ops-cam') });
    const inbox = new Inbox(device);
    expect(await subscribe(device, topics.device('ops-cam', 'commands'))).toEqual([1]);
    let deviceClosed = false;
    device.on('close', () => (deviceClosed = true));

    // an operator whose prefix matches, and an anonymous client, both try to take "ops-cam"
    await expect(connectClient(broker.url, { clientId: 'ops-cam', username: 'ops', password: TOKEN('ops') })).rejects.toMatchObject({ code: 2 });
    await expect(connectClient(broker.url, { clientId: 'ops-cam' })).rejects.toMatchObject({ code: 2 });

    const op = await connectClient(broker.url, { clientId: 'ops', username: 'ops', password: TOKEN('ops') });
    await publish(op, topics.device('ops-cam', 'commands'), 'still here');
    await inbox.waitForCount(1);
    expect(inbox.messages[0]!.payload.toString()).toBe('still here');
    expect(deviceClosed).toBe(false);
    await Promise.all([endClient(op), endClient(device)]);
  });
});

describe('two credentials racing for one client id', () => {
  let broker: RunningBroker;
  beforeAll(async () => {
    // operators "team" and "team-b" may both use "team-b-1" (their id or <id>-suffix)
    broker = await startTestBroker({ operators: [{ id: 'team', token: TOKEN('team') }, { id: 'team-b', token: TOKEN('team-b') }] });
  });
  afterAll(() => broker.close());

  it('lets exactly one of two simultaneous connections have it, and the winner keeps it', async () => {
    const attempts = await Promise.allSettled([
      connectClient(broker.url, { clientId: 'team-b-1', username: 'team', password: TOKEN('team') }),
      connectClient(broker.url, { clientId: 'team-b-1', username: 'team-b', password: TOKEN('team-b') }),
    ]);
    const winners = attempts.filter((a) => a.status === 'fulfilled');
    const losers = attempts.filter((a) => a.status === 'rejected');
    expect(winners).toHaveLength(1);
    expect(losers.map((l) => (l.reason as { code: number }).code)).toEqual([2]);
    const winner = (winners[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof connectClient>>>).value;
    await subscribe(winner, 'fleet/v1/devices/+/status');
    expect(winner.connected).toBe(true);
    await endClient(winner);
  });
});

describe('anonymous development switch', () => {
  let broker: RunningBroker;
  const warnings: string[] = [];
  beforeAll(async () => {
    const { pino } = await import('pino');
    const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(line) });
    broker = await startTestBroker({ allowAnonymous: true, logger, devices: [{ id: 'dev1', token: TOKEN('dev1') }] });
  });
  afterAll(() => broker.close());

  it('is logged loudly', () => {
    expect(warnings.some((w) => w.includes('ANONYMOUS CLIENTS ALLOWED'))).toBe(true);
  });

  it('lets a client without a user name in, with operator rights only', async () => {
    const anon = await connectClient(broker.url, { clientId: 'dashboard' });
    expect(await subscribe(anon, [topics.allDevices('status'), '#'])).toEqual([1, 128]);
    await endClient(anon);
  });

  it("refuses an anonymous client that takes a credential's id as client id", async () => {
    await expect(connectClient(broker.url, { clientId: 'dev1' })).rejects.toMatchObject({ code: 2 });
  });

  it('still refuses a wrong password', async () => {
    await expect(connectClient(broker.url, { clientId: 'dev1', username: 'dev1', password: 'nope' })).rejects.toMatchObject({ code: 4 });
  });
});
