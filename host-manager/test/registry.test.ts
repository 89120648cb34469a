import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FleetError, sha256Hex } from '@edgefleet/protocol';
import type { DeviceInfo } from '@edgefleet/protocol';
import { openState } from '../src/state/repository.js';
import { createRegistry } from '../src/models/registry.js';
import { createImageRegistry } from '../src/images/registry.js';
import { checkCompatibility, compareVersions, minOnnxruntimeForOpset } from '../src/models/compatibility.js';
import { loadOrCreateFleetKeys, fleetKeyPaths } from '../src/access/fleet-keys.js';
import { readOnnxMetadata, readOnnxMetadataFromFile } from '@edgefleet/onnx';
import { imageClassifierModel, largeModel, linearModel, multiInputModel, opsetModel } from '../../test/support/onnx-models.js';
import { refusal as rejection } from '../../test/support/refusal.js';
import { tinyImage } from '../../test/support/container-images.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'registry-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function fresh(label: string) {
  const dataDir = join(dir, label);
  const db = await openState(join(dataDir, 'state.json'));
  return { dataDir, db, registry: createRegistry(db, dataDir) };
}

async function modelFile(name: string, bytes: Uint8Array): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, bytes);
  return file;
}


describe('ONNX metadata', () => {
  it('reads inputs, outputs with symbolic dims, dtypes and the opset', () => {
    const meta = readOnnxMetadata(linearModel({ opset: 15 }).bytes);
    expect(meta.opset).toBe(15);
    expect(meta.inputs).toEqual([{ name: 'x', dtype: 'float32', shape: ['batch', 4] }]);
    expect(meta.outputs).toEqual([{ name: 'y', dtype: 'float32', shape: ['batch', 3] }]);
    const multi = readOnnxMetadata(multiInputModel().bytes);
    expect(multi.inputs.map((i) => i.dtype).sort()).toEqual(['float32', 'int64']);
    // initializers (W, b) are not listed as inputs
    expect(meta.inputs.map((i) => i.name)).not.toContain('W');
  });

  it.each([
    ['empty', Buffer.alloc(0)],
    ['random bytes', randomBytes(4096)],
    ['text', Buffer.from('{"not": "a model"}\n')],
    ['a truncated model', linearModel().bytes.subarray(0, 40)],
  ])('refuses %s as not_onnx', async (label, bytes) => {
    let caught: unknown;
    try {
      readOnnxMetadata(bytes);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(FleetError);
    expect((caught as FleetError).code).toBe('not_onnx');
    // the same refusal when the file is walked on disk instead of loaded
    const fromFile = await rejection(readOnnxMetadataFromFile(await modelFile(`bad-${label.replace(/ /g, '-')}.bin`, bytes)));
    expect(fromFile.code).toBe('not_onnx');
    expect(fromFile.message).toMatch(/export the model to \.onnx/);
  });

  it.each([
    ['a linear model', () => linearModel({ opset: 15 }).bytes],
    ['two inputs, int64 beside float32', () => multiInputModel().bytes],
    ['a 1 MiB model with large initializers', () => largeModel({ inFeatures: 512, outFeatures: 512 }).bytes],
    ['an image classifier with processing-friendly names', () => imageClassifierModel().bytes],
    ['an old IR version', () => opsetModel(7, 3).bytes],
  ])('reads %s from its file (walked, not loaded) exactly as from its bytes', async (_label, build) => {
    const bytes = build();
    const file = await modelFile(`walk-${sha256Hex(bytes).slice(0, 8)}.onnx`, bytes);
    expect(await readOnnxMetadataFromFile(file)).toEqual(readOnnxMetadata(bytes));
  });
});

describe('registry', () => {
  it('adds a version into the content-addressed store and reads its metadata', async () => {
    const { dataDir, db, registry } = await fresh('add');
    const model = linearModel({ seed: 3, opset: 13 });
    const rec = await registry.add(await modelFile('a.onnx', model.bytes), {
      name: 'classifier',
      lineage: { dataset: 'sha256:abc', metrics: { accuracy: 0.91 }, gitCommit: 'deadbeef' },
    });
    expect(rec).toMatchObject({ name: 'classifier', version: 1, created: true, length: model.bytes.length, opset: 13, minOnnxruntime: '1.6.0' });
    expect(rec.sha256).toBe(sha256Hex(model.bytes));
    expect(rec.blob).toBe(`blobs/sha256/${rec.sha256}`);
    expect(await readFile(registry.blobPath(rec))).toEqual(model.bytes);
    expect(rec.inputs[0]).toEqual({ name: 'x', dtype: 'float32', shape: ['batch', 4] });
    // persisted: a second process opening the same state sees it
    const reopened = createRegistry(await openState(join(dataDir, 'state.json')), dataDir);
    expect(reopened.get('classifier')).toMatchObject({ version: 1, sha256: rec.sha256, lineage: { gitCommit: 'deadbeef' } });
    expect(db.modelVersions('classifier')).toHaveLength(1);
  });

  it('adding the same bytes twice is one version; new bytes get the next version', async () => {
    const { registry } = await fresh('dedupe');
    const v1 = linearModel({ seed: 1 }).bytes;
    const v2 = linearModel({ seed: 2 }).bytes;
    const a = await registry.add(await modelFile('d1.onnx', v1), { name: 'm' });
    const b = await registry.add(await modelFile('d1-copy.onnx', v1), { name: 'm' });
    expect(b).toMatchObject({ version: a.version, created: false });
    const c = await registry.add(await modelFile('d2.onnx', v2), { name: 'm' });
    expect(c).toMatchObject({ version: 2, created: true });
    expect(registry.list('m').map((r) => r.version)).toEqual([1, 2]);
    expect(registry.get('m')?.version).toBe(2);
    expect(registry.get('m', 1)?.sha256).toBe(sha256Hex(v1));
  });

  it('concurrent adds of one name never share a number', async () => {
    const { registry } = await fresh('concurrent');
    const files = await Promise.all([1, 2, 3, 4].map(async (s) => modelFile(`c${s}.onnx`, linearModel({ seed: 10 + s }).bytes)));
    const recs = await Promise.all(files.map((f) => registry.add(f, { name: 'm' })));
    expect(recs.map((r) => r.version).sort()).toEqual([1, 2, 3, 4]);
  });

  it('versions only go up: a removed number is never reused, and a shared blob stays until its last user goes', async () => {
    const { dataDir, registry } = await fresh('remove');
    const bytes1 = linearModel({ seed: 21 }).bytes;
    const f1 = await modelFile('r1.onnx', bytes1);
    const f2 = await modelFile('r2.onnx', linearModel({ seed: 22 }).bytes);
    await registry.add(f1, { name: 'm' });
    const r2 = await registry.add(f2, { name: 'm' });
    const other = await registry.add(f1, { name: 'other' }); // same bytes under another name
    expect(other.version).toBe(1);
    expect(await registry.remove('m', 2)).toEqual({ removed: true, blobDeleted: true });
    await expect(stat(registry.blobPath(r2))).rejects.toThrow(/ENOENT/);
    expect(await registry.remove('m', 2)).toEqual({ removed: false, blobDeleted: false });
    const r3 = await registry.add(f2, { name: 'm' });
    expect(r3.version).toBe(3); // not 2 again
    expect(await registry.remove('m', 1)).toEqual({ removed: true, blobDeleted: false }); // 'other' still uses it
    expect(await readFile(registry.blobPath(other))).toEqual(bytes1);
    // survives a restart of the controller
    const reopened = createRegistry(await openState(join(dataDir, 'state.json')), dataDir);
    await reopened.remove('m', 3);
    const r4 = await reopened.add(await modelFile('r4.onnx', linearModel({ seed: 23 }).bytes), { name: 'm' });
    expect(r4.version).toBe(4);
  });

  it('refuses a file that is not ONNX, and stores nothing', async () => {
    const { dataDir, registry } = await fresh('notonnx');
    const error = await rejection(registry.add(await modelFile('x.bin', randomBytes(10_000)), { name: 'm' }));
    expect(error.code).toBe('not_onnx');
    expect(error.message).toMatch(/export the model to \.onnx/);
    expect(registry.list()).toEqual([]);
    await expect(readdir(join(dataDir, 'blobs', 'sha256'))).rejects.toThrow(/ENOENT/);
  });

  it.each(['../etc', 'a/b', '..', '', 'x'.repeat(65), '-lead', 'na me'])('refuses the model name %j', async (name) => {
    const { registry } = await fresh(`name-${Buffer.from(name).toString('hex').slice(0, 20) || 'empty'}`);
    const error = await rejection(registry.add(await modelFile('ok.onnx', linearModel().bytes), { name }));
    expect(error.code).toBe('invalid_params');
    expect(registry.list()).toEqual([]);
  });

  it('refuses a processing manifest that names an input the model lacks, and a missing file', async () => {
    const { registry } = await fresh('processing');
    const file = await modelFile('p.onnx', linearModel().bytes);
    const bad = await rejection(
      registry.add(file, {
        name: 'm',
        processing: { kind: 'text-bow', input: 'tokens', vocabularySize: 4, wordIndex: { a: 0 }, unknownWords: 'ignore', threshold: 0.5, labels: ['no', 'yes'] },
      }),
    );
    expect(bad.code).toBe('invalid_params');
    expect(bad.message).toMatch(/"tokens".*x/);
    const ok = await registry.add(file, {
      name: 'm',
      processing: { kind: 'text-bow', input: 'x', vocabularySize: 4, wordIndex: { a: 0 }, unknownWords: 'ignore', threshold: 0.5, labels: ['no', 'yes'] },
    });
    expect(ok.processing?.kind).toBe('text-bow');
    expect((await rejection(registry.add(join(dir, 'nope.onnx'), { name: 'm' }))).code).toBe('not_found');
    expect(() => registry.require('m', 9)).toThrow(/no version 9/);
  });
});

describe('compatibility check', () => {
  const device = (version: string | null, memoryBytes = 4 * 1024 ** 3): Pick<DeviceInfo, 'onnxruntime' | 'memoryBytes'> => ({
    onnxruntime: version === null ? null : { version, executionProviders: ['cpu'] },
    memoryBytes,
  });
  const rec = { name: 'm', version: 2, opset: 17, minOnnxruntime: null as string | null, length: 10 * 1024 * 1024 };

  it('accepts a device whose runtime and memory suffice', () => {
    expect(checkCompatibility(rec, device('1.30.0'))).toBeUndefined();
    expect(checkCompatibility(rec, device('1.13.1'))).toBeUndefined();
  });
  it('refuses an opset newer than the runtime, a runtime below minOnnxruntime, no runtime, too little memory', () => {
    expect(checkCompatibility(rec, device('1.12.1'))).toMatch(/opset 17.*1\.13\.0.*1\.12\.1/);
    expect(checkCompatibility({ ...rec, minOnnxruntime: '1.31.0' }, device('1.30.0'))).toMatch(/needs onnxruntime 1\.31\.0/);
    expect(checkCompatibility(rec, device(null))).toMatch(/no onnxruntime/);
    expect(checkCompatibility({ ...rec, length: 600 * 1024 * 1024 }, device('1.30.0', 1024 ** 3))).toMatch(/memory/);
    expect(checkCompatibility({ ...rec, opset: 99 }, device('1.22.0'))).toMatch(/opset 99/);
  });
  it('maps opsets to runtime versions and compares versions numerically', () => {
    expect(minOnnxruntimeForOpset(13)).toBe('1.6.0');
    expect(minOnnxruntimeForOpset(5)).toBe('0.1.4');
    expect(minOnnxruntimeForOpset(99)).toBeNull();
    expect(compareVersions('1.10.0', '1.9.2')).toBeGreaterThan(0);
    expect(compareVersions('1.6', '1.6.0')).toBe(0);
  });
  it('agrees with a real model: opset 18 needs 1.14', async () => {
    const { registry } = await fresh('compat');
    const rec18 = await registry.add(await modelFile('o18.onnx', opsetModel(18).bytes), { name: 'relu' });
    expect(rec18.minOnnxruntime).toBe('1.14.0');
    expect(checkCompatibility(rec18, device('1.13.0'))).toMatch(/opset 18/);
    expect(checkCompatibility(rec18, device('1.14.0'))).toBeUndefined();
  });
});

describe('fleet keys', () => {
  it('creates an ed25519 key pair once, private key mode 0600, and loads the same one again', async () => {
    const dataDir = join(dir, 'keys1');
    const keys = await loadOrCreateFleetKeys(dataDir);
    const paths = fleetKeyPaths(dataDir);
    expect((await stat(paths.privateKey)).mode & 0o777).toBe(0o600);
    expect(keys.keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(keys.privateKeyPem).toMatch(/BEGIN PRIVATE KEY/);
    expect(await readFile(paths.publicKey, 'utf8')).toBe(keys.publicKeyPem);
    const again = await loadOrCreateFleetKeys(dataDir);
    expect(again).toEqual(keys);
  });

  it('refuses to start with a private key others can read, and says how to fix it', async () => {
    const dataDir = join(dir, 'keys2');
    await loadOrCreateFleetKeys(dataDir);
    const { privateKey } = fleetKeyPaths(dataDir);
    await chmod(privateKey, 0o644);
    await expect(loadOrCreateFleetKeys(dataDir)).rejects.toThrow(`chmod 600 ${privateKey}`);
    await chmod(privateKey, 0o640);
    await expect(loadOrCreateFleetKeys(dataDir)).rejects.toThrow(/readable by group or others/);
    await chmod(privateKey, 0o600);
    await expect(loadOrCreateFleetKeys(dataDir)).resolves.toMatchObject({ keyId: expect.any(String) });
  });
});

describe('image registry', () => {
  async function freshImages(label: string) {
    const dataDir = join(dir, label);
    const db = await openState(join(dataDir, 'state.json'));
    return { dataDir, db, images: createImageRegistry(db, dataDir) };
  }
  /** A copy of an archive, as an upload: the registry consumes what it is given. */
  async function upload(archive: { path: string }): Promise<string> {
    const file = join(dir, `upload-${randomBytes(4).toString('hex')}.tar`);
    await copyFile(archive.path, file);
    return file;
  }

  it('pins the image ID read from the archive itself, its platform, and stores the archive by sha256', async () => {
    const { dataDir, images } = await freshImages('img1');
    const arm = await tinyImage(dir, { platform: { architecture: 'arm', variant: 'v7' }, repoTags: [] });
    const file = await upload(arm);
    const rec = await images.addArchive(file, { name: 'web', reference: 'team/web:1', container: { ports: [{ container: 80 }] } });
    expect(rec).toMatchObject({ name: 'web', version: 1, sha256: arm.sha256, length: arm.length, created: true, image: { reference: 'team/web:1', digest: arm.id, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } } });
    expect(rec.container?.ports).toEqual([{ container: 80, protocol: 'tcp', host: 0, hostIp: '127.0.0.1' }]);
    expect(sha256Hex(await readFile(images.blobPath(rec)))).toBe(arm.sha256);
    await expect(stat(file)).rejects.toMatchObject({ code: 'ENOENT' }); // consumed
    // what is stored survives a restart of the controller
    const reopened = createImageRegistry(await openState(join(dataDir, 'state.json')), dataDir);
    const { created: _created, ...stored } = rec;
    expect(reopened.require('web', 1)).toEqual(stored);
  });

  it('the same image with the same spec is the same version; another spec or image is the next; a removed number is never reused', async () => {
    const { images } = await freshImages('img2');
    const a = await tinyImage(dir, { repoTags: [] });
    const b = await tinyImage(dir, { repoTags: [] });
    expect((await images.addArchive(await upload(a), { name: 'web' })).version).toBe(1);
    expect(await images.addArchive(await upload(a), { name: 'web' })).toMatchObject({ version: 1, created: false });
    expect((await images.addArchive(await upload(a), { name: 'web', container: { restart: 'always' } })).version).toBe(2);
    expect((await images.addArchive(await upload(b), { name: 'web' })).version).toBe(3);
    expect(await images.remove('web', 3)).toEqual({ removed: true, blobDeleted: true });
    expect(await images.remove('web', 2)).toEqual({ removed: true, blobDeleted: false }); // version 1 has the same archive
    expect((await images.addArchive(await upload(b), { name: 'web' })).version).toBe(4);
    expect(images.list('web').map((v) => v.version)).toEqual([1, 4]);
  });

  it('refuses an archive that does not hold the image its sender named, a bad spec, a bad name and a non-archive, keeping nothing', async () => {
    const { images } = await freshImages('img3');
    const a = await tinyImage(dir, { repoTags: [] });
    const b = await tinyImage(dir, { repoTags: [] });
    const file = await upload(a);
    expect(await rejection(images.addArchive(file, { name: 'web', expectId: b.id }))).toMatchObject({ code: 'digest_mismatch', message: expect.stringContaining(`holds image ${a.id}, not ${b.id}`) });
    await expect(stat(file)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await rejection(images.addArchive(await upload(a), { name: 'web', container: { ports: [{ container: 0 }] } }))).toMatchObject({ code: 'invalid_params', message: expect.stringMatching(/^container spec: ports\.0\.container/) });
    expect(await rejection(images.addArchive(await upload(a), { name: '../web' }))).toMatchObject({ code: 'invalid_params' });
    const junk = join(dir, 'junk.tar');
    await writeFile(junk, randomBytes(3000));
    expect(await rejection(images.addArchive(junk, { name: 'web' }))).toMatchObject({ code: 'invalid_params', message: expect.stringMatching(/docker save/) });
    expect(images.list()).toEqual([]);
    expect(await rejection(Promise.resolve().then(() => images.require('web')))).toMatchObject({ code: 'not_found', message: expect.stringMatching(/image push/) });
  });
});
