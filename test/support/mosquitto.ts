/**
 * Test fixture: a real Mosquitto 2 broker on a free loopback port, as a third-party broker.
 * The configuration lines are the caller's (e.g. `allow_anonymous true`); the listener is ours.
 */
import { spawn } from 'node:child_process';
import { track } from './children.js';
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
  const child = track(spawn('mosquitto', ['-c', join(work, 'mosquitto.conf')], { stdio: 'ignore' }));
  const stop = async () => {
    child.kill('SIGKILL');
    await rm(work, { recursive: true, force: true });
  };
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
    await stop();
    throw error;
  }
  return { port, url: `mqtt://127.0.0.1:${port}`, stop };
}
