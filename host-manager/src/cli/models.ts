/** `hostManager models add|list|show|remove`: the model registry. */
import { readFile } from 'node:fs/promises';
import { basename, extname, resolve } from 'node:path';
import type { Argv } from 'yargs';
import { UsageError, parseModelRef, table } from './io.js';
import type { CliContext } from './io.js';

export function modelCommands<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y
    .command('models', 'the model registry: add, list, show, remove', (y) =>
      y
        .command(
          'add <file>',
          'register an ONNX file as the next version of a model (same bytes = same version)',
          (yy) =>
            yy
              .positional('file', { type: 'string', demandOption: true })
              .option('name', { type: 'string', describe: 'model name (default: the file name without .onnx)' })
              .option('lineage', { type: 'string', describe: 'JSON: {"dataset","metrics","notes","gitCommit"}' })
              .option('processing', { type: 'string', describe: 'JSON file with the pre/post-processing manifest' }),
          ctx.run<{ file: string; name?: string; lineage?: string; processing?: string }>(async (a, c) => {
            const name = a.name ?? basename(a.file, extname(a.file));
            let bytes: Buffer;
            try {
              bytes = await readFile(resolve(a.file));
            } catch (error) {
              throw new UsageError(`cannot read ${a.file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
            }
            const headers: Record<string, string> = {};
            if (a.lineage) {
              try {
                JSON.parse(a.lineage);
              } catch {
                throw new UsageError('--lineage must be JSON');
              }
              headers['x-model-lineage'] = Buffer.from(a.lineage).toString('base64');
            }
            if (a.processing) headers['x-model-processing'] = (await readFile(resolve(a.processing))).toString('base64');
            const rec = await c.upload<{ name: string; version: number; sha256: string; created: boolean }>(`/api/models?name=${encodeURIComponent(name)}`, bytes, headers);
            return { json: rec, text: rec.created ? `${rec.name}@${rec.version} added (sha256 ${rec.sha256.slice(0, 12)}…)` : `${rec.name}@${rec.version} already has these bytes; nothing added` };
          }),
        )
        .command('list [name]', 'list models and versions', (yy) => yy.positional('name', { type: 'string' }), ctx.run<{ name?: string }>(async (a, c) => {
          const list = await c.call<{ name: string; version: number; length: number; sha256: string; addedAt: string; opset: number | null }[]>('GET', `/api/models${a.name ? `?name=${encodeURIComponent(a.name)}` : ''}`);
          return { json: list, text: list.length ? table(list.map((m) => ({ model: m.name, version: m.version, bytes: m.length, sha256: m.sha256.slice(0, 12), opset: m.opset, added: m.addedAt })), ['model', 'version', 'bytes', 'sha256', 'opset', 'added']) : 'no models yet; add one with `hostManager models add <file.onnx>`' };
        }))
        .command('show <ref>', 'show a model version (NAME or NAME@VERSION)', (yy) => yy.positional('ref', { type: 'string', demandOption: true }), ctx.run<{ ref: string }>(async (a, c) => {
          const { model, version } = parseModelRef(a.ref);
          const m = await c.call('GET', `/api/models/${encodeURIComponent(model)}${version ? `/${version}` : ''}`);
          return { json: m, text: JSON.stringify(m, null, 2) };
        }))
        .command('remove <ref>', 'remove a model version (NAME@VERSION)', (yy) => yy.positional('ref', { type: 'string', demandOption: true }), ctx.run<{ ref: string }>(async (a, c) => {
          const { model, version } = parseModelRef(a.ref);
          if (!version) throw new UsageError('say which version: models remove NAME@VERSION');
          const r = await c.call('DELETE', `/api/models/${encodeURIComponent(model)}/${version}`);
          return { json: r, text: `${model}@${version} removed` };
        }))
        .demandCommand(1, 'say which: models add|list|show|remove'),
    );
}
