/**
 * What the CLI prints, as a person reads it: tables that keep their shape with long cells, a
 * failure reason said once, the soak countdown and ETA, refused tokens named by where they came
 * from, a port in use named by its flag, agent log lines, labels and the tail that `logs -f` follows.
 */
import { describe, expect, it } from '@jest/globals';
import { tokenProblem } from '../src/cli/client.js';
import { startErrorText } from '../src/cli/controller.js';
import { parseLabels } from '../src/cli/devices.js';
import { formatDuration, invocation, table } from '../src/cli/io.js';
import { formatLogLine, newLines } from '../src/cli/logs.js';
import { etaText, rolloutText } from '../src/cli/rollout-text.js';
import type { RolloutView } from '../src/cli/rollout-text.js';
import { ago } from '../src/cli/rows.js';

describe('tables', () => {
  it('cut the widest cells with … so every line fits, keep the first column whole, and flatten newlines', () => {
    const reason = `wave 0 (canary) failed its gate: ${'x'.repeat(300)}`;
    const text = table(
      [
        { id: 'r-20260101000000-abcdef', status: 'failed', reason },
        { id: 'r-2', status: 'succeeded', reason: 'line one\nline two' },
      ],
      ['id', 'status', 'reason'],
      80,
    );
    const lines = text.split('\n');
    expect(lines).toHaveLength(3);
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(80);
    expect(lines[1]).toMatch(/^r-20260101000000-abcdef  failed {4} wave 0 \(canary\) failed its gate: x+…$/);
    expect(lines[2]).toContain('line one line two');
    // columns stay aligned under their headers
    expect(lines[0]!.indexOf('STATUS')).toBe(lines[1]!.indexOf('failed'));
  });
});

const failedRollout: RolloutView = {
  id: 'r-1',
  model: 'lin',
  version: 2,
  status: 'failed',
  reason: 'wave 0 (canary) failed its gate: 1 of 1 devices failed to install (allowed 0): pi-1: load_failed: the graph has no node Foo',
  target: { kind: 'group', name: 'lab' },
  waves: [
    {
      index: 0,
      label: 'canary',
      devices: ['pi-1'],
      state: 'failed',
      gate: { pass: false, reasons: ['1 of 1 devices failed to install (allowed 0): pi-1: load_failed: the graph has no node Foo', 'only 0 requests during the soak (minimum 20): gated on install results only'] },
    },
    { index: 1, label: '100%', devices: ['pi-2', 'pi-3'], state: 'pending' },
  ],
  devices: {
    'pi-1': { id: 'pi-1', state: 'failed', wave: 0, error: { code: 'load_failed', message: 'the graph has no node Foo' } },
    'pi-2': { id: 'pi-2', state: 'pending', wave: 1 },
    'pi-3': { id: 'pi-3', state: 'skipped', wave: 1, error: { code: 'deadline_exceeded', message: 'offline until the deadline' } },
  },
};

describe('rollout text', () => {
  it('says a failure reason once: the gate and the device line do not repeat it', () => {
    const text = rolloutText(failedRollout);
    expect(text.match(/the graph has no node Foo/g)).toHaveLength(1);
    expect(text).toContain('gate FAILED: only 0 requests during the soak');
    expect(text).toContain('    pi-1: failed\n');
    // a reason not said above is still shown where it belongs
    expect(text).toContain('pi-3: skipped (deadline_exceeded: offline until the deadline)');
  });

  it('counts a soak down and shows the ETA of a running rollout', () => {
    const now = new Date('2026-01-01T00:00:00Z');
    const running: RolloutView = {
      ...failedRollout,
      status: 'running',
      reason: undefined,
      waves: [{ index: 0, label: 'canary', devices: ['pi-1'], state: 'soaking', soakUntil: '2026-01-01T00:00:42Z' }],
      devices: { 'pi-1': { id: 'pi-1', state: 'switched', wave: 0 } },
      timing: { wave: 0, soakUntil: '2026-01-01T00:00:42Z', etaAt: '2026-01-01T00:03:20Z', etaLowerBound: false, windowOpensAt: null },
    };
    delete running.reason;
    const text = rolloutText(running, now);
    expect(text).toContain('wave 0 (canary): soaking, 42 s left');
    expect(text).toContain('ETA 3 min 20 s');
    expect(etaText({ wave: 0, soakUntil: null, etaAt: '2026-01-01T02:10:00Z', etaLowerBound: true, windowOpensAt: '2026-01-01T02:00:00Z' }, now)).toBe(
      'waiting for the maintenance window (opens in 2 h 00 min); ETA ≥ 2 h 10 min',
    );
  });

  it('formats durations and relative times for people', () => {
    expect(formatDuration(5.4)).toBe('5 s');
    expect(formatDuration(125)).toBe('2 min 05 s');
    expect(formatDuration(7260)).toBe('2 h 01 min');
    expect(formatDuration(-3)).toBe('0 s');
    const now = Date.parse('2026-01-01T00:10:00Z');
    expect(ago('2026-01-01T00:09:48Z', now)).toBe('12 s ago');
    expect(ago('2026-01-01T00:05:00Z', now)).toBe('5 min ago');
    expect(ago(null, now)).toBe('never');
  });
});

