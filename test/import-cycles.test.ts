/**
 * No import cycle between source files of any part (src/ and bin/ of every workspace),
 * type-only imports included. The graph is madge's (dependency resolution made for the
 * job); cycles between parts cannot exist because `tsc -b` project references are acyclic.
 */
import { describe, expect, it } from '@jest/globals';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import madge from 'madge';

const ROOT = new URL('..', import.meta.url).pathname;
const PARTS = ['packages/node-io', 'packages/protocol', 'packages/onnx', 'broker', 'device-agent', 'host-manager', 'toolchains'];

async function graph(paths: string[], tsConfig?: string): Promise<{ files: number; cycles: string[][] }> {
  const result = await madge(paths, {
    baseDir: ROOT,
    fileExtensions: ['ts'],
    excludeRegExp: [/\/dist\//, /\.d\.ts$/, /\/test\//],
    detectiveOptions: { ts: { skipTypeImports: false } },
    ...(tsConfig ? { tsConfig } : {}),
  });
  return { files: Object.keys(result.obj()).length, cycles: result.circular() };
}

describe('import cycles', () => {
  it.each(PARTS)('%s has none between its source files', async (part) => {
    const dirs = ['src', 'bin'].map((d) => join(ROOT, part, d)).filter((d) => existsSync(d));
    const { files, cycles } = await graph(dirs, join(ROOT, part, 'tsconfig.json'));
    expect(files).toBeGreaterThan(1); // the graph was read at all
    expect(cycles).toEqual([]);
  });

  it('finds a cycle where there is one (type-only imports too), so the check above can fail', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cycles-'));
    try {
      await writeFile(join(dir, 'a.ts'), "import { b } from './b.js';\nexport const a = () => b;\n");
      await writeFile(join(dir, 'b.ts'), "import type { A } from './c.js';\nexport const b = (x?: A) => x;\n");
      await writeFile(join(dir, 'c.ts'), "import { a } from './a.js';\nexport type A = ReturnType<typeof a>;\n");
      const { cycles } = await graph([dir]);
      expect(cycles).toHaveLength(1);
      expect(cycles[0]!.map((f) => basename(f)).sort()).toEqual(['a.ts', 'b.ts', 'c.ts']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
