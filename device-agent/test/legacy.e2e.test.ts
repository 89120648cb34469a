/**
 * The original plain-text channel on `hello`, driven by mosquitto_pub (a real
 * third-party client) against a broker created with legacyTopic 'hello'.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { cleanupAgents, connectOperator, startAgent, watchStatus } from '../../test/support/agent-process.js';
import type { AgentProcess, StatusWatcher } from '../../test/support/agent-process.js';

const run = promisify(execFile);
const OPERATOR = { id: 'op', token: 'operator-token-1' };
const DEVICE = { id: 'pi-legacy', token: 'device-token-legacy' };
// a program that ignores SIGTERM, so that `stop` has to escalate to SIGKILL
const STUBBORN = `${process.execPath} -e "process.on('SIGTERM',()=>console.log('ignoring SIGTERM'));console.log('inference running');setInterval(()=>{},1000)"`;

let broker: RunningBroker;
let operator: MqttClient;
let watcher: StatusWatcher;
let agent: AgentProcess | undefined;
let port: number;

beforeAll(async () => {
  broker = await startTestBroker({ devices: [DEVICE], operators: [OPERATOR], legacyTopic: 'hello' });
  port = broker.ports.tcp!;
  operator = await connectOperator(broker.url, OPERATOR);
  watcher = await watchStatus(operator);
});

afterAll(async () => {
  await cleanupAgents(agent);
  await operator?.endAsync();
  await broker?.close();
});

async function send(message: string): Promise<void> {
  await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-u', OPERATOR.id, '-P', OPERATOR.token, '-i', `${OPERATOR.id}-pub`, '-q', '1', '-t', 'hello', '-m', message]);
}

/** Sends a command and waits for the line it should print, looking only at output after the send. */
async function expectLine(message: string, line: string | RegExp): Promise<string> {
  const from = agent!.stdout.length;
  await send(message);
  return agent!.waitForStdout(line, 10_000, from);
}

describe('the original command channel (hello)', () => {
  it('runs start/stop/update/install/done/exit as the C client did, printing its console lines', async () => {
    agent = await startAgent(
      {
        broker: broker.url,
        ...DEVICE,
        args: [
          '--legacy-topic', 'hello',
          '--legacy-program', STUBBORN,
          '--legacy-stop-timeout-ms', '300',
        ],
      },
      watcher,
    );
    await agent.waitForStdout('Subscribing to topic hello using QoS1');

    // nothing runs: stop kills nothing (the original killed its own process group here)
    const from = agent.stdout.length;
    await send('stop');
    await agent.waitForStdout('No inference program running', 10_000, from);
    expect(agent.stdout.slice(from, from + 3)).toEqual(['Message arrived', '     topic: hello', '   message: stop']);

    await expectLine('start', /^Inference program started \(pid \d+\)$/);
    await agent.waitForStdout('inference running');
    await expectLine('start', /^Inference program already running \(pid \d+\)$/);
    const pid = Number(/pid (\d+)/.exec(agent.stdout.find((l) => l.startsWith('Inference program started'))!)![1]);
    // stop: SIGTERM is ignored by this program, so SIGKILL follows after the timeout
    await expectLine('stop', 'Inference program did not stop in time: killed');
    expect(() => process.kill(pid, 0)).toThrow();
    await expectLine('stop', 'No inference program running');

    await expectLine('update', 'No model assigned to this device');
    await expectLine('done', 'Done acknowledged');
    await expectLine('reboot', 'Unknown command: reboot');

    const seen = watcher.history.get(DEVICE.id)?.length ?? 0;
    await expectLine('exit', 'Exiting...');
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    expect(await watcher.waitFor(DEVICE.id, false, 5000, seen)).toMatchObject({ online: false, reason: 'exit command' });
  });

  it('install runs the configured command; start of a program that cannot run says so', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'legacy-install-'));
    agent = await startAgent(
      {
        broker: broker.url,
        ...DEVICE,
        args: ['--legacy-topic', 'hello', '--legacy-program', '/nonexistent/infer', '--legacy-install', `sh -c "echo installed > ${dir}/installed.txt"`],
      },
      watcher,
    );
    await agent.waitForStdout('Subscribing to topic hello using QoS1');
    await expectLine('install', 'Install finished');
    expect(await readFile(join(dir, 'installed.txt'), 'utf8')).toBe('installed\n');
    await rm(dir, { recursive: true, force: true });
    await expectLine('start', /^Could not start inference program: .*legacyProgram/);
    const exit = await agent.kill('SIGTERM');
    expect(exit.code).toBe(0);
  });
});
