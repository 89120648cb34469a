/**
 * The `hostManager` command line (yargs). Without a sub-command it runs the
 * controller; every other command is a one-shot client of the running
 * controller's HTTP API. `runCli` never exits the process: it returns the exit
 * code, so the interactive console can run the same commands typed in.
 *
 * Exit codes: 0 ok, 1 the operation failed, 2 usage error (or a request the
 * controller refused as invalid), 3 controller unreachable, 4 wrong or missing
 * operator token, 5 not found.
 */
import { readFile } from 'node:fs/promises';
import { basename, extname, resolve } from 'node:path';
import yargs from 'yargs';
import type { Argv } from 'yargs';
import cliProgress from 'cli-progress';
import { ClientError, createClient, resolveConnection } from './client.js';
import type { Client } from './client.js';
import { defaultDataDir } from './manager.js';

export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3, unauthorized: 4, notFound: 5 } as const;

export interface CliIO {
  out(text: string): void;
  err(text: string): void;
  /** Whether progress bars may be drawn. */
  isTTY: boolean;
}

export const processIO: CliIO = {
  out: (t) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
  isTTY: Boolean(process.stdout.isTTY),
};

/** Runs the controller; provided by bin/hostManager.ts (keeps this module free of process-wide effects). */
export type ControllerRunner = (args: Record<string, unknown>, io: CliIO) => Promise<number>;

export function exitCodeOf(error: unknown): number {
  if (error instanceof ClientError) {
    if (error.status === 0) return EXIT.unreachable;
    if (error.status === 401) return EXIT.unauthorized;
    if (error.status === 404) return EXIT.notFound;
    if (error.status === 400 || error.status === 415) return EXIT.usage;
    return EXIT.failed;
  }
  return EXIT.failed;
}

function table(rows: Record<string, unknown>[], columns: string[]): string {
  const cells = rows.map((r) => columns.map((c) => (r[c] === undefined || r[c] === null ? '' : String(r[c]))));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (values: string[]): string => values.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...cells.map(line)].join('\n');
}

/** `m`, `m@3` → name and optional version. */
export function parseModelRef(text: string): { model: string; version?: number } {
  const m = /^([^@]+)(?:@(\d+))?$/.exec(text);
  if (!m) throw new UsageError(`"${text}" is not a model reference; use NAME or NAME@VERSION`);
  return m[2] ? { model: m[1]!, version: Number(m[2]) } : { model: m[1]! };
}

class UsageError extends Error {}

/** `user@host`, `user@host:2222`, `user@[fe80::1]:2222` → its parts (for `deploy --via ssh`). */
export function parseSshTarget(text: string): { username: string; host: string; port?: number } {
  const m = /^([^@\s]+)@(?:\[([0-9A-Fa-f:.]+)\]|([^:@\s[\]]+))(?::(\d{1,5}))?$/.exec(text);
  const port = m?.[4] === undefined ? undefined : Number(m[4]);
  if (!m || (port !== undefined && (port < 1 || port > 65535))) {
    throw new UsageError(`"${text}" is not an SSH target; with --via ssh, --to takes USER@HOST[:PORT] (IPv6: USER@[ADDR]:PORT)`);
  }
  return { username: m[1]!, host: (m[2] ?? m[3])!, ...(port !== undefined ? { port } : {}) };
}

/** Flags that only make sense for a rollout over MQTT. */
const ROLLOUT_ONLY_FLAGS = ['waves', 'canary', 'max-failures', 'soak', 'max-latency-ratio', 'max-error-rate', 'min-requests', 'offline-deadline'] as const;
const SSH_ONLY_FLAGS = ['ssh-key', 'remote-path', 'host-key'] as const;
/** An SSH copy of a large model over a slow link can take long; the controller answers when it is verified. */
const SSH_DELIVERY_TIMEOUT_MS = 3_600_000;

interface Common {
  url?: string;
  token?: string;
  'data-dir': string;
  json: boolean;
}

interface RolloutView {
  id: string;
  model: string;
  version: number;
  status: string;
  reason?: string;
  target: { kind: string; name?: string };
  waves: { index: number; label: string; devices: string[]; state: string; gate?: { pass: boolean; reasons: string[] } }[];
  devices: Record<string, { id: string; state: string; wave: number; error?: { code: string; message: string } }>;
  progress?: Record<string, { received: number; total: number }>;
}

