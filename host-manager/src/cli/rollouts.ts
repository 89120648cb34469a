/**
 * `hostManager deploy|rollback|rollouts|watch`: rollouts from the command line, followed
 * with progress bars on a terminal; `deploy --via ssh` copies to one device without an agent.
 */
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import type { FleetError } from '@edgefleet/protocol';
import { parseWindow } from '../rollouts/window.js';
import { createClient, resolveConnection } from './client.js';
import type { Client } from './client.js';
import { EXIT, UsageError, parseModelRef, parseSshTarget, table } from './io.js';
import type { CliContext, CliIO, CommandOutput, Common } from './io.js';
import { rolloutProgress, rolloutText } from './rollout-text.js';
import type { RolloutView } from './rollout-text.js';
import { watchRollouts } from './feed-watch.js';
import { ROLLOUT_COLUMNS, rolloutRow } from './rows.js';
import type { RolloutSummaryView } from './rows.js';

/** Flags that only make sense for a rollout over MQTT. */
export const ROLLOUT_ONLY_FLAGS = ['waves', 'canary', 'max-failures', 'soak', 'max-latency-ratio', 'max-error-rate', 'min-requests', 'offline-deadline', 'window'] as const;
const SSH_ONLY_FLAGS = ['ssh-key', 'remote-path', 'host-key'] as const;
/** An SSH copy of a large model over a slow link can take long; the controller answers when it is verified. */
export const SSH_DELIVERY_TIMEOUT_MS = 3_600_000;

/** Deploy flags, shared by `deploy`, `watch` and `image push`. */
export function deployOptions<T>(y: Argv<T>) {
  return y
    .option('to', { type: 'string', demandOption: true, describe: "a device id, group:NAME, all, or a selector over labels and facts: 'arch=arm64,site=plant-1' (devices matching later join as each wave starts)" })
    .option('waves', { type: 'string', describe: 'cumulative percentages after the canary, e.g. 10,50,100' })
    .option('canary', { type: 'number', describe: 'devices in the canary wave (default 1)' })
    .option('max-failures', { type: 'string', describe: 'install failures tolerated per wave, e.g. 10%' })
    .option('soak', { type: 'number', describe: 'seconds each wave is watched before the next (default 60)' })
    .option('max-latency-ratio', { type: 'number', describe: 'p95 after / p95 before above which a wave fails (default 1.5)' })
    .option('max-error-rate', { type: 'number', describe: 'error rate above which a wave fails (default 0.05)' })
    .option('min-requests', { type: 'number', describe: 'requests needed during a soak for the health gate to count (default 20)' })
    .option('offline-deadline', { type: 'number', describe: 'seconds offline devices are waited for (default 3600)' })
    .option('window', { type: 'string', describe: 'maintenance window HH:MM-HH:MM (daily, 24 h): devices switch only inside it' })
    .option('window-tz', { type: 'string', describe: "the window's IANA time zone (default: this machine's)", defaultDescription: localTimeZone() });
}

function localTimeZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

export function policyFrom(a: Record<string, unknown>): Record<string, unknown> {
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
  if (typeof a['window'] === 'string') {
    try {
      policy['window'] = parseWindow(a['window'], typeof a['window-tz'] === 'string' ? a['window-tz'] : localTimeZone());
    } catch (error) {
      throw new UsageError(`--window: ${(error as FleetError).message}`);
    }
  } else if (a['window-tz'] !== undefined) throw new UsageError('--window-tz needs --window HH:MM-HH:MM');
  return policy;
}

async function deployViaSsh(ctx: CliContext, a: Record<string, unknown> & Common, ref: string): Promise<CommandOutput> {
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
  const conn = await resolveConnection({ url: a.url, token: a.token, dataDir: a['data-dir'], env: ctx.env });
  const r = await createClient(conn.url, conn.token, SSH_DELIVERY_TIMEOUT_MS).call<{ model: string; version: number; remotePath: string; sha256: string; bytes: number; seconds: number; hostKeyPinned: boolean }>('POST', '/api/deliveries/ssh', body);
  const where = `${target.username}@${target.host.includes(':') ? `[${target.host}]` : target.host}${target.port ? `:${target.port}` : ''}`;
  return {
    json: r,
    text: `${r.model}@${r.version} → ${where}:${r.remotePath}\n  sha256 ${r.sha256} verified on the device, ${r.bytes} bytes in ${r.seconds.toFixed(2)} s${r.hostKeyPinned ? '' : ' (host key not pinned: pass --host-key SHA256:… to check it)'}`,
  };
}

export async function waitFor(io: CliIO, c: Client, id: string, json: boolean): Promise<RolloutView> {
  const progress = rolloutProgress(io, json);
  try {
    for (;;) {
      const r = await c.call<RolloutView>('GET', `/api/rollouts/${encodeURIComponent(id)}`);
      progress.update(r, new Date());
      if (r.status !== 'running') return r;
      await new Promise((res) => setTimeout(res, 300));
    }
  } finally {
    progress.stop();
  }
}

