import { describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TMP_MARK, decoySecretHash, hashFile, hashRandomToken, hashSecret, isSecretHash, mib, verifySecret, verifySecretAsync, writeFileAtomic } from '../src/index.js';

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
