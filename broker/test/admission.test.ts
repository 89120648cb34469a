import { afterEach, describe, expect, it } from '@jest/globals';
import { pino } from 'pino';
import { hashSecret } from '@edgefleet/node-io';
import { addressKey, createBroker, type Credential, type CredentialStore, type RunningBroker } from '@edgefleet/broker';
import { Admission, DEFAULT_ADMISSION_LIMITS } from '../src/admission.js';
import { TOKEN, connectClient, endClient } from './helpers.js';

type Log = { msg: string; [k: string]: unknown };

/** A store whose credentials can change while the broker runs, as the host manager's does. */
function mutableStore(list: Credential[]): CredentialStore & { replace(c: Credential): void } {
  const byId = new Map(list.map((c) => [c.id, c]));
  return { find: (username) => byId.get(username), replace: (c) => void byId.set(c.id, c) };
}

const device = (id: string, token = TOKEN(id)): Credential => ({ role: 'device', id, groups: [], secretHash: hashSecret(token) });

async function connackOf(url: string, id: string, password: string): Promise<number> {
  try {
    await endClient(await connectClient(url, { clientId: id, username: id, password }));
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

describe('what a CONNECT may cost', () => {
  let broker: RunningBroker | undefined;
  const logs: Log[] = [];
  afterEach(async () => {
    await broker?.close();
    broker = undefined;
    logs.length = 0;
  });
  const start = (store: CredentialStore, admission: Partial<typeof DEFAULT_ADMISSION_LIMITS>) =>
    createBroker({
      credentials: store,
      tcp: { host: '127.0.0.1', port: 0 },
      admission,
      logger: pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Log) }),
    });

  it('admits a token it verified before without checking it again, never caches a wrong one, and forgets a token once the credential changes', async () => {
    const store = mutableStore([device('dev1')]);
    broker = await start(store, {});
    expect(await connackOf(broker.url, 'dev1', TOKEN('dev1'))).toBe(0);
    expect(broker.stats()).toMatchObject({ tokenChecks: 1, tokenCacheHits: 0 });
    expect(await connackOf(broker.url, 'dev1', TOKEN('dev1'))).toBe(0);
    expect(broker.stats()).toMatchObject({ tokenChecks: 1, tokenCacheHits: 1 });
    // a wrong token for the same device pays the full check, every time
    expect(await connackOf(broker.url, 'dev1', 'not-the-token-0123456789')).toBe(4);
    expect(await connackOf(broker.url, 'dev1', 'not-the-token-0123456789')).toBe(4);
    expect(broker.stats()).toMatchObject({ tokenChecks: 3, tokenCacheHits: 1 });
    // the device gets a new token: the old one, although cached, no longer opens anything
    store.replace(device('dev1', 'the-new-token-0123456789abcdef'));
    expect(await connackOf(broker.url, 'dev1', TOKEN('dev1'))).toBe(4);
    expect(await connackOf(broker.url, 'dev1', 'the-new-token-0123456789abcdef')).toBe(0);
    expect(broker.stats()).toMatchObject({ tokenChecks: 5, tokenCacheHits: 1 });
  });

  it('refuses an address that keeps failing with CONNACK 5 and no check, lets its known devices in meanwhile, and admits it again after the backoff', async () => {
    broker = await start(mutableStore([device('dev1'), device('dev2')]), { freeFailures: 3, backoffMs: 500, maxBackoffMs: 1000 });
    expect(await connackOf(broker.url, 'dev1', TOKEN('dev1'))).toBe(0); // verified before the attack
    for (let i = 0; i < 4; i++) expect(await connackOf(broker.url, 'dev2', `guess-${i}-0123456789abcdef`)).toBe(4);
    const checks = broker.stats().tokenChecks;
    // limited: even the right token of a device not seen before is refused, without a check
    expect(await connackOf(broker.url, 'dev2', TOKEN('dev2'))).toBe(5);
    expect(await connackOf(broker.url, 'dev2', 'yet-another-guess-0123456789')).toBe(5);
    expect(broker.stats()).toMatchObject({ tokenChecks: checks, refusedBackoff: 2 });
    // a device whose token was verified before still gets in (it costs nothing)
    expect(await connackOf(broker.url, 'dev1', TOKEN('dev1'))).toBe(0);
    expect(logs.filter((l) => l.msg.startsWith('too many failed logins from one address'))).toEqual([
      expect.objectContaining({ address: '127.0.0.1', failures: 4, backoffMs: 500 }),
    ]);
    expect(logs.filter((l) => l.msg === 'connection refused' && l.level === 40 && String(l.reason).startsWith('too many failed logins'))).toEqual([]);
    // after the backoff the address gets a check again
    const deadline = Date.now() + 10_000;
    let code = 5;
    while (code === 5 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100)); // polling the end of the backoff; these refusals cost no check
      code = await connackOf(broker.url, 'dev2', TOKEN('dev2'));
    }
    expect(code).toBe(0);
  });

  it('runs at most maxConcurrent checks and refuses a flood beyond maxWaiting with CONNACK 3 at once', async () => {
    broker = await start(mutableStore([device('dev1')]), { maxConcurrent: 1, maxWaiting: 2, freeFailures: 1000 });
    const url = broker.url;
    const codes = await Promise.all(Array.from({ length: 20 }, (_, i) => connackOf(url, 'dev1', `flood-${i}-0123456789abcdef`)));
    const busy = codes.filter((c) => c === 3).length;
    const wrong = codes.filter((c) => c === 4).length;
    expect(busy + wrong).toBe(20);
    expect(busy).toBeGreaterThan(0);
    expect(broker.stats()).toMatchObject({ tokenChecks: wrong, refusedBusy: busy });
    expect(logs.filter((l) => l.msg.startsWith('too many token checks waiting')).length).toBeGreaterThanOrEqual(1);
    // the flood is over: a genuine device connects
    expect(await connackOf(url, 'dev1', TOKEN('dev1'))).toBe(0);
  });
});