/** Starts a rollout of a model (or, with `kind: 'image'`, an image) version and follows it with --wait. */
export async function deploy(io: CliIO, c: Client, ref: string, a: Record<string, unknown>, wait: boolean, json: boolean, kind: 'model' | 'image' = 'model'): Promise<CommandOutput> {
  const { model, version } = parseModelRef(ref);
  const created = await c.call<RolloutView>('POST', '/api/rollouts', { ...(kind === 'image' ? { kind } : {}), model, ...(version ? { version } : {}), to: a['to'], policy: policyFrom(a) });
  if (!wait) return { json: created, text: `rollout ${created.id} started: ${created.model}@${created.version}, ${created.waves.length} wave(s); follow it with \`hostManager rollouts show ${created.id} --wait\` or \`hostManager rollouts watch\`` };
  const done = await waitFor(io, c, created.id, json);
  return { json: done, text: rolloutText(done), code: done.status === 'succeeded' ? EXIT.ok : EXIT.failed };
}

export function rolloutCommands<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y
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
      ctx.run<{ model: string; wait?: boolean; via: 'mqtt' | 'ssh' }>(async (a, c) => {
        const flags = a as unknown as Record<string, unknown> & Common;
        if (a.via === 'ssh') return deployViaSsh(ctx, flags, a.model);
        for (const flag of SSH_ONLY_FLAGS) if (flags[flag] !== undefined) throw new UsageError(`--${flag} needs --via ssh`);
        return deploy(ctx.io, c, a.model, flags, a.wait ?? false, a.json);
      }),
    )
    .command('rollback [rollout]', 'switch the devices a rollout switched back to their previous version (default: the newest such rollout)', (y) => y.positional('rollout', { type: 'string' }), ctx.run<{ rollout?: string }>(async (a, c) => {
      const r = await c.call<RolloutView>('POST', '/api/rollback', a.rollout ? { rollout: a.rollout } : {});
      const failed = Object.values(r.devices).filter((d) => d.state === 'switched' || (d.error && d.error.message.startsWith('rollback failed'))).length;
      return { json: r, text: rolloutText(r), code: failed ? EXIT.failed : EXIT.ok };
    }))
    .command('rollouts', 'list, show, abort and resume rollouts', (y) =>
      y
        .command('list', 'list rollouts, newest first', {}, ctx.run(async (_a, c) => {
          const list = await c.call<RolloutSummaryView[]>('GET', '/api/rollouts');
          const now = Date.now();
          return { json: list, text: list.length ? table(list.map((r) => rolloutRow(r, now)), ROLLOUT_COLUMNS) : 'no rollouts yet' };
        }))
        .command(
          'watch [id]',
          'follow rollouts live (like kubectl get -w): a row whenever one changes; with an id, until it ends (exit 0 if it succeeded)',
          (yy) => yy.positional('id', { type: 'string' }),
          ctx.run<{ id?: string }>(async (a, c) => ({ json: undefined, code: await watchRollouts({ io: ctx.io, client: c, json: a.json, ...(a.id ? { id: a.id } : {}) }) })),
        )
        .command('show <id>', 'show a rollout, its waves, gates and devices', (yy) => yy.positional('id', { type: 'string', demandOption: true }).option('wait', { type: 'boolean', default: false }), ctx.run<{ id: string; wait: boolean }>(async (a, c) => {
          const r = a.wait ? await waitFor(ctx.io, c, a.id, a.json) : await c.call<RolloutView>('GET', `/api/rollouts/${encodeURIComponent(a.id)}`);
          return { json: r, text: rolloutText(r) };
        }))
        .command('abort <id>', 'stop a running rollout where it is', (yy) => yy.positional('id', { type: 'string', demandOption: true }), ctx.run<{ id: string }>(async (a, c) => {
          const r = await c.call<RolloutView>('POST', `/api/rollouts/${encodeURIComponent(a.id)}/abort`);
          return { json: r, text: `rollout ${a.id} aborted; \`hostManager rollouts resume ${a.id}\` continues it, \`hostManager rollback ${a.id}\` undoes it` };
        }))
        .command('resume <id>', 'continue an aborted rollout', (yy) => yy.positional('id', { type: 'string', demandOption: true }).option('wait', { type: 'boolean', default: false }), ctx.run<{ id: string; wait: boolean }>(async (a, c) => {
          const r = await c.call<RolloutView>('POST', `/api/rollouts/${encodeURIComponent(a.id)}/resume`);
          if (!a.wait) return { json: r, text: `rollout ${a.id} resumed` };
          const done = await waitFor(ctx.io, c, a.id, a.json);
          return { json: done, text: rolloutText(done), code: done.status === 'succeeded' ? EXIT.ok : EXIT.failed };
        }))
        .demandCommand(1, 'say which: rollouts list|show|watch|abort|resume'),
    )
    .command(
      'watch <path>',
      'watch a directory: a new or changed NAME.onnx there is added as the next version of NAME and rolled out with the deploy flags',
      (y) => deployOptions(y.positional('path', { type: 'string', demandOption: true })),
      async (a) => {
        const { watchModels } = await import('./watch.js'); // chokidar loads only for this command
        const c = await ctx.api(a as unknown as Common);
        const deployOne = (ref: string): Promise<CommandOutput> => deploy(ctx.io, c, ref, a as Record<string, unknown>, true, true);
        ctx.setCode(await watchModels({ dir: resolve(String(a['path'])), io: ctx.io, json: Boolean(a['json']), deploy: deployOne, client: c }));
      },
    );
}
