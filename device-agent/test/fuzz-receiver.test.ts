/**
 * The agent's transfer intake under random and mutated input for a bounded time (FUZZ_MS;
 * `npm run fuzz` for longer): request payloads through the agent's Dispatcher into the real
 * receiver (valid offers, status requests and commits, structurally and byte-mutated ones,
 * manifests changed under their signature, random bytes), and chunk messages (the right
 * bytes, flipped bytes, wrong lengths, wrong or absurd indexes, unknown transfers). Nothing
 * may throw out of the intake; every request gets exactly one reply; only the exact signed
 * file is ever installed or activated; memory stays bounded.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chunkHashes, generateFleetKeys, makeRequest, sha256Hex, signManifest } from '@edgefleet/protocol';
import type { ManifestInput, Reply, SignedManifest } from '@edgefleet/protocol';
import { Dispatcher } from '../src/commands.js';
import { createTransferReceiver } from '../src/transfer/index.js';
import type { TransferReceiver } from '../src/transfer/index.js';
import { FUZZ_MS, fuzzFor, mutateBytes, mutateJson, mutatePayload, random } from '../../test/support/fuzz.js';
import { FileModels, quietLogger } from './transfer-harness.js';

const CHUNK = 4096;
const MODEL = randomBytes(16 * CHUNK + 123); // 17 chunks, the last one short
const HASHES = chunkHashes(MODEL, CHUNK);
const keys = generateFleetKeys();
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fuzz-receiver-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function manifestFor(version: number): ManifestInput {
  const now = Date.now();
  return {
    kind: 'model',
    name: 'fz-model',
    version,
    sha256: sha256Hex(MODEL),
    length: MODEL.length,
    issuedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 3600_000).toISOString(),
    target: { devices: ['fz'] },
    chunking: { size: CHUNK, sha256: HASHES },
  };
}

describe('the transfer intake under fuzzed input', () => {
  it(`survives ${FUZZ_MS} ms of mutated requests and chunks, answers each request once, installs only the signed file`, async () => {
    const r = random();
    const models = new FileModels(join(dir, 'models'), true);
    const receiver: TransferReceiver = createTransferReceiver({
      dataDir: join(dir, 'device'),
      publicKeyPem: keys.publicKeyPem,
      identity: { id: 'fz', groups: ['lab'], arch: process.arch },
      models,
      publishEvent: () => undefined,
      logger: quietLogger('fuzz'),
    });
    const replies: Reply[] = [];
    const dispatcher = new Dispatcher({
      handlers: {
        'transfer.offer': (p) => receiver.offer(p),
        'transfer.status': (p) => receiver.status(p),
        'transfer.commit': (p) => receiver.commit(p),
      },
      logger: quietLogger('fuzz'),
      send: async (reply) => void replies.push(reply),
    });
    let version = 1;
    let transferId = `fz${version}`;
    let signed: SignedManifest = signManifest(manifestFor(version), keys.privateKeyPem);
    const request = (): object => {
      const which = r.int(3);
      if (which === 0) return makeRequest('transfer.offer', { transferId, manifest: signed, via: { kind: 'device', name: 'fz' } }, 5000);
      if (which === 1) return makeRequest('transfer.status', { transferId }, 5000);
      return makeRequest('transfer.commit', { transferId, activate: r.chance(0.5) }, 5000);
    };
    const heapBefore = process.memoryUsage().heapUsed;
    let requests = 0;
    const wellFormed: string[] = [];

    const steps = await fuzzFor(FUZZ_MS, r, async (i) => {
      if (i % 300 === 299) {
        // a new version now and then, so that accepting one does not end the exploration
        version++;
        transferId = `fz${version}`;
        signed = signManifest(manifestFor(version), keys.privateKeyPem);
      }
      const kind = r.int(10);
      if (kind < 4) {
        const index = r.chance(0.8) ? r.int(HASHES.length) : r.pick([-1, HASHES.length, 2 ** 31, Number.NaN, 0.5]);
        const right = Number.isInteger(index) && index >= 0 && index < HASHES.length ? MODEL.subarray(index * CHUNK, (index + 1) * CHUNK) : r.bytes(CHUNK);
        const payload = r.chance(0.6) ? right : r.chance(0.5) ? mutateBytes(right, r) : r.bytes(r.int(3 * CHUNK));
        receiver.chunk(r.chance(0.9) ? transferId : r.pick(['fz0', 'other', 'x'.repeat(64)]), index, payload);
        return;
      }
      let payload: Buffer;
      if (kind < 7) {
        const valid = request() as { id: string };
        wellFormed.push(valid.id);
        payload = Buffer.from(JSON.stringify(valid));
      }
      else if (kind < 8) {
        // the manifest changed under its signature: must be refused
        const forged = { ...signed, manifest: mutateJson(signed.manifest, r) };
        payload = Buffer.from(JSON.stringify(makeRequest('transfer.offer', { transferId, manifest: forged, via: { kind: 'device', name: 'fz' } }, 5000)));
      } else payload = mutatePayload(request(), r);
      requests++;
      await dispatcher.handle(payload);
    });
    await dispatcher.drain(10_000);
    // and it still takes a clean delivery of the next version, start to finish
    version++;
    transferId = `fz${version}`;
    signed = signManifest(manifestFor(version), keys.privateKeyPem);
    const offered = await receiver.offer({ transferId, manifest: signed, via: { kind: 'device', name: 'fz' } });
    for (const index of offered.missing) receiver.chunk(transferId, index, MODEL.subarray(index * CHUNK, (index + 1) * CHUNK));
    expect(await receiver.commit({ transferId, activate: true })).toMatchObject({ model: 'fz-model', version, activated: true });
    await receiver.close();

    expect(steps).toBeGreaterThan(0);
    // never more replies than requests, and exactly one for each well-formed request (mutated ones may
    // share an id, such as "__proto__", and each still gets its own answer)
    expect(replies.length).toBeLessThanOrEqual(requests);
    const answered = new Map<string, number>();
    for (const reply of replies) answered.set(reply.corr, (answered.get(reply.corr) ?? 0) + 1);
    expect(wellFormed.filter((id) => answered.get(id) !== 1)).toEqual([]);
    for (const reply of replies) {
      if (reply.status === 'error') expect(reply.error.code).toMatch(/^[a-z_]+$/);
    }
    // whatever got installed is the signed file, byte for byte; the active version is one of those
    for (const [name, versions] of models.installed) {
      for (const v of versions.keys()) expect(sha256Hex(await models.bytesOf(name, v))).toBe(sha256Hex(MODEL));
    }
    const active = models.activeVersion.get('fz-model');
    if (active !== undefined) expect(models.installed.get('fz-model')?.has(active)).toBe(true);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(200 * 1024 * 1024);
  }, FUZZ_MS + 60_000);
});
