/** Talking to a Docker engine: is it there, and what does its progress stream say. */
import type Docker from 'dockerode';
import { FleetError } from '@edgefleet/protocol';

interface BuildEvent {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
}

/** Follows an engine's JSON progress stream; rejects with its error event, if any. */
export function followEngineStream(docker: Docker, stream: NodeJS.ReadableStream, onLine: (line: string) => void): Promise<string[]> {
  const lines: string[] = [];
  return new Promise((resolvePromise, reject) => {
    docker.modem.followProgress(
      stream,
      (err: Error | null) => (err ? reject(err) : resolvePromise(lines)),
      (event: BuildEvent) => {
        if (event.error) {
          reject(new Error(event.errorDetail?.message ?? event.error));
          return;
        }
        for (const line of (event.stream ?? event.status ?? '').split('\n')) {
          if (line.trim() === '') continue;
          lines.push(line);
          onLine(line);
        }
      },
    );
  });
}

export async function requireEngine(docker: Docker): Promise<void> {
  try {
    await docker.ping();
  } catch (err) {
    throw new FleetError('unavailable', `no Docker engine answers (${(err as Error).message}): start dockerd, or point DOCKER_HOST at one`);
  }
}