describe('Admission (unit)', () => {
  it('never runs more than maxConcurrent checks, queues maxWaiting, and hands a finished slot to the next', async () => {
    const admission = new Admission({ ...DEFAULT_ADMISSION_LIMITS, maxConcurrent: 2, maxWaiting: 3, freeFailures: 1000 });
    let running = 0;
    let peak = 0;
    const check = async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      return false;
    };
    const outcomes = await Promise.all(
      Array.from({ length: 10 }, (_, i) => admission.admit({ address: '10.0.0.1', username: 'dev1', token: Buffer.from(`t${i}`), secretHash: 'h', known: true, check })),
    );
    expect(peak).toBe(2);
    expect(outcomes.filter((o) => o === 'wrong')).toHaveLength(5);
    expect(outcomes.filter((o) => typeof o === 'object' && o.refused === 'busy')).toHaveLength(5);
    // once they are done, new checks run again
    expect(await admission.admit({ address: '10.0.0.1', username: 'dev1', token: Buffer.from('x'), secretHash: 'h', known: true, check: async () => true })).toBe('ok');
  });

  it('keeps the per-address table and the cache bounded, and never caches an unknown user', async () => {
    const admission = new Admission({ ...DEFAULT_ADMISSION_LIMITS, cacheSize: 2, freeFailures: 1000 });
    const ok = (username: string, known = true) => admission.admit({ address: '10.0.0.1', username, token: Buffer.from('tok'), secretHash: 'h', known, check: async () => true });
    for (const u of ['a', 'b', 'c']) expect(await ok(u)).toBe('ok');
    expect(admission.stats.tokenChecks).toBe(3);
    await ok('c'); // cached
    await ok('a'); // pushed out by c
    expect(admission.stats).toMatchObject({ tokenChecks: 4, tokenCacheHits: 1 });
    await ok('ghost', false);
    await ok('ghost', false);
    expect(admission.stats.tokenChecks).toBe(6);
  });

  it('with the cache off (cacheTtlMs 0) admits a right token every time, each with a check, and counts no failure', async () => {
    const admission = new Admission({ ...DEFAULT_ADMISSION_LIMITS, cacheTtlMs: 0, freeFailures: 1 });
    const admit = (check: () => Promise<boolean>) => admission.admit({ address: '10.0.0.1', username: 'dev1', token: Buffer.from('tok'), secretHash: 'h', known: true, check });
    for (let i = 0; i < 3; i++) expect(await admit(async () => true)).toBe('ok');
    expect(admission.stats).toMatchObject({ tokenChecks: 3, tokenCacheHits: 0, refusedBackoff: 0 });
    // one failure is free, the next starts the backoff: so the three above were not counted as failures
    expect(await admit(async () => false)).toBe('wrong');
    expect(await admit(async () => false)).toBe('wrong');
    expect(await admit(async () => true)).toMatchObject({ refused: 'backoff' });
  });

  it('groups addresses by who controls them: IPv4 addresses, IPv6 /64 networks', () => {
    expect(addressKey('192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:2::99')).toBe(addressKey('2001:DB8:1:2:ffff::1'));
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressKey(undefined)).toBe('unknown');
  });
});
