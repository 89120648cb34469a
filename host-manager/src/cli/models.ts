/** `hostManager models add|list|show|remove`: the model registry. */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, extname, join, resolve } from 'node:path';
import type { Argv } from 'yargs';
import { UsageError, parseModelRef, table } from './io.js';
import type { CliContext } from './io.js';
import { DEMO_INPUT, demoAnswer, demoModel } from '../models/demo-model.js';
import { checkOptions, checkRequest, checkSummary } from './check-flags.js';
import type { CheckFlags } from './check-flags.js';

export function modelCommands<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y
    .command('models', 'the model registry: add, list, show, remove', (y) =>
      y
        .command(
          'add <file>',
          'register an ONNX file as the next version of a model (same bytes = same version)',
          (yy) =>
            checkOptions(
              yy
                .positional('file', { type: 'string', demandOption: true })
                .option('name', { type: 'string', describe: 'model name (default: the file name without .onnx)' })
                .option('lineage', { type: 'string', describe: 'JSON: {"dataset","metrics","notes","gitCommit"}' })
                .option('processing', { type: 'string', describe: 'JSON file with the pre/post-processing manifest' }),
            ),
          ctx.run<{ file: string; name?: string; lineage?: string; processing?: string } & CheckFlags>(async (a, c) => {
            const name = a.name ?? basename(a.file, extname(a.file));
            let bytes: Buffer;
            try {
              bytes = await readFile(resolve(a.file));
            } catch (error) {
              throw new UsageError(`cannot read ${a.file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
            }
            const headers: Record<string, string> = { 'x-model-filename': encodeURIComponent(a.file) };
            if (a.lineage) {
              try {
                JSON.parse(a.lineage);
              } catch {
                throw new UsageError('--lineage must be JSON');
              }
              headers['x-model-lineage'] = Buffer.from(a.lineage).toString('base64');
            }
            if (a.processing) {
              const text = await readFile(resolve(a.processing)).catch((error: NodeJS.ErrnoException) => {
                throw new UsageError(`cannot read --processing ${a.processing}: ${error.code ?? error.message}`);
              });
              headers['x-model-processing'] = text.toString('base64');
            }
            const check = await checkRequest(c, a);
            if (check) headers['x-model-check'] = Buffer.from(JSON.stringify(check)).toString('base64');
            const rec = await c.upload<{ name: string; version: number; sha256: string; created: boolean; check?: Parameters<typeof checkSummary>[0] }>(`/api/models?name=${encodeURIComponent(name)}`, bytes, headers);
            const text = rec.created
              ? `${rec.name}@${rec.version} added (sha256 ${rec.sha256.slice(0, 12)}…), ${checkSummary(rec.check)}`
              : `${rec.name}@${rec.version} already has these bytes and this check; nothing added`;
            return { json: rec, text };
          }),
        )
        .command('list [name]', 'list models and versions', (yy) => yy.positional('name', { type: 'string' }), ctx.run<{ name?: string }>(async (a, c) => {
          type Listed = { name: string; version: number; length: number; sha256: string; addedAt: string; opset: number | null; check?: { policy: string; allowNaN: boolean; expected: unknown } };
          const list = await c.call<Listed[]>('GET', `/api/models${a.name ? `?name=${encodeURIComponent(a.name)}` : ''}`);
          const check = (m: Listed): string => (m.check ? `${m.check.policy}${m.check.expected ? '+expected' : ''}${m.check.allowNaN ? '+nan' : ''}` : 'zeros');
          return { json: list, text: list.length ? table(list.map((m) => ({ model: m.name, version: m.version, bytes: m.length, sha256: m.sha256.slice(0, 12), opset: m.opset, check: check(m), added: m.addedAt })), ['model', 'version', 'bytes', 'sha256', 'opset', 'check', 'added']) : 'no models yet; add one with `hostManager models add <file.onnx>`' };
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
        .command(
          'demo',
          'write a tiny demo model (demo.onnx) and an input for it (demo-input.json), to try a rollout and an inference',
          (yy) => yy.option('out', { type: 'string', default: '.', describe: 'directory to write them into' }),
          async (raw) => {
            // local: nothing is sent to the controller
            const a = raw as unknown as { out: string; json: boolean };
            const dir = resolve(a.out);
            await mkdir(dir, { recursive: true });
            await writeFile(join(dir, 'demo.onnx'), demoModel());
            // {"inputs": ...}: what `hostManager infer --input` and the agent's own HTTP API both take
            await writeFile(join(dir, 'demo-input.json'), `${JSON.stringify({ inputs: DEMO_INPUT })}\n`);
            const answer = demoAnswer(DEMO_INPUT.x.data);
            ctx.io.out(
              a.json
                ? JSON.stringify({ model: join(dir, 'demo.onnx'), input: join(dir, 'demo-input.json'), expected: { y: answer } })
                : `wrote ${join(dir, 'demo.onnx')} (y = x·W + b, x float32[batch,4], y float32[batch,3]) and ${join(dir, 'demo-input.json')}; for x = [1,2,3,4] it answers y = [${answer.join(', ')}]\n` +
                    'next: hostManager models add demo.onnx && hostManager deploy demo --to group:lab --wait && hostManager infer pi-1 demo --input demo-input.json',
            );
          },
        )
        .demandCommand(1, 'say which: models add|list|show|remove|demo'),
    );
}
