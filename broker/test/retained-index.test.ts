/**
 * The retained-message index (broker/src/retained.ts) against the MQTT 3.1.1 matching rules,
 * written out plainly here as the reference: random topics and filters over a small alphabet
 * (so that they collide), stores and deletes, and every filter's answer compared.
 */
import { describe, expect, it } from '@jest/globals';
import { RetainedIndex } from '../src/retained.js';

/** [MQTT-4.7.1]: `+` one level, `#` the parent and everything below; [MQTT-4.7.2-1]: no wildcard first level on `$` topics. */
function matches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

function random(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}

describe('the retained index', () => {
  it('answers every filter as the MQTT matching rules do, through stores and deletes', () => {
    const rnd = random(7);
    const pick = <T>(list: readonly T[]): T => list[Math.floor(rnd() * list.length)]!;
    const words = ['a', 'b', 'fleet', 'v1', '', '$SYS', 'status'];
    const topic = () => Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => pick(words)).join('/');
    const filter = () => {
      const levels = Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => pick([...words, '+', '+']));
      if (rnd() < 0.3) levels.push('#');
      return levels.join('/');
    };
    const index = new RetainedIndex();
    const reference = new Map<string, string>();
    for (let step = 0; step < 3000; step++) {
      const t = topic();
      const payload = rnd() < 0.25 ? '' : `p${step}`;
      index.store({ topic: t, payload: Buffer.from(payload) });
      if (payload === '') reference.delete(t);
      else reference.set(t, payload);
      if (step % 10 !== 0) continue;
      expect(index.size).toBe(reference.size);
      for (let k = 0; k < 20; k++) {
        const f = k === 0 ? '#' : filter();
        const got = [...index.match(f)].map((p) => `${p.topic}=${p.payload.toString()}`).sort();
        const want = [...reference].filter(([topicName]) => matches(f, topicName)).map(([topicName, p]) => `${topicName}=${p}`).sort();
        expect({ filter: f, got }).toEqual({ filter: f, got: want });
      }
    }
  });

  it('looks only at the subtree a filter names (a device subscribing does not scan the fleet)', () => {
    const index = new RetainedIndex();
    for (let i = 0; i < 10_000; i++) index.store({ topic: `fleet/v1/devices/d${i}/status`, payload: Buffer.from('{}') });
    expect([...index.match('fleet/v1/devices/d42/commands')]).toEqual([]);
    expect([...index.match('fleet/v1/devices/d42/#')].map((p) => p.topic)).toEqual(['fleet/v1/devices/d42/status']);
    expect([...index.match('fleet/v1/devices/+/status')]).toHaveLength(10_000);
    index.store({ topic: 'fleet/v1/devices/d42/status', payload: Buffer.alloc(0) });
    expect([...index.match('fleet/v1/devices/d42/#')]).toEqual([]);
    expect(index.size).toBe(9_999);
  });
});
