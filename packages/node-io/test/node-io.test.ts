import { describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { TMP_MARK, decoySecretHash, hashFile, hashRandomToken, hashSecret, inspectArchive, isSecretHash, mib, untaggedArchive, verifySecret, verifySecretAsync, writeFileAtomic } from '../src/index.js';
import { tinyImage } from '../../../test/support/container-images.js';

async function inTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'node-io-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('writeFileAtomic', () => {
  it('replaces a file whole, with the mode asked for, and leaves no temporary file', () =>
    inTmp(async (dir) => {
      const file = join(dir, 'state.json');
      await writeFile(file, 'old');
      await writeFileAtomic(file, 'new', { mode: 0o600 });
      expect(await readFile(file, 'utf8')).toBe('new');
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect((await readdir(dir)).filter((f) => f.includes(TMP_MARK))).toEqual([]);
    }));

  it('keeps the old bytes in place until the rename (what a crash before it leaves)', () =>
    inTmp(async (dir) => {
      const file = join(dir, 'f');
      await writeFile(file, 'old');
      let seen = '';
      let tmpFiles: string[] = [];
      await writeFileAtomic(file, 'new', {
        beforeRename: async () => {
          seen = await readFile(file, 'utf8');
          tmpFiles = (await readdir(dir)).filter((f) => f.includes(TMP_MARK));
        },
      });
      expect(seen).toBe('old');
      expect(tmpFiles).toHaveLength(1);
    }));

  it('fails without touching the old file or leaving a temporary one when the write cannot finish', () =>
    inTmp(async (dir) => {
      const file = join(dir, 'f');
      await writeFile(file, 'old');
      await expect(
        writeFileAtomic(file, 'new', {
          beforeRename: () => {
            throw new Error('stopped before the rename');
          },
        }),
      ).rejects.toThrow('stopped before the rename');
      expect(await readFile(file, 'utf8')).toBe('old');
      expect(await readdir(dir)).toEqual(['f']);
      await expect(writeFileAtomic(join(dir, 'no-such-dir', 'f'), 'x')).rejects.toThrow(/ENOENT/);
    }));
});

describe('hashFile', () => {
  it('streams a file larger than one read into the same sha256 as hashing it in memory', () =>
    inTmp(async (dir) => {
      const bytes = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
      const file = join(dir, 'blob');
      await writeFile(file, bytes);
      expect(await hashFile(file)).toBe(createHash('sha256').update(bytes).digest('hex'));
    }));
});

describe('secrets', () => {
  it('hashes with a salt and verifies only the right token', () => {
    const a = hashSecret('secret-token');
    const b = hashSecret('secret-token');
    expect(a).not.toBe(b);
    expect(a).toMatch(/^scrypt\$16384\$8\$1\$/);
    expect(a).not.toContain('secret-token');
    expect(verifySecret('secret-token', a)).toBe(true);
    expect(verifySecret('secret-tokeN', a)).toBe(false);
    expect(verifySecret('', a)).toBe(false);
    expect(verifySecret('secret-token', 'plain-text')).toBe(false);
  });

  it('hashes with a salt, verifies off the event loop, and refuses what is not a hash', async () => {
    const h = hashSecret('a-token-of-some-length');
    expect(isSecretHash(h)).toBe(true);
    expect(await verifySecretAsync('a-token-of-some-length', h)).toBe(true);
    expect(await verifySecretAsync('another-token', h)).toBe(false);
    expect(await verifySecretAsync('a-token-of-some-length', 'plain text')).toBe(false);
    expect(isSecretHash('scrypt$99999999$8$1$AAAA$AAAA')).toBe(false);
    expect(() => hashSecret('')).toThrow(/empty secret/);
  });
});

