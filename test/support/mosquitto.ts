/**
 * Test fixture: a real Mosquitto 2 broker on a free loopback port, as a third-party broker.
 * The configuration lines are the caller's (e.g. `allow_anonymous true`); the listener is ours.
 */
import { spawn } from 'node:child_process';
import { track } from './children.js';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually, freePort } from './manager-process.js';

export interface MosquittoProcess {
  port: number;
  /** mqtt://127.0.0.1:<port> */
  url: string;
  stop(): Promise<void>;
}

export async function startMosquitto(config: string[]): Promise<MosquittoProcess> {
  const work = await mkdtemp(join(tmpdir(), 'mosquitto-'));
  const port = await freePort();
  await writeFile(join(work, 'mosquitto.conf'), [`listener ${port} 127.0.0.1`, ...config, ''].join('\n'));
  let child: ChildProcess | undefined;
  const stop = async () => {
    child?.kill('SIGKILL');
    await rm(work, { recursive: true, force: true });
  };
  try {
    child = await runMosquitto(join(work, 'mosquitto.conf'), port);
  } catch (error) {
    await stop();
    throw error;
  }
  return { port, url: `mqtt://127.0.0.1:${port}`, stop };
}

/** `mosquitto -c FILE`, once it listens on `port` (loopback); killed if it does not in time. */
export async function runMosquitto(configFile: string, port: number): Promise<ChildProcess> {
  const child = track(spawn('mosquitto', ['-c', configFile], { stdio: 'ignore' }));
  try {
    await eventually('mosquitto listening', () =>
      new Promise<true | undefined>((resolve) => {
        const s = connect(port, '127.0.0.1', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(undefined));
      }),
    );
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return child;
}
