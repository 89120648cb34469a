/** `hostManager infer|exec|logs|keys|audit`: requests to devices through the controller, and what the controller keeps. */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { EXIT, UsageError, parseModelRef, table } from './io.js';
import type { CliContext } from './io.js';

export function requestCommands<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y
    .command(
      'infer <device> <model>',
      'run one inference on a device (through MQTT)',
      (y) =>
        y
          .positional('device', { type: 'string', demandOption: true })
          .positional('model', { type: 'string', demandOption: true, describe: 'NAME or NAME@VERSION' })
          .option('input', { type: 'string', describe: 'JSON file: {"inputs":{name:{dtype,shape,data}}} or {"raw":{"text":...}} or the inputs map itself' })
          .option('text', { type: 'string', describe: 'raw text input, for models with text pre-processing' })
          .option('image', { type: 'string', describe: 'image file, for models with image pre-processing' })
          .option('timeout', { type: 'number', describe: 'ms to wait for the answer' }),
      ctx.run<{ device: string; model: string; input?: string; text?: string; image?: string; timeout?: number }>(async (a, c) => {
        const { model, version } = parseModelRef(a.model);
        let body: Record<string, unknown> = { model, ...(version ? { version } : {}) };
        if (a.input) {
          let parsed: Record<string, unknown>;
          try {
            parsed = JSON.parse(await readFile(resolve(a.input), 'utf8')) as Record<string, unknown>;
          } catch (error) {
            throw new UsageError(`cannot read ${a.input} as JSON: ${(error as Error).message}`);
          }
          body = 'inputs' in parsed || 'raw' in parsed ? { ...body, ...parsed } : { ...body, inputs: parsed };
        } else if (a.text !== undefined) body['raw'] = { text: a.text };
        else if (a.image) body['raw'] = { imageBase64: (await readFile(resolve(a.image))).toString('base64') };
        else throw new UsageError('give the input: --input FILE, --text TEXT or --image FILE');
        if (a.timeout) body['timeoutMs'] = a.timeout;
        const r = await c.call<{ model: string; version: number; outputs: Record<string, { dtype: string; shape: number[]; data: unknown[] }>; answer?: unknown; latencyMs: number }>('POST', `/api/devices/${encodeURIComponent(a.device)}/infer`, body);
        const outputs = Object.entries(r.outputs).map(([n, t]) => `  ${n} ${t.dtype}[${t.shape.join(',')}]: ${JSON.stringify(t.data.slice(0, 16))}${t.data.length > 16 ? ' …' : ''}`);
        return { json: r, text: [`${r.model}@${r.version} on ${a.device} (${r.latencyMs.toFixed(2)} ms)`, ...(r.answer !== undefined ? [`  answer: ${JSON.stringify(r.answer)}`] : []), ...outputs].join('\n') };
      }),
    )
    .command(
      'exec <target> <command>',
      'send an original plain-text command (start, stop, update, install, done, exit) to a device, group:NAME or all',
      (y) => y.positional('target', { type: 'string', demandOption: true }).positional('command', { type: 'string', demandOption: true }).option('via', { choices: ['command', 'topic'] as const, default: 'command' as const, describe: 'command: the legacy request, with answers; topic: the bare word on the legacy topic, as the C host manager did' }),
      ctx.run<{ target: string; command: string; via: 'command' | 'topic' }>(async (a, c) => {
        const r = await c.call<{ via: string; results: { device: string; ok: boolean; message?: string; error?: { code: string; message: string } }[] }>('POST', '/api/exec', { to: a.target, command: a.command, via: a.via });
        const lines = r.via === 'topic' ? [`published "${a.command}" on the legacy topic`] : r.results.map((x) => `${x.device}: ${x.ok ? x.message : `error ${x.error?.code}: ${x.error?.message}`}`);
        return { json: r, text: lines.join('\n') || 'no devices answered', code: r.results.every((x) => x.ok) ? EXIT.ok : EXIT.failed };
      }),
    )
    .command('logs <device>', "the tail of a device agent's log", (y) => y.positional('device', { type: 'string', demandOption: true }).option('lines', { type: 'number', default: 100 }), ctx.run<{ device: string; lines: number }>(async (a, c) => {
      const r = await c.call<{ lines: string[] }>('GET', `/api/devices/${encodeURIComponent(a.device)}/logs?lines=${a.lines}`);
      return { json: r, text: r.lines.join('\n') };
    }))
    .command('keys', "the fleet's public signing key (give it to devices)", {}, ctx.run(async (_a, c) => {
      const k = await c.call<{ keyId: string; publicKeyPem: string }>('GET', '/api/keys');
      return { json: k, text: `key id ${k.keyId}\n${k.publicKeyPem.trimEnd()}` };
    }))
    .command('audit', 'the audit log: operator actions and device results', (y) => y.option('limit', { type: 'number', default: 50 }), ctx.run<{ limit: number }>(async (a, c) => {
      const list = await c.call<{ ts: string; actor: string; action: string; target?: string; result: string }[]>('GET', `/api/audit?limit=${a.limit}`);
      return { json: list, text: table(list, ['ts', 'actor', 'action', 'target', 'result']) };
    }));
}
