/**
 * `hostManager watch <dir>`: the original pipeline's trigger on change. Policy:
 * a new or changed `NAME.onnx` in the directory (once its size has been stable
 * for a second) is uploaded as the next version of model NAME (same bytes =
 * nothing new, so nothing is rolled out) and then rolled out with the deploy
 * flags given to `watch`; the rollout is followed to its end before the next
 * file is handled. Other files are ignored. Runs until SIGINT/SIGTERM.
 */
import { readFile } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import { watch } from 'chokidar';
import type { Client } from './client.js';
import type { CliIO, CommandOutput } from './io.js';

export async function watchModels(opts: {
  dir: string;
  io: CliIO;
  json: boolean;
  client: Client;
  deploy: (ref: string) => Promise<CommandOutput>;
  /** Resolves to stop watching (default: SIGINT or SIGTERM). */
  until?: Promise<void>;
}): Promise<number> {
  const { io } = opts;
  const say = (event: Record<string, unknown>, text: string): void => (opts.json ? io.out(JSON.stringify(event)) : io.err(text));
  let queue = Promise.resolve();
  let failures = 0;
  const handle = async (file: string): Promise<void> => {
    if (extname(file) !== '.onnx') return;
    const name = basename(file, '.onnx');
    try {
      const bytes = await readFile(file);
      const rec = await opts.client.upload<{ name: string; version: number; created: boolean }>(`/api/models?name=${encodeURIComponent(name)}`, bytes, { 'x-model-filename': encodeURIComponent(file) });
      if (!rec.created) {
        say({ event: 'unchanged', file, model: `${rec.name}@${rec.version}` }, `${file}: same bytes as ${rec.name}@${rec.version}; nothing to roll out`);
        return;
      }
      say({ event: 'added', file, model: `${rec.name}@${rec.version}` }, `${file}: added ${rec.name}@${rec.version}; rolling it out`);
      const result = await opts.deploy(`${rec.name}@${rec.version}`);
      const r = result.json as { id: string; status: string; reason?: string };
      if (r.status !== 'succeeded') failures += 1;
      say({ event: 'rollout', file, rollout: r.id, status: r.status, reason: r.reason ?? null }, `${rec.name}@${rec.version}: rollout ${r.id} ${r.status}${r.reason ? ` (${r.reason})` : ''}`);
    } catch (error) {
      failures += 1;
      say({ event: 'error', file, message: (error as Error).message }, `${file}: ${(error as Error).message}`);
    }
  };
  const watcher = watch(opts.dir, { ignoreInitial: true, depth: 0, awaitWriteFinish: { stabilityThreshold: 1000, pollInterval: 100 } });
  const enqueue = (file: string): void => {
    queue = queue.then(() => handle(file));
  };
  watcher.on('add', enqueue).on('change', enqueue);
  await new Promise<void>((resolve, reject) => {
    watcher.once('ready', resolve);
    watcher.once('error', reject);
  });
  say({ event: 'watching', dir: opts.dir }, `watching ${opts.dir} for *.onnx (Ctrl-C to stop)`);
  await (opts.until ??
    new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    }));
  await watcher.close();
  await queue;
  return failures > 0 ? 1 : 0;
}
