/**
 * The interactive console, driven through a real pseudo-terminal (util-linux
 * `script`): the original host manager's manners (connection messages,
 * "Press Q<Enter> to quit", plain-text commands to a device) plus CLI commands
 * typed in, and Q to quit with exit code 0.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupAgents, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { MANAGER_BIN, api, eventually } from './support/manager-process.js';

describe('interactive console on a terminal', () => {
  let dataDir: string;
  let term: ChildProcessWithoutNullStreams | undefined;
  let agent: AgentProcess | undefined;
  let screen = '';

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'console-'));
  });

  afterAll(async () => {
    await cleanupAgents(agent);
    if (term && term.exitCode === null) term.kill('SIGKILL');
    await rm(dataDir, { recursive: true, force: true });
  });

  const waitScreen = (match: RegExp, timeoutMs = 15_000): Promise<string> =>
    eventually(`${match} on the console`, async () => match.exec(screen)?.[0], timeoutMs, 50);

  it('keeps the original manners, sends plain-text commands to a device, runs CLI commands, quits on Q', async () => {
    const cmd = [process.execPath, MANAGER_BIN, '--data-dir', dataDir, '--mqtt-host', '127.0.0.1', '--mqtt-port', '0', '--mqtt-ws-port', '-1', '--http-port', '0']
      .map((w) => `'${w}'`)
      .join(' ');
    term = spawn('script', ['-qfc', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    term.stdout.setEncoding('utf8').on('data', (d: string) => (screen += d));
    term.stderr.setEncoding('utf8').on('data', (d: string) => (screen += d));
    const exited = new Promise<number | null>((resolve) => term!.on('exit', (code) => resolve(code)));

    await waitScreen(/Connecting to broker at the embedded broker/);
    await waitScreen(/Connected to mqtt:\/\/127\.0\.0\.1:\d+/);
    await waitScreen(/Press Q<Enter> to quit/);
    expect(screen).toMatch(/Operator token \(shown once/);

    const info = JSON.parse(await readFile(join(dataDir, 'controller.json'), 'utf8')) as { url: string; broker: string };
    const m = { url: info.url, token: (await readFile(join(dataDir, 'operator.token'), 'utf8')).trim() };
    const added = await api<{ token: string }>(m, 'POST', '/api/devices', { id: 'jetson-1', groups: ['lab'] });
    agent = await spawnAgent({
      broker: info.broker,
      id: 'jetson-1',
      token: added.body.token,
      groups: ['lab'],
      args: ['--legacy-topic', 'hello', '--legacy-program', 'sleep 60'],
    });
    await waitScreen(/jetson-1 online/);

    term.stdin.write('start jetson-1\n');
    await waitScreen(/jetson-1: .*Inference program started \(pid \d+\)/);
    term.stdin.write('start group:lab\n');
    await waitScreen(/jetson-1: .*already running/);
    term.stdin.write('stop jetson-1\n');
    await waitScreen(/jetson-1: .*(stopped|terminated|killed)/i);

    // A CLI command typed in.
    term.stdin.write('devices list\n');
    await waitScreen(/jetson-1\s+online\s+lab/);
    term.stdin.write('frobnicate\n');
    await waitScreen(/unknown command "frobnicate"/);

    term.stdin.write('Q\n');
    await waitScreen(/Disconnecting/);
    expect(await exited).toBe(0);
  });
});