describe('random tokens (SHA-256)', () => {
  const token = randomBytes(32).toString('base64url');

  it('hashes with a salt and verifies only the right token, sync and async', async () => {
    const a = hashRandomToken(token);
    const b = hashRandomToken(token);
    expect(a).not.toBe(b);
    expect(a).toMatch(/^sha256\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]{44}$/);
    expect(a).not.toContain(token);
    expect(isSecretHash(a)).toBe(true);
    expect(verifySecret(token, a)).toBe(true);
    expect(await verifySecretAsync(token, a)).toBe(true);
    expect(await verifySecretAsync(Buffer.from(token), a)).toBe(true);
    const flipped = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
    expect(verifySecret(flipped, a)).toBe(false);
    expect(await verifySecretAsync(flipped, a)).toBe(false);
    expect(await verifySecretAsync('', a)).toBe(false);
  });

  it('refuses a short secret (a chosen one needs scrypt) and hashes that are not whole', async () => {
    expect(() => hashRandomToken('correct-horse-battery')).toThrow(/at least 32 characters.*hashSecret/);
    const [, salt, hash] = hashRandomToken(token).split('$');
    expect(isSecretHash(`sha256$${salt}$${hash!.slice(0, 20)}`)).toBe(false);
    expect(await verifySecretAsync(token, `sha256$${salt}$${hash!.slice(0, 20)}`)).toBe(false);
    expect(await verifySecretAsync(token, `sha256$$${hash}`)).toBe(false);
    expect(await verifySecretAsync(token, `sha256$${salt}$${hash}$extra`)).toBe(false);
  });

  it('keeps verifying scrypt hashes made before (both schemes side by side)', async () => {
    const old = hashSecret(token);
    expect(await verifySecretAsync(token, old)).toBe(true);
    expect(await verifySecretAsync(token, hashRandomToken(token))).toBe(true);
  });

  it('uses a token hash as the decoy for unknown user names, so they cost what a real check costs', async () => {
    expect(decoySecretHash()).toMatch(/^sha256\$/);
    expect(await verifySecretAsync(token, decoySecretHash())).toBe(false);
  });
});

describe('mib', () => {
  it('formats bytes as MiB', () => {
    expect(mib(1.5 * 1024 * 1024)).toBe('1.5');
    expect(mib(200 * 1024 * 1024, 0)).toBe('200');
  });
});

describe('docker save archives', () => {
  it('reads the one image: its ID (the config sha256), platform, layers, tags and the whole-file sha256', () =>
    inTmp(async (dir) => {
      const tagged = await tinyImage(dir, { platform: { architecture: 'arm', variant: 'v7' } });
      const a = await inspectArchive(tagged.path);
      expect(a).toMatchObject({ id: tagged.id, sha256: tagged.sha256, archiveBytes: tagged.length, platform: { os: 'linux', architecture: 'arm', variant: 'v7' }, layers: 1, repoTags: ['edgefleet-test/tiny:latest'], tagged: true });
      // without the hash (the caller verified the file), and an archive that names no tag
      const plain = await tinyImage(dir, { repoTags: [] });
      expect(await inspectArchive(plain.path, { hash: false })).toMatchObject({ id: plain.id, sha256: undefined, repoTags: [], tagged: false });
    }));

  it('streams an archive without its tags, layers untouched: the same image ID, nothing named', () =>
    inTmp(async (dir) => {
      const tagged = await tinyImage(dir);
      const copy = join(dir, 'untagged.tar');
      await pipeline(untaggedArchive(tagged.path), createWriteStream(copy));
      expect(await inspectArchive(copy)).toMatchObject({ id: tagged.id, repoTags: [], tagged: false });
    }));

  it('refuses what is not one complete image: cut inside an entry (truncated), not a tar, a missing file', () =>
    inTmp(async (dir) => {
      const tiny = await tinyImage(dir, { repoTags: [] });
      const cut = join(dir, 'cut.tar');
      await writeFile(cut, (await readFile(tiny.path)).subarray(0, 700));
      await expect(inspectArchive(cut)).rejects.toMatchObject({ code: 'truncated', message: expect.stringMatching(/ends inside an entry/) });
      await writeFile(join(dir, 'junk.tar'), Buffer.from('not a tar archive at all'.repeat(40)));
      await expect(inspectArchive(join(dir, 'junk.tar'))).rejects.toMatchObject({ code: 'invalid_params' });
      await expect(inspectArchive(join(dir, 'missing.tar'))).rejects.toMatchObject({ code: 'not_found' });
    }));
});
