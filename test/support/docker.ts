/**
 * Test fixture: the real Docker engine (CI's `.ci/run` starts dockerd). Containers and images that tests
 * make outside the agent, HTTP GETs to published ports, and clean-up by label so a
 * failed run leaves nothing behind on a shared engine.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { request } from 'node:http';

/** Throws with what to do when no engine answers (the docker suites need one; they are not skipped silently). */
export function requireEngine(): void {
  const info = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { encoding: 'utf8' });
  if (info.status !== 0) throw new Error(`these tests need a Docker engine (docker info failed: ${info.stderr.trim()}); start dockerd as .ci/run does`);
}

export function docker(...args: string[]): string {
  return execFileSync('docker', args, { encoding: 'utf8' }).trim();
}

export function inspect(ref: string): { Id: string; State: { Running: boolean; StartedAt: string; Status: string }; Config: { Labels: Record<string, string> } } | undefined {
  const r = spawnSync('docker', ['inspect', '--type', 'container', ref], { encoding: 'utf8' });
  return r.status === 0 ? (JSON.parse(r.stdout) as [never])[0] : undefined;
}

export function imageExists(ref: string): boolean {
  return spawnSync('docker', ['image', 'inspect', ref], { encoding: 'utf8' }).status === 0;
}

/** Removes every container labelled with this device id, and the images tagged for it. */
export function cleanupDevice(device: string): void {
  const ids = docker('ps', '-aq', '--filter', `label=io.edgefleet.device=${device}`).split('\n').filter(Boolean);
  if (ids.length) spawnSync('docker', ['rm', '-f', ...ids]);
  const repo = `edgefleet/${device.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  const tags = docker('images', repo, '--format', '{{.Repository}}:{{.Tag}}').split('\n').filter(Boolean);
  if (tags.length) spawnSync('docker', ['rmi', ...tags]);
}

export function getJson(port: number, path: string): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: the text is the body
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.end();
  });
}
