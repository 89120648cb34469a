/**
 * `devices watch` and `rollouts watch`: the controller's live feed (WebSocket /ws, the
 * operator token in the Authorization header) printed as rows, like `kubectl get -w`:
 * the current rows first, then one row whenever a device or rollout changes.
 */
import WebSocket from 'ws';
import { ClientError } from './client.js';
import type { Client } from './client.js';
import { EXIT, columnWidths, formatRow, rowCells, terminalWidth } from './io.js';
import type { CliIO, TableFit } from './io.js';
import { DEVICE_COLUMNS, ROLLOUT_COLUMNS, deviceRow, rolloutRow } from './rows.js';
import type { DeviceView, RolloutSummaryView } from './rows.js';

type FeedMessage =
  | { type: 'snapshot'; devices: DeviceView[]; rollouts: RolloutSummaryView[] }
  | { type: 'device'; device: string; record: DeviceView }
  | { type: 'telemetry'; device: string; sample: DeviceView['telemetry'] }
  | { type: 'rollout'; id: string; summary: RolloutSummaryView }
  | { type: string };

export interface WatchOptions {
  io: CliIO;
  client: Client;
  json: boolean;
  /** Resolves to stop (default: SIGINT or SIGTERM). */
  until?: Promise<void>;
}

/** Follows the feed until `until`, or the message handler says it is done; resolves with the exit code. */
function follow(opts: WatchOptions, onMessage: (m: FeedMessage) => number | undefined): Promise<number> {
  const ws = new WebSocket(`${opts.client.url.replace(/^http/, 'ws')}/ws`, { headers: opts.client.token ? { authorization: `Bearer ${opts.client.token}` } : {} });
  return new Promise<number>((resolve, reject) => {
    let finished = false;
    const finish = (code: number): void => {
      if (finished) return;
      finished = true;
      ws.close();
      resolve(code);
    };
    const stop = opts.until ?? new Promise<void>((r) => {
      process.once('SIGINT', () => r());
      process.once('SIGTERM', () => r());
    });
    void stop.then(() => finish(EXIT.ok));
    ws.on('message', (data) => {
      let message: FeedMessage;
      try {
        message = JSON.parse(String(data)) as FeedMessage;
      } catch {
        return; // the controller only sends JSON; anything else is not ours to print
      }
      const code = onMessage(message);
      if (code !== undefined) finish(code);
    });
    ws.on('close', (code) => {
      if (finished) return;
      finished = true;
      if (code === 4401) reject(new ClientError(401, 'unauthorized', 'the controller refused the operator token'));
      else reject(new ClientError(0, 'unreachable', `the controller at ${opts.client.url} closed the live feed (${code}); is it still running?`));
    });
    ws.on('error', (error) => {
      if (finished) return;
      finished = true;
      reject(new ClientError(0, 'unreachable', `cannot open the live feed at ${opts.client.url}/ws (${error.message}); is \`hostManager\` running?`));
    });
  });
}

/** A table whose widths are fixed by its first rows, so later rows line up under them. */
function streamTable(io: CliIO, columns: string[], fit: TableFit): { start(rows: Record<string, string>[]): void; row(row: Record<string, string>): void } {
  let widths: number[] = columns.map((c) => Math.max(c.length, 8));
  /** The last line printed per object (its first column): an unchanged row is not printed again. */
  const last = new Map<string, string>();
  const print = (cells: string[]): void => {
    const line = formatRow(cells, widths);
    if (last.get(cells[0]!) === line) return;
    last.set(cells[0]!, line);
    io.out(line);
  };
  return {
    start(rows) {
      const cells = rows.map((r) => rowCells(r, columns));
      widths = columnWidths(cells, columns, terminalWidth(), fit);
      io.out(formatRow(columns.map((c) => c.toUpperCase()), widths));
      for (const c of cells) print(c);
    },
    row(row) {
      print(rowCells(row, columns));
    },
  };
}

export function watchDevices(opts: WatchOptions & { telemetry: boolean; id?: string }): Promise<number> {
  const devices = new Map<string, DeviceView>();
  // later rows may be wider than the first ones: room for the longer values a column takes
  const out = streamTable(opts.io, DEVICE_COLUMNS, { shrinkFirst: ['labels', 'models', 'groups'], minimums: { status: 7, cpu: 4, mem: 4, lastSeen: 10 } });
  const wanted = (id: string): boolean => opts.id === undefined || opts.id === id;
  return follow(opts, (m) => {
    if (m.type === 'snapshot') {
      const s = m as Extract<FeedMessage, { type: 'snapshot' }>;
      for (const d of s.devices) devices.set(d.id, d);
      const list = s.devices.filter((d) => wanted(d.id));
      if (opts.json) for (const d of list) opts.io.out(JSON.stringify({ type: 'device', device: d }));
      else out.start(list.map((d) => deviceRow(d)));
      return undefined;
    }
    let changed: DeviceView | undefined;
    if (m.type === 'device') {
      const e = m as Extract<FeedMessage, { type: 'device' }>;
      changed = { ...devices.get(e.device), ...e.record };
      devices.set(e.device, changed);
    } else if (m.type === 'telemetry') {
      const e = m as Extract<FeedMessage, { type: 'telemetry' }>;
      const d = devices.get(e.device);
      if (d) {
        d.telemetry = e.sample;
        d.lastSeen = new Date().toISOString(); // the controller's clock saw it now, as it records lastSeen
      }
      if (d && opts.telemetry) changed = d;
    }
    if (changed && wanted(changed.id)) opts.json ? opts.io.out(JSON.stringify({ type: m.type, device: changed })) : out.row(deviceRow(changed));
    return undefined;
  });
}

/** With an id, it ends when that rollout stops running: exit 0 if it succeeded, 1 otherwise. */
export function watchRollouts(opts: WatchOptions & { id?: string }): Promise<number> {
  const out = streamTable(opts.io, ROLLOUT_COLUMNS, { shrinkFirst: ['reason', 'target'], minimums: { status: 11, wave: 18, switched: 8, eta: 13 } });
  const done = (r: RolloutSummaryView): number | undefined => (opts.id !== undefined && r.id === opts.id && r.status !== 'running' ? (r.status === 'succeeded' ? EXIT.ok : EXIT.failed) : undefined);
  return follow(opts, (m) => {
    if (m.type === 'snapshot') {
      const s = m as Extract<FeedMessage, { type: 'snapshot' }>;
      const list = s.rollouts.filter((r) => opts.id === undefined || r.id === opts.id);
      if (opts.id !== undefined && list.length === 0) {
        opts.io.err(`hostManager: no rollout ${opts.id}; see \`hostManager rollouts list\``);
        return EXIT.notFound;
      }
      if (opts.json) for (const r of list) opts.io.out(JSON.stringify({ type: 'rollout', rollout: r }));
      else out.start(list.slice(0, 20).map((r) => rolloutRow(r)));
      return list.map(done).find((c) => c !== undefined);
    }
    if (m.type !== 'rollout') return undefined;
    const r = (m as Extract<FeedMessage, { type: 'rollout' }>).summary;
    if (opts.id !== undefined && r.id !== opts.id) return undefined;
    opts.json ? opts.io.out(JSON.stringify({ type: 'rollout', rollout: r })) : out.row(rolloutRow(r));
    return done(r);
  });
}
