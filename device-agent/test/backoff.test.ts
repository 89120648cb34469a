import { describe, it, expect } from '@jest/globals';
import { Backoff, backoffCeiling, backoffDelay } from '../src/backoff.js';
import { brokerOrder } from '../src/connection.js';

describe('reconnect backoff', () => {
  const options = { minMs: 500, maxMs: 30_000 };

  it('doubles the ceiling per attempt up to the maximum', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 100].map((n) => backoffCeiling(n, options))).toEqual([
      500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000,
    ]);
  });

  it('draws each delay uniformly below the ceiling (full jitter)', () => {
    expect(backoffDelay(3, options, () => 0)).toBe(0);
    expect(backoffDelay(3, options, () => 0.5)).toBe(2000);
    expect(backoffDelay(3, options, () => 0.999999)).toBe(3999);
  });

  it('resets after a successful connection', () => {
    const b = new Backoff(options, () => 0.999999);
    const first = [b.next(), b.next(), b.next()];
    expect(first).toEqual([499, 999, 1999]);
    b.reset();
    expect(b.next()).toBe(499);
  });

  it('spreads a fleet: 1000 devices reconnecting after a broker restart do not arrive together', () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const delays = Array.from({ length: 1000 }, () => new Backoff({ minMs: 1000, maxMs: 60_000 }, random)).map((b) => {
      b.next();
      b.next();
      return b.next(); // third attempt: window 0-4 s
    });
    const perSecond = [0, 0, 0, 0];
    for (const d of delays) perSecond[Math.floor(d / 1000)]! += 1;
    expect(Math.max(...delays)).toBeLessThan(4000);
    for (const n of perSecond) expect(n).toBeGreaterThan(180); // ~250 each, none empty, no spike
  });
});

describe('a list of brokers (the instances of a cluster)', () => {
  const list = ['mqtt://a:1883', 'mqtt://b:1883', 'mqtt://c:1883'];

  it('keeps one broker as it is, and gives every device the whole list, rotated, the same each time', () => {
    expect(brokerOrder(['ws://a:8080/mqtt'], 'dev-1')).toEqual(['ws://a:8080/mqtt']);
    const order = brokerOrder(list, 'dev-1');
    expect([...order].sort()).toEqual(list);
    expect(brokerOrder(list, 'dev-1')).toEqual(order);
    const start = list.indexOf(order[0]!);
    expect(order).toEqual([...list.slice(start), ...list.slice(0, start)]); // then the next ones, in list order
  });

  it('spreads a fleet given one list over the instances', () => {
    const first = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      const b = brokerOrder(list, `cam-${i}`)[0]!;
      first.set(b, (first.get(b) ?? 0) + 1);
    }
    for (const url of list) expect(first.get(url)).toBeGreaterThan(850); // ~1000 each
  });
});
