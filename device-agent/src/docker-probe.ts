/**
 * Whether a Docker engine answers, for the device status. A bare `GET /_ping` on the engine's socket:
 * importing dockerode for this costs ~17 MB resident and ~0.2 s at every start, which a 512 MB board
 * without Docker should not pay. dockerode stays the client for everything that talks to the engine;
 * it is still used here for a TLS engine (DOCKER_TLS_VERIFY), whose certificates it knows how to find.
 */
import { request } from 'node:http';
import type { RequestOptions } from 'node:http';

/** Where the engine listens, from DOCKER_HOST as the docker CLI reads it (unix:// or tcp://). */
export function dockerEndpoint(env: NodeJS.ProcessEnv = process.env): RequestOptions | 'tls' | undefined {
  const host = env.DOCKER_HOST;
  if (!host) return { socketPath: '/var/run/docker.sock' };
  if (env.DOCKER_TLS_VERIFY) return 'tls';
  if (host.startsWith('unix://')) return { socketPath: host.slice('unix://'.length) };
  const tcp = /^tcp:\/\/([^:/]+)(?::(\d+))?/.exec(host);
  if (tcp) return { host: tcp[1], port: Number(tcp[2] ?? 2375) };
  return undefined; // ssh:// and other transports: only dockerode knows them
}

export async function dockerReachable(timeoutMs = 1500, env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  const endpoint = dockerEndpoint(env);
  if (endpoint === 'tls' || endpoint === undefined) return dockerodePing(timeoutMs);
  return new Promise<boolean>((resolve) => {
    const req = request({ ...endpoint, path: '/_ping', method: 'GET', timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false)); // no socket, no permission, no engine: all mean "not reachable"
    req.end();
  });
}

async function dockerodePing(timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const { default: Docker } = await import('dockerode');
    return await Promise.race([
      new Docker().ping().then(() => true),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(false), timeoutMs);
      }),
    ]);
  } catch {
    return false; // unreachable or refused: the status only says whether it answers
  } finally {
    clearTimeout(timer);
  }
}
