/**
 * Fuzzing helpers: a seeded random source (a failure names its seed, and FUZZ_SEED replays
 * it), byte mutations of valid packets and payloads, structural mutations of valid JSON,
 * and a loop bounded by time. `npm test` fuzzes each target for FUZZ_MS (default a few
 * seconds); `npm run fuzz` runs the same tests for longer.
 */

/** Milliseconds each fuzz test runs (env FUZZ_MS). */
export const FUZZ_MS = Number(process.env.FUZZ_MS ?? 4000);

export interface Random {
  seed: number;
  next(): number;
  int(max: number): number;
  pick<T>(list: readonly T[]): T;
  bytes(n: number): Buffer;
  chance(p: number): boolean;
}

/** xorshift32: small, fast, and the same sequence for the same seed. */
export function random(seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31) || 1): Random {
  let x = seed >>> 0 || 1;
  const next = (): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
  const int = (max: number): number => Math.floor(next() * max);
  return {
    seed,
    next,
    int,
    pick: (list) => list[int(list.length)]!,
    bytes: (n) => Buffer.from(Array.from({ length: n }, () => int(256))),
    chance: (p) => next() < p,
  };
}

const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x20, 0x2f, 0x23, 0x2b, 0x24];

/** One to four byte-level mutations: bit flips, interesting bytes, inserts, deletes, truncation, repeats. */
export function mutateBytes(input: Buffer, r: Random): Buffer {
  let b = Buffer.from(input);
  for (let k = 1 + r.int(4); k > 0; k--) {
    const at = b.length ? r.int(b.length) : 0;
    switch (r.int(7)) {
      case 0:
        if (b.length) b[at] = b[at]! ^ (1 << r.int(8));
        break;
      case 1:
        if (b.length) b[at] = r.pick(INTERESTING);
        break;
      case 2:
        b = Buffer.concat([b.subarray(0, at), r.bytes(1 + r.int(16)), b.subarray(at)]);
        break;
      case 3:
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + r.int(16)))]);
        break;
      case 4:
        b = b.subarray(0, at);
        break;
      case 5: {
        const part = b.subarray(at, at + 1 + r.int(32));
        b = Buffer.concat([b.subarray(0, at), part, part, b.subarray(at)]);
        break;
      }
      default:
        if (b.length) b.fill(r.pick(INTERESTING), at, Math.min(b.length, at + 1 + r.int(8)));
    }
  }
  return b;
}

const NASTY: readonly unknown[] = [
  null, true, false, 0, -1, 1e308, -1e308, 2 ** 53 + 1, 0.5, NaN, '', 'x'.repeat(70_000), '\u0000', '../../etc/passwd', '__proto__', 'constructor',
  [], {}, [[[[[[[[]]]]]]]], { constructor: { prototype: { polluted: true } } }, '\ud800', '💥',
];

/** A structural mutation of a JSON value: a value replaced, a key dropped or added, a type changed, deep nesting. */
export function mutateJson(value: unknown, r: Random, depth = 0): unknown {
  if (depth > 6 || r.chance(0.15)) return r.pick(NASTY);
  if (Array.isArray(value)) {
    const out = value.map((v) => (r.chance(0.3) ? mutateJson(v, r, depth + 1) : v));
    if (r.chance(0.2)) out.push(r.pick(NASTY));
    if (r.chance(0.1)) out.splice(r.int(out.length + 1), 1);
    return out;
  }
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = { ...(value as Record<string, unknown>) };
    const keys = Object.keys(out);
    for (const k of keys) if (r.chance(0.3)) out[k] = mutateJson(out[k], r, depth + 1);
    if (keys.length && r.chance(0.2)) delete out[r.pick(keys)];
    if (r.chance(0.15)) out[r.pick(['constructor', 'toString', 'extra', 'v', 'type', 'id'])] = r.pick(NASTY);
    return out;
  }
  return r.chance(0.5) ? r.pick(NASTY) : value;
}

/** A payload from a valid message: structurally mutated JSON, mutated bytes, or random bytes. */
export function mutatePayload(valid: unknown, r: Random): Buffer {
  const choice = r.int(11);
  if (choice < 6) return Buffer.from(JSON.stringify(mutateJson(valid, r)) ?? 'null');
  // an own "__proto__" key can only be written as text (an object literal would set the prototype)
  if (choice === 10) return Buffer.from(JSON.stringify(valid).replace(/^\{/, '{"__proto__":{"polluted":true},'));
  if (choice < 9) return mutateBytes(Buffer.from(JSON.stringify(valid)), r);
  return r.bytes(r.int(512));
}

/** Runs `step` until `ms` passed; returns how many steps ran. A failing step's error names the seed. */
export async function fuzzFor(ms: number, r: Random, step: (i: number) => Promise<void> | void): Promise<number> {
  const deadline = Date.now() + ms;
  let i = 0;
  try {
    for (; Date.now() < deadline; i++) await step(i);
  } catch (error) {
    throw new Error(`fuzz step ${i} failed (replay with FUZZ_SEED=${r.seed}): ${(error as Error).message}`, { cause: error });
  }
  return i;
}