const FINAL_DEVICE_STATES = new Set(['switched', 'failed', 'rolled-back', 'skipped']);

/** Deploy flags, shared by `deploy` and `watch`. */
function deployOptions<T>(y: Argv<T>) {
  return y
    .option('to', { type: 'string', demandOption: true, describe: 'a device id, group:NAME or all' })
    .option('waves', { type: 'string', describe: 'cumulative percentages after the canary, e.g. 10,50,100' })
    .option('canary', { type: 'number', describe: 'devices in the canary wave (default 1)' })
    .option('max-failures', { type: 'string', describe: 'install failures tolerated per wave, e.g. 10%' })
    .option('soak', { type: 'number', describe: 'seconds each wave is watched before the next (default 60)' })
    .option('max-latency-ratio', { type: 'number', describe: 'p95 after / p95 before above which a wave fails (default 1.5)' })
    .option('max-error-rate', { type: 'number', describe: 'error rate above which a wave fails (default 0.05)' })
    .option('min-requests', { type: 'number', describe: 'requests needed during a soak for the health gate to count (default 20)' })
    .option('offline-deadline', { type: 'number', describe: 'seconds offline devices are waited for (default 3600)' });
}

function policyFrom(a: Record<string, unknown>): Record<string, unknown> {
  const policy: Record<string, unknown> = {};
  if (typeof a['waves'] === 'string') {
    const waves = a['waves'].split(',').map((s) => Number(s.trim().replace(/%$/, '')));
    if (waves.some((w) => !Number.isFinite(w) || w <= 0 || w > 100)) throw new UsageError('--waves takes percentages between 1 and 100, e.g. 10,50,100');
    policy['waves'] = waves;
  }
  if (a['canary'] !== undefined) policy['canary'] = a['canary'];
  if (typeof a['max-failures'] === 'string') {
    const v = Number(a['max-failures'].replace(/%$/, ''));
    if (!Number.isFinite(v) || v < 0 || v > 100) throw new UsageError('--max-failures takes a percentage, e.g. 10%');
    policy['maxFailuresPercent'] = v;
  }
  if (a['soak'] !== undefined) policy['soakS'] = a['soak'];
  if (a['max-latency-ratio'] !== undefined) policy['maxLatencyRatio'] = a['max-latency-ratio'];
  if (a['max-error-rate'] !== undefined) policy['maxErrorRate'] = a['max-error-rate'];
  if (a['min-requests'] !== undefined) policy['minRequests'] = a['min-requests'];
  if (a['offline-deadline'] !== undefined) policy['offlineDeadlineS'] = a['offline-deadline'];
  return policy;
}

