/**
 * kill -9 during install and activation: a child process installs and activates v2 over v1 and kills
 * itself (SIGKILL) at each step of the writes in turn. After every crash the store reopens with either
 * v1 or v2 active and answering with exactly that version's outputs: never a half-written file, never a
 * state.json that points at a missing one, no temporary files left behind.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pino from 'pino';
import { sha256Hex } from '@edgefleet/protocol';
import { createModelService } from '../src/models/index.js';
import { allClose, linearModel, stageFile, testManifest } from '../../test/support/onnx-models.js';

const DIST = pathToFileURL(fileURLToPath(new URL('../dist/src/models/index.js', import.meta.url))).href;
const PINO = pathToFileURL(createRequire(import.meta.url).resolve('pino')).href;
const logger = pino({ level: 'silent' });
const v1 = linearModel({ seed: 101 });
const v2 = linearModel({ seed: 202 });

/** The child: install v2 and activate it, SIGKILLing itself when the named step is reached. */
const CHILD = `
import { readFile } from 'node:fs/promises';
import pino from ${JSON.stringify(PINO)};
import { createModelService } from ${JSON.stringify(DIST)};
const [dataDir, manifestFile, stagedFile, crashAt] = process.argv.slice(2);
const models = await createModelService({
  dataDir, logger: pino({ level: 'silent' }), threads: 1, keepVersions: 0,
  onStep: (step) => { if (step === crashAt) process.kill(process.pid, 'SIGKILL'); },
});
const manifest = JSON.parse(await readFile(manifestFile, 'utf8'));
await models.install(manifest, stagedFile);
await models.activate(manifest.name, manifest.version);
await models.close();
console.log('completed');
`;

function run(script: string, args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

async function allFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await allFiles(p)));
    out.push(p);
  }
  return out;
}

describe('kill -9 during install and activation', () => {
  let base: string;
  let pristine: string;
  let script: string;

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'edgefleet-crash-'));
    // A store with v1 active, copied afresh for every crash point.
    pristine = join(base, 'pristine');
    const models = await createModelService({ dataDir: pristine, logger, threads: 1 });
    await models.install(testManifest('m', 1, v1.bytes), await stageFile(join(pristine, 'staging'), v1.bytes));
    await models.activate('m', 1);
    await models.close();
    script = join(base, 'crash-child.mjs');
    await writeFile(script, CHILD);
  });
  afterAll(async () => {
    await rm(base, { recursive: true, force: true });
  });

  const steps: [string, 1 | 2][] = [
    ['install:manifest:tmp-written', 1],
    ['install:info:tmp-written', 1],
    ['install:before-model', 1],
    ['install:done', 1],
    ['activate:loaded', 1],
    ['activate:state:tmp-written', 1],
    ['activate:state-saved', 2],
    ['delete:renamed', 2],
    ['never', 2],
  ];

  it.each(steps)('killed at %s: v%s serves intact after restart, and v2 can then be activated', async (step, expected) => {
    const dataDir = join(base, step.replace(/[^a-z-]/g, '_'));
    await cp(pristine, dataDir, { recursive: true });
    const manifest = testManifest('m', 2, v2.bytes);
    const manifestFile = join(base, `${step}.manifest.json`);
    await writeFile(manifestFile, JSON.stringify(manifest));
    const staged = await stageFile(join(dataDir, 'staging'), v2.bytes);

    const child = await run(script, [dataDir, manifestFile, staged, step]);
    if (step === 'never') {
      expect(child.stderr).toBe('');
      expect(child.stdout.trim()).toBe('completed');
    } else {
      expect(child.signal).toBe('SIGKILL');
    }

    const models = await createModelService({ dataDir, logger, threads: 1, keepVersions: 0 });
    try {
      expect(models.active()).toEqual([{ name: 'm', version: expected }]);
      const state = JSON.parse(await readFile(join(dataDir, 'models', 'state.json'), 'utf8'));
      expect(state.models.m.active).toBe(expected);
      const activeBytes = await readFile(join(dataDir, 'models', 'm', String(expected), 'model.onnx'));
      expect(sha256Hex(activeBytes)).toBe(sha256Hex((expected === 1 ? v1 : v2).bytes));
      const leftovers = (await allFiles(join(dataDir, 'models'))).filter((f) => /\.tmp-|\.trash-/.test(f));
      expect(leftovers).toEqual([]);
      const x = [1, -2, 0.5, 3];
      const r = await models.infer({ model: 'm', inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } });
      expect(r.version).toBe(expected);
      expect(allClose(r.outputs.y?.data as number[], (expected === 1 ? v1 : v2).expected(x))).toBe(true);

      // Finish the job after the restart: re-send v2 if the install did not complete, then activate.
      if (!models.list()[0]?.versions.includes(2)) {
        await models.install(manifest, await stageFile(join(dataDir, 'staging'), v2.bytes));
      }
      await models.activate('m', 2);
      const r2 = await models.infer({ model: 'm', inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } });
      expect(allClose(r2.outputs.y?.data as number[], v2.expected(x))).toBe(true);
    } finally {
      await models.close();
    }
  });
});
