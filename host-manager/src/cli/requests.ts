/** `hostManager infer|exec|logs|keys|audit`: requests to devices through the controller, and what the controller keeps. */
import { readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { EXIT, UsageError, parseModelRef, table } from './io.js';
import type { CliContext } from './io.js';
import { followLog, formatLogLine } from './logs.js';
import { encodeInferBody } from '@edgefleet/protocol';
import { answerLines, decodeBinaryOutputs, inferBodyFromFile } from './infer-input.js';

const jsonBody = (body: unknown) => ({ body: Buffer.from(JSON.stringify(body)), headers: { 'content-type': 'application/json' } });

export function requestCommands<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y
    .command(
      'infer <device> <model>',
      'run one inference on a device (through MQTT), with the request bodies the device\'s inference API takes',
      (y) =>
        y
          .positional('device', { type: 'string', demandOption: true })
          .positional('model', { type: 'string', demandOption: true, describe: 'NAME or NAME@VERSION' })
          .option('input', { type: 'string', describe: 'request body file: {"inputs":{name:{dtype,shape,data}}}, {"raw":{...}}, {"inputs":[{name,datatype,shape,data}]} (Open Inference Protocol), or a binary body (JSON header, then the tensors)' })
          .option('header-length', { type: 'number', describe: 'the JSON header length of a binary --input (default: found from the file)' })
          .option('output', { type: 'string', describe: 'write an answer with binary outputs to this file as it came (JSON header, then the tensors)' })
          .option('text', { type: 'string', describe: 'raw text input, for models with text pre-processing' })
          .option('image', { type: 'string', describe: 'image file, for models with image pre-processing' })
          .option('timeout', { type: 'number', describe: 'ms to wait for the answer' }),
      ctx.run<{ device: string; model: string; input?: string; 'header-length'?: number; output?: string; text?: string; image?: string; timeout?: number }>(async (a, c) => {
        const { model, version } = parseModelRef(a.model);
        const extra: Record<string, unknown> = { model, ...(version ? { version } : {}), ...(a.timeout ? { timeoutMs: a.timeout } : {}) };
        if (a['header-length'] !== undefined && !a.input) throw new UsageError('--header-length goes with --input');
        let request: { body: Uint8Array; headers: Record<string, string> };
        if (a.input) request = await inferBodyFromFile(a.input, a['header-length'], extra);
        else if (a.text !== undefined) request = jsonBody({ ...extra, raw: { text: a.text } });
        else if (a.image) request = jsonBody({ ...extra, raw: { imageBase64: (await readFile(resolve(a.image))).toString('base64') } });
        else throw new UsageError('give the input: --input FILE, --text TEXT or --image FILE');
        type Answer = { model?: string; model_name?: string; version?: number; model_version?: string; outputs: unknown; answer?: unknown; latencyMs?: number };
        const reply = await c.exchange<Answer>(`/api/devices/${encodeURIComponent(a.device)}/infer`, request.body, request.headers);
        if (a.output && reply.binary) await writeFile(resolve(a.output), encodeInferBody(reply.json, [reply.binary]).body);
        const r = await decodeBinaryOutputs(reply.json, reply.binary);
        const head = `${r.model ?? r.model_name}@${r.version ?? r.model_version} on ${a.device}${r.latencyMs !== undefined ? ` (${r.latencyMs.toFixed(2)} ms)` : ''}`;
        const saved = a.output && reply.binary ? [`  answer with binary outputs written to ${a.output}`] : [];
        return { json: r, text: [head, ...answerLines(r), ...saved].join('\n') };
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
    .command(
      'logs <device>',
      "the tail of a device agent's log; -f keeps following it",
      (y) =>
        y
          .positional('device', { type: 'string', demandOption: true })
          .option('lines', { type: 'number', default: 100, describe: 'how many lines from the end' })
          .option('follow', { alias: 'f', type: 'boolean', default: false, describe: 'keep printing new lines (asks the device every second) until Ctrl-C' })
          .option('raw', { type: 'boolean', default: false, describe: "the agent's JSON log lines as they are" }),
      ctx.run<{ device: string; lines: number; follow: boolean; raw: boolean }>(async (a, c) => {
        const path = (n: number): string => `/api/devices/${encodeURIComponent(a.device)}/logs?lines=${n}`;
        const r = await c.call<{ lines: string[] }>('GET', path(a.lines));
        const show = (line: string): string => (a.raw || a.json ? line : formatLogLine(line));
        if (!a.follow) return { json: r, text: r.lines.map(show).join('\n') };
        const print = (line: string): void => ctx.io.out(a.json ? JSON.stringify({ device: a.device, line }) : show(line));
        r.lines.forEach(print);
        await followLog({ fetch: async () => (await c.call<{ lines: string[] }>('GET', path(200))).lines, print, last: r.lines });
        return { json: undefined };
      }),
    )
    .command('keys', "the fleet's public signing key (give it to devices)", {}, ctx.run(async (_a, c) => {
      const k = await c.call<{ keyId: string; publicKeyPem: string }>('GET', '/api/keys');
      return { json: k, text: `key id ${k.keyId}\n${k.publicKeyPem.trimEnd()}` };
    }))
    .command('audit', 'the audit log: operator actions and what the controller saw (devices\' own reports: `reports`)', (y) => y.option('limit', { type: 'number', default: 50 }), ctx.run<{ limit: number }>(async (a, c) => {
      const list = await c.call<{ ts: string; actor: string; action: string; target?: string; result: string }[]>('GET', `/api/audit?limit=${a.limit}`);
      return { json: list, text: table(list, ['ts', 'actor', 'action', 'target', 'result']) };
    }))
    .command('reports [device]', 'what devices reported about themselves (their word, not the controller\'s)', (y) => y.positional('device', { type: 'string' }).option('limit', { type: 'number', default: 50 }), ctx.run<{ device?: string; limit: number }>(async (a, c) => {
      const r = await c.call<{ reports: { ts: string; text: string }[]; dropped: { events: number; telemetryModels: number } }>('GET', `/api/reports?limit=${a.limit}${a.device ? `&device=${encodeURIComponent(a.device)}` : ''}`);
      const dropped = r.dropped.events + r.dropped.telemetryModels > 0 ? `\ndropped: ${r.dropped.events} events over the rate, ${r.dropped.telemetryModels} telemetry entries of models not known to run there` : '';
      // a report's text is already bounded (240 characters, escaped): shown whole, never cut to the terminal, so nothing of what the device said is hidden
      return { json: r, text: `${table(r.reports, ['ts', 'text'], Number.MAX_SAFE_INTEGER)}${dropped}` };
    }));
}