export async function runCli(argv: readonly string[], io: CliIO = processIO, opts: { env?: NodeJS.ProcessEnv; controller?: ControllerRunner; inConsole?: boolean } = {}): Promise<number> {
  const env = opts.env ?? process.env;
  let code: number = EXIT.ok;
  let client: Client | undefined;

  async function api(a: Common): Promise<Client> {
    if (client) return client;
    const conn = await resolveConnection({ url: a.url, token: a.token, dataDir: a['data-dir'], env });
    client = createClient(conn.url, conn.token);
    return client;
  }

  /** `deploy --via ssh`: the controller copies the registry blob to the device and checks its sha256 there. */
  const deployViaSsh = async (a: Record<string, unknown> & Common, ref: string): Promise<{ json: unknown; text?: string; code?: number }> => {
    for (const flag of [...ROLLOUT_ONLY_FLAGS, 'wait']) {
      if (a[flag] !== undefined && a[flag] !== false) throw new UsageError(`--${flag} is for rollouts over MQTT; --via ssh copies to one device and always waits`);
    }
    const { model, version } = parseModelRef(ref);
    const target = parseSshTarget(String(a['to']));
    const key = a['ssh-key'];
    if (typeof key !== 'string' || key === '') throw new UsageError('--via ssh needs --ssh-key FILE: a private key the device accepts (read by the controller, on its host)');
    const body: Record<string, unknown> = { model, ...(version ? { version } : {}), ...target, keyPath: resolve(key) };
    if (typeof a['remote-path'] === 'string') body['remotePath'] = a['remote-path'];
    if (typeof a['host-key'] === 'string') body['hostKeyFingerprint'] = a['host-key'];
    const conn = await resolveConnection({ url: a.url, token: a.token, dataDir: a['data-dir'], env });
    const r = await createClient(conn.url, conn.token, SSH_DELIVERY_TIMEOUT_MS).call<{ model: string; version: number; remotePath: string; sha256: string; bytes: number; seconds: number; hostKeyPinned: boolean }>('POST', '/api/deliveries/ssh', body);
    const where = `${target.username}@${target.host.includes(':') ? `[${target.host}]` : target.host}${target.port ? `:${target.port}` : ''}`;
    return {
      json: r,
      text: `${r.model}@${r.version} → ${where}:${r.remotePath}\n  sha256 ${r.sha256} verified on the device, ${r.bytes} bytes in ${r.seconds.toFixed(2)} s${r.hostKeyPinned ? '' : ' (host key not pinned: pass --host-key SHA256:… to check it)'}`,
    };
  };

  /** Wraps a command: prints results (JSON or text), maps errors to exit codes. */
  const run =
    <A>(fn: (a: A & Common, c: Client) => Promise<{ json: unknown; text?: string; code?: number }>) =>
    async (raw: Record<string, unknown>): Promise<void> => {
      const a = raw as unknown as A & Common;
      try {
        const result = await fn(a, await api(a));
        if (a.json) io.out(JSON.stringify(result.json, null, 2));
        else if (result.text !== undefined) io.out(result.text);
        code = result.code ?? EXIT.ok;
      } catch (error) {
        if (error instanceof UsageError) {
          code = EXIT.usage;
          if (a.json) io.out(JSON.stringify({ error: { code: 'usage', message: error.message } }));
          else io.err(`hostManager: ${error.message}`);
          return;
        }
        code = exitCodeOf(error);
        const body = error instanceof ClientError ? { code: error.code, message: error.message } : { code: 'internal', message: (error as Error).message };
        if (a.json) io.out(JSON.stringify({ error: body }, null, 2));
        else io.err(`hostManager: ${body.message}`);
      }
    };

  const waitFor = async (c: Client, id: string, json: boolean): Promise<RolloutView> => {
    const bars = !json && io.isTTY ? new cliProgress.MultiBar({ format: ' {label} |{bar}| {value}/{total} devices  {state}', hideCursor: true, clearOnComplete: false }, cliProgress.Presets.shades_classic) : null;
    const waveBars = new Map<number, cliProgress.SingleBar>();
    let lastStatus = '';
    try {
      for (;;) {
        const r = await c.call<RolloutView>('GET', `/api/rollouts/${encodeURIComponent(id)}`);
        for (const w of r.waves) {
          const done = w.devices.filter((d) => FINAL_DEVICE_STATES.has(r.devices[d]?.state ?? '')).length;
          if (bars) {
            let bar = waveBars.get(w.index);
            if (!bar) waveBars.set(w.index, (bar = bars.create(w.devices.length, 0, { label: `wave ${w.index} ${w.label}`.padEnd(16), state: w.state })));
            bar.update(done, { state: w.state });
          }
        }
        if (!bars && !json && r.status !== lastStatus) io.err(`rollout ${id}: ${r.status}`);
        lastStatus = r.status;
        if (r.status !== 'running') return r;
        await new Promise((res) => setTimeout(res, 300));
      }
    } finally {
      bars?.stop();
    }
  };

  const rolloutText = (r: RolloutView): string => {
    const lines = [`rollout ${r.id}: ${r.model}@${r.version} → ${r.target.kind === 'all' ? 'all' : r.target.kind === 'group' ? `group:${r.target.name}` : r.target.name}  [${r.status}]`];
    if (r.reason) lines.push(`  ${r.reason}`);
    for (const w of r.waves) {
      lines.push(`  wave ${w.index} (${w.label}): ${w.state}, ${w.devices.length} device(s)` + (w.gate ? ` — gate ${w.gate.pass ? 'passed' : 'FAILED'}: ${w.gate.reasons.join('; ')}` : ''));
      for (const d of w.devices) {
        const dev = r.devices[d];
        if (dev) lines.push(`    ${d}: ${dev.state}${dev.error ? ` (${dev.error.code}: ${dev.error.message})` : ''}`);
      }
    }
    return lines.join('\n');
  };

  const deploy = async (c: Client, ref: string, a: Record<string, unknown>, wait: boolean, json: boolean): Promise<{ json: unknown; text?: string; code?: number }> => {
    const { model, version } = parseModelRef(ref);
    const created = await c.call<RolloutView>('POST', '/api/rollouts', { model, ...(version ? { version } : {}), to: a['to'], policy: policyFrom(a) });
    if (!wait) return { json: created, text: `rollout ${created.id} started: ${created.model}@${created.version}, ${created.waves.length} wave(s); follow it with \`hostManager rollouts show ${created.id}\`` };
    const done = await waitFor(c, created.id, json);
    return { json: done, text: rolloutText(done), code: done.status === 'succeeded' ? EXIT.ok : EXIT.failed };
  };

  let parser = yargs([...argv])
    .scriptName('hostManager')
    .exitProcess(false)
    .strict()
    .version(false)
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .option('url', { type: 'string', describe: 'controller API URL (env EDGEFLEET_URL; default from <data-dir>/controller.json)' })
    .option('token', { type: 'string', describe: 'operator token (env EDGEFLEET_TOKEN; default <data-dir>/operator.token)' })
    .option('data-dir', { type: 'string', default: defaultDataDir(env), describe: 'data directory (env EDGEFLEET_DATA)', defaultDescription: '~/.edgefleet' })
    .option('json', { type: 'boolean', default: false, describe: 'machine-readable output' })
    .command(
      '$0 [broker]',
      'run the controller (embedded broker unless a broker is given)',
      (y) =>
        y
          .positional('broker', { type: 'string', describe: 'external broker: IP, host:port or URL (mqtt://, mqtts://, ws://)' })
          .option('mqtt-host', { type: 'string', default: '0.0.0.0', describe: 'embedded broker: address to listen on' })
          .option('mqtt-port', { type: 'number', default: 1883, describe: 'embedded broker: MQTT TCP port (0 = any free port)' })
          .option('mqtt-ws-port', { type: 'number', default: 8083, describe: 'embedded broker: MQTT over WebSocket port (-1 = off)' })
          .option('http-host', { type: 'string', default: '127.0.0.1', describe: 'API and dashboard address' })
          .option('http-port', { type: 'number', default: 7420, describe: 'API and dashboard port (0 = any free port)' })
          .option('operator', { type: 'string', default: 'admin', describe: 'operator id (MQTT user name of the controller)' })
          .option('broker-username', { type: 'string', describe: 'external broker user name (default: the operator id)' })
          .option('broker-password', { type: 'string', describe: 'external broker password (env EDGEFLEET_BROKER_PASSWORD; default: the operator token)' })
          .option('legacy-topic', { type: 'string', default: 'hello', describe: "the original plain-text command topic ('' = off)" })
          .option('advertise', { type: 'string', describe: 'broker URL devices are told to use (default: this host\'s address)' })
          .option('log-level', { type: 'string', default: 'info', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] })
          .option('console', { type: 'boolean', describe: 'interactive console (default: when stdin is a terminal)' })
          .option('enrolment', { type: 'boolean', default: false, describe: 'let new devices exchange the fleet provisioning key for their own credential (POST /enrol)' })
          .option('enrolment-group', { type: 'string', array: true, default: [], describe: 'group(s) enrolled devices join' })
          .option('request-timeout', { type: 'number', default: 10_000, describe: 'ms to wait for a device to answer a command' }),
      async (a) => {
        if (opts.inConsole) {
          io.err(`unknown command "${String((a as { broker?: unknown }).broker ?? '')}"; type \`help\` for the commands`);
          code = EXIT.usage;
          return;
        }
        if (!opts.controller) throw new UsageError('no controller runner in this context');
        code = await opts.controller(a as Record<string, unknown>, io);
      },
    )
    .command('devices', 'list, show, add (provision) and remove devices', (y) =>
      y
        .command('list', 'list devices', {}, run(async (_a, c) => {
          const list = await c.call<Record<string, unknown>[]>('GET', '/api/devices');
          const rows = list.map((d) => {
            const info = d['info'] as { models?: { name: string; version: number }[]; arch?: string } | null;
            return { id: d['id'], online: d['online'] ? 'online' : 'offline', groups: (d['groups'] as string[]).join(','), models: (info?.models ?? []).map((m) => `${m.name}@${m.version}`).join(','), arch: info?.arch, lastSeen: d['lastSeen'] };
          });
          return { json: list, text: list.length ? table(rows, ['id', 'online', 'groups', 'models', 'arch', 'lastSeen']) : 'no devices yet; add one with `hostManager devices add <id>`' };
        }))
        .command('show <id>', 'show one device', (yy) => yy.positional('id', { type: 'string', demandOption: true }), run<{ id: string }>(async (a, c) => {
          const d = await c.call('GET', `/api/devices/${encodeURIComponent(a.id)}`);
          return { json: d, text: JSON.stringify(d, null, 2) };
        }))
        .command(
          'add <id>',
          'provision a device: creates its token and prints its config and start command (once)',
          (yy) => yy.positional('id', { type: 'string', demandOption: true }).option('group', { type: 'string', array: true, default: [], describe: 'group(s) it belongs to' }),
          run<{ id: string; group: string[] }>(async (a, c) => {
            const groups = a.group.flatMap((g) => g.split(',')).filter(Boolean);
            const r = await c.call<{ token: string; config: unknown; command: string; commandInline: string }>('POST', '/api/devices', { id: a.id, groups });
            return {
              json: r,
              text: [
                `device ${a.id} provisioned${groups.length ? ` in ${groups.join(', ')}` : ''}. Its token is shown ONCE; keep it secret.`,
                '',
                `1. Save this as /etc/edgefleet/${a.id}.json on the device (mode 0600):`,
                JSON.stringify(r.config, null, 2),
                '',
                '2. Start the agent:',
                `   ${r.command}`,
                '',
                '   or, without a config file:',
                `   ${r.commandInline}`,
              ].join('\n'),
            };
          }),
        )
        .command('remove <id>', 'remove a device and its credential', (yy) => yy.positional('id', { type: 'string', demandOption: true }), run<{ id: string }>(async (a, c) => {
          const r = await c.call('DELETE', `/api/devices/${encodeURIComponent(a.id)}`);
          return { json: r, text: `device ${a.id} removed; its token no longer works` };
        }))
        .demandCommand(1, 'say which: devices list|show|add|remove'),
    )
    .command('groups', 'list groups and their devices', {}, run(async (_a, c) => {
      const groups = await c.call<{ name: string; devices: string[]; online: number }[]>('GET', '/api/groups');
      return { json: groups, text: groups.length ? table(groups.map((g) => ({ group: g.name, devices: g.devices.join(','), online: `${g.online}/${g.devices.length}` })), ['group', 'online', 'devices']) : 'no groups yet; give devices one with `devices add <id> --group <name>`' };
    }))
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
          run<{ file: string; name?: string; lineage?: string; processing?: string }>(async (a, c) => {
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
        .command('list [name]', 'list models and versions', (yy) => yy.positional('name', { type: 'string' }), run<{ name?: string }>(async (a, c) => {
          const list = await c.call<{ name: string; version: number; length: number; sha256: string; addedAt: string; opset: number | null }[]>('GET', `/api/models${a.name ? `?name=${encodeURIComponent(a.name)}` : ''}`);
          return { json: list, text: list.length ? table(list.map((m) => ({ model: m.name, version: m.version, bytes: m.length, sha256: m.sha256.slice(0, 12), opset: m.opset, added: m.addedAt })), ['model', 'version', 'bytes', 'sha256', 'opset', 'added']) : 'no models yet; add one with `hostManager models add <file.onnx>`' };
        }))
        .command('show <ref>', 'show a model version (NAME or NAME@VERSION)', (yy) => yy.positional('ref', { type: 'string', demandOption: true }), run<{ ref: string }>(async (a, c) => {
          const { model, version } = parseModelRef(a.ref);
          const m = await c.call('GET', `/api/models/${encodeURIComponent(model)}${version ? `/${version}` : ''}`);
          return { json: m, text: JSON.stringify(m, null, 2) };
        }))
        .command('remove <ref>', 'remove a model version (NAME@VERSION)', (yy) => yy.positional('ref', { type: 'string', demandOption: true }), run<{ ref: string }>(async (a, c) => {
          const { model, version } = parseModelRef(a.ref);
          if (!version) throw new UsageError('say which version: models remove NAME@VERSION');
          const r = await c.call('DELETE', `/api/models/${encodeURIComponent(model)}/${version}`);
          return { json: r, text: `${model}@${version} removed` };
        }))
        .demandCommand(1, 'say which: models add|list|show|remove'),
    )
    .command(
      'deploy <model>',
      'roll a model version out: canary first, then waves, each gated on install results and inference health; with --via ssh, copy it to one device that runs no agent (--to USER@HOST[:PORT])',
      (y) =>
        deployOptions(y.positional('model', { type: 'string', demandOption: true, describe: 'NAME or NAME@VERSION (default: newest)' }))
          .option('wait', { type: 'boolean', describe: 'follow it to the end (exit 1 unless it succeeds)' })
          .option('via', { choices: ['mqtt', 'ssh'] as const, default: 'mqtt' as const, describe: 'mqtt: a rollout to agents; ssh: copy to one device without an agent (--to USER@HOST[:PORT])' })
          .option('ssh-key', { type: 'string', describe: 'with --via ssh: private key file the device accepts; read by the controller on its host' })
          .option('remote-path', { type: 'string', describe: 'with --via ssh: where the model goes on the device (default ~/models/NAME/VERSION/model.onnx; quote a ~)' })
          .option('host-key', { type: 'string', describe: 'with --via ssh: pin the device host key, SHA256:… as `ssh-keygen -lf` prints it' }),
      run<{ model: string; wait?: boolean; via: 'mqtt' | 'ssh' }>(async (a, c) => {
        const flags = a as unknown as Record<string, unknown> & Common;
        if (a.via === 'ssh') return deployViaSsh(flags, a.model);
        for (const flag of SSH_ONLY_FLAGS) if (flags[flag] !== undefined) throw new UsageError(`--${flag} needs --via ssh`);
        return deploy(c, a.model, flags, a.wait ?? false, a.json);
      }),
    )
    .command('rollback [rollout]', 'switch the devices a rollout switched back to their previous version (default: the newest such rollout)', (y) => y.positional('rollout', { type: 'string' }), run<{ rollout?: string }>(async (a, c) => {
      const r = await c.call<RolloutView>('POST', '/api/rollback', a.rollout ? { rollout: a.rollout } : {});
      const failed = Object.values(r.devices).filter((d) => d.state === 'switched' || (d.error && d.error.message.startsWith('rollback failed'))).length;
      return { json: r, text: rolloutText(r), code: failed ? EXIT.failed : EXIT.ok };
    }))
    .command('rollouts', 'list, show, abort and resume rollouts', (y) =>
      y
        .command('list', 'list rollouts, newest first', {}, run(async (_a, c) => {
          const list = await c.call<{ id: string; model: string; version: number; target: string; status: string; devices: { switched: number; total: number }; reason: string | null }[]>('GET', '/api/rollouts');
          return { json: list, text: list.length ? table(list.map((r) => ({ id: r.id, model: `${r.model}@${r.version}`, target: r.target, status: r.status, switched: `${r.devices.switched}/${r.devices.total}`, reason: r.reason })), ['id', 'model', 'target', 'status', 'switched', 'reason']) : 'no rollouts yet' };
        }))
        .command('show <id>', 'show a rollout, its waves, gates and devices', (yy) => yy.positional('id', { type: 'string', demandOption: true }).option('wait', { type: 'boolean', default: false }), run<{ id: string; wait: boolean }>(async (a, c) => {
          const r = a.wait ? await waitFor(c, a.id, a.json) : await c.call<RolloutView>('GET', `/api/rollouts/${encodeURIComponent(a.id)}`);
          return { json: r, text: rolloutText(r) };
        }))
        .command('abort <id>', 'stop a running rollout where it is', (yy) => yy.positional('id', { type: 'string', demandOption: true }), run<{ id: string }>(async (a, c) => {
          const r = await c.call<RolloutView>('POST', `/api/rollouts/${encodeURIComponent(a.id)}/abort`);
          return { json: r, text: `rollout ${a.id} aborted; \`hostManager rollouts resume ${a.id}\` continues it, \`hostManager rollback ${a.id}\` undoes it` };
        }))
        .command('resume <id>', 'continue an aborted rollout', (yy) => yy.positional('id', { type: 'string', demandOption: true }).option('wait', { type: 'boolean', default: false }), run<{ id: string; wait: boolean }>(async (a, c) => {
          const r = await c.call<RolloutView>('POST', `/api/rollouts/${encodeURIComponent(a.id)}/resume`);
          if (!a.wait) return { json: r, text: `rollout ${a.id} resumed` };
          const done = await waitFor(c, a.id, a.json);
          return { json: done, text: rolloutText(done), code: done.status === 'succeeded' ? EXIT.ok : EXIT.failed };
        }))
        .demandCommand(1, 'say which: rollouts list|show|abort|resume'),
    )
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
      run<{ device: string; model: string; input?: string; text?: string; image?: string; timeout?: number }>(async (a, c) => {
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
      run<{ target: string; command: string; via: 'command' | 'topic' }>(async (a, c) => {
        const r = await c.call<{ via: string; results: { device: string; ok: boolean; message?: string; error?: { code: string; message: string } }[] }>('POST', '/api/exec', { to: a.target, command: a.command, via: a.via });
        const lines = r.via === 'topic' ? [`published "${a.command}" on the legacy topic`] : r.results.map((x) => `${x.device}: ${x.ok ? x.message : `error ${x.error?.code}: ${x.error?.message}`}`);
        return { json: r, text: lines.join('\n') || 'no devices answered', code: r.results.every((x) => x.ok) ? EXIT.ok : EXIT.failed };
      }),
    )
    .command('logs <device>', "the tail of a device agent's log", (y) => y.positional('device', { type: 'string', demandOption: true }).option('lines', { type: 'number', default: 100 }), run<{ device: string; lines: number }>(async (a, c) => {
      const r = await c.call<{ lines: string[] }>('GET', `/api/devices/${encodeURIComponent(a.device)}/logs?lines=${a.lines}`);
      return { json: r, text: r.lines.join('\n') };
    }))
    .command(
      'watch <path>',
      'watch a directory: a new or changed NAME.onnx there is added as the next version of NAME and rolled out with the deploy flags',
      (y) => deployOptions(y.positional('path', { type: 'string', demandOption: true })),
      async (a) => {
        const { watchModels } = await import('./watch.js');
        const c = await api(a as unknown as Common);
        code = await watchModels({ dir: resolve(String(a['path'])), io, json: Boolean(a['json']), deploy: (ref: string) => deploy(c, ref, a as Record<string, unknown>, true, true), client: c });
      },
    )
    .command('keys', "the fleet's public signing key (give it to devices)", {}, run(async (_a, c) => {
      const k = await c.call<{ keyId: string; publicKeyPem: string }>('GET', '/api/keys');
      return { json: k, text: `key id ${k.keyId}\n${k.publicKeyPem.trimEnd()}` };
    }))
    .command('audit', 'the audit log: operator actions and device results', (y) => y.option('limit', { type: 'number', default: 50 }), run<{ limit: number }>(async (a, c) => {
      const list = await c.call<{ ts: string; actor: string; action: string; target?: string; result: string }[]>('GET', `/api/audit?limit=${a.limit}`);
      return { json: list, text: table(list, ['ts', 'actor', 'action', 'target', 'result']) };
    }))
    .fail((msg, err) => {
      // yargs: a usage problem (msg) or an error thrown by a handler (err)
      if (err && !(err instanceof UsageError)) throw err;
      code = EXIT.usage;
      io.err(`hostManager: ${msg ?? err?.message}\nRun \`hostManager --help\` for usage.`);
    })
    .help();
  if (opts.inConsole) parser = parser.help(false);
  try {
    let helpText: string | undefined;
    await parser.parseAsync([...argv], {}, (_err, _argv, output) => {
      helpText = output;
    });
    if (helpText) io.out(helpText);
  } catch (error) {
    io.err(`hostManager: ${(error as Error).message}`);
    return code === EXIT.ok ? EXIT.failed : code;
  }
  return code;
}