describe('errors in the user\'s terms', () => {
  it('a refused operator token names where it came from', () => {
    const url = 'http://127.0.0.1:7420';
    expect(tokenProblem({ kind: 'flag' }, url)).toMatch(/refused the operator token given with --token; copy it from operator.token/);
    expect(tokenProblem({ kind: 'env', name: 'EDGEFLEET_OPERATOR_TOKEN' }, url)).toMatch(/token in \$EDGEFLEET_OPERATOR_TOKEN/);
    expect(tokenProblem({ kind: 'file', path: '/home/ann/.edgefleet/operator.token' }, url)).toMatch(/token in \/home\/ann\/.edgefleet\/operator.token; .*--data-dir/);
    expect(tokenProblem({ kind: 'none', path: '/home/ann/.edgefleet/operator.token' }, url)).toMatch(/^no operator token: pass --token TOKEN, set EDGEFLEET_OPERATOR_TOKEN, or run where \/home\/ann\/.edgefleet\/operator.token is readable/);
    for (const kind of ['flag', 'env', 'file'] as const) expect(tokenProblem(kind === 'env' ? { kind, name: 'X' } : kind === 'file' ? { kind, path: '/p' } : { kind }, url)).not.toMatch(/Authorization|Bearer|<data dir>/);
  });

  it('a port in use names the flag that moves it, without a stack trace', () => {
    const http = Object.assign(new Error('listen EADDRINUSE: address already in use 127.0.0.1:7420'), { code: 'EADDRINUSE', port: 7420 });
    expect(startErrorText(http, {})).toBe(
      'port 7420 is already in use, so the HTTP API and dashboard cannot listen there; stop what uses it (another hostManager?) or choose another port: --http-port 7421 (with npm: npm start -- --http-port 7421)',
    );
    const mqtt = new Error('cannot listen for tcp on 0.0.0.0:1884: listen EADDRINUSE: address already in use 0.0.0.0:1884');
    expect(startErrorText(mqtt, { 'mqtt-port': 1884 })).toMatch(/^port 1884 is already in use, so the embedded MQTT broker .*--mqtt-port 1885/);
    expect(startErrorText(new Error('cannot connect to the broker'), {})).toBe('cannot connect to the broker');
  });

  it('prints commands as the user can run them', () => {
    expect(invocation('/usr/local/bin/hostManager', '/home/ann')).toBe('hostManager');
    expect(invocation('/home/ann/edgefleet/host-manager/dist/bin/hostManager.js', '/home/ann/edgefleet')).toBe('node host-manager/dist/bin/hostManager.js');
  });
});

describe('labels and logs', () => {
  it('parses KEY=VALUE to set and KEY- to remove, refusing anything else', () => {
    expect(parseLabels(['site=plant-1,rack=3', 'old-'])).toEqual({ site: 'plant-1', rack: '3', old: null });
    expect(() => parseLabels(['site'])).toThrow(/--labels takes KEY=VALUE to set and KEY- to remove/);
  });

  it('turns agent JSON log lines into one readable line each; other lines stay as they are', () => {
    const line = JSON.stringify({ level: 40, time: Date.parse('2026-01-01T12:01:02.345Z'), pid: 1, device: 'pi-1', msg: 'chunk rejected', transferId: 't1', index: 3 });
    expect(formatLogLine(line)).toBe('12:01:02.345 WARN  chunk rejected transferId=t1 index=3');
    expect(formatLogLine('Segmentation fault')).toBe('Segmentation fault');
  });

  it('finds what is new in a later tail of the same log', () => {
    expect(newLines(['a', 'b', 'c'], ['b', 'c', 'd', 'e'])).toEqual(['d', 'e']);
    expect(newLines(['b', 'c'], ['a', 'b', 'c'])).toEqual([]);
    expect(newLines(['x', 'y'], ['a', 'b'])).toEqual(['a', 'b']); // no overlap: all of it is new
    expect(newLines([], ['a'])).toEqual(['a']);
  });
});
