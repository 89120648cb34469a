/**
 * Waiting for a new container to become healthy, or finding out early that it will not: it exited, it is
 * being restarted by its restart policy, its Docker HEALTHCHECK says unhealthy, or the deadline passed.
 * The engine is polled (product code; tests wait on events): a few inspects per second per starting container.
 */
import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { FleetError } from '@edgefleet/protocol';
import type { ContainerHealth } from '@edgefleet/protocol';
import type { Engine, OwnedContainer } from './engine.js';

const POLL_MS = 150;

/** Status code of a GET on loopback, or the reason there was none. */
export function httpStatus(port: number, path: string, timeoutMs: number): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (error) => resolve(error.message));
    req.end();
  });
}

/** The host port the engine bound for a container port (published on loopback by spec.ts). */
export function hostPort(container: OwnedContainer, port: number): number | undefined {
  return container.ports[`${port}/tcp`];
}

export interface HealthWait {
  engine: Engine;
  container: string;
  health: ContainerHealth;
  deadlineMs: number;
  /** An extra readiness probe (an inference container's /v2/health/ready): path on a container port. */
  ready?: { port: number; path: string } | undefined;
  signal?: AbortSignal | undefined;
}

type Verdict = { done: true } | { done: false; waiting: string } | { failed: string };

async function probe(c: OwnedContainer, port: number, path: string): Promise<Verdict> {
  const host = hostPort(c, port);
  if (host === undefined) return { failed: `container port ${port} is not published; the agent cannot reach it` };
  const status = await httpStatus(host, path, 1000);
  return typeof status === 'number' && status >= 200 && status < 300 ? { done: true } : { done: false, waiting: `GET ${path} on port ${port}: ${status}` };
}

async function judge(c: OwnedContainer, w: HealthWait, runningSince: number, restartsBefore: number): Promise<Verdict> {
  if (c.state === 'exited' || c.state === 'dead') return { failed: `it exited with code ${c.exitCode ?? '?'}` };
  if (c.restarts > restartsBefore || c.state === 'restarting') {
    return { failed: `it keeps exiting (restarted ${c.restarts - restartsBefore} time(s), last exit code ${c.exitCode ?? '?'})` };
  }
  if (c.state !== 'running') return { done: false, waiting: `state ${c.state}` };
  if (c.health === 'unhealthy') return { failed: 'its Docker health check reports unhealthy' };
  const h = w.health;
  let verdict: Verdict;
  if (h.kind === 'http') verdict = await probe(c, h.port, h.path);
  else if (h.kind === 'docker' || c.health !== 'none') verdict = c.health === 'healthy' ? { done: true } : { done: false, waiting: `Docker health ${c.health}` };
  else verdict = Date.now() - runningSince >= h.settleMs ? { done: true } : { done: false, waiting: `running for ${Date.now() - runningSince} ms of ${h.settleMs}` };
  if ('done' in verdict && verdict.done && w.ready) return probe(c, w.ready.port, w.ready.path);
  return verdict;
}

async function tail(engine: Engine, container: string): Promise<string> {
  try {
    const lines = await engine.logs(container, 8);
    return lines.length > 0 ? `; its last output: ${lines.map((l) => l.slice(0, 200)).join(' | ')}` : '';
  } catch {
    return ''; // the logs only decorate the reason; the reason itself is what matters
  }
}

/** Resolves once healthy; throws FleetError('unhealthy'-like smoke_test_failed) with the reason and the last log lines otherwise. */
export async function waitHealthy(w: HealthWait): Promise<void> {
  const started = Date.now();
  let runningSince: number | undefined;
  let restartsBefore: number | undefined; // restarts before this wait (a container started again) do not count
  let last = 'not started';
  while (true) {
    if (w.signal?.aborted) throw new FleetError('deadline_exceeded', `stopped waiting for ${w.container} to become healthy`);
    const c = await w.engine.inspectOwned(w.container);
    if (!c) throw new FleetError('smoke_test_failed', `${w.container} vanished while the agent waited for it to become healthy`);
    if (c.running) runningSince ??= c.startedAt ?? Date.now();
    restartsBefore ??= c.restarts;
    const verdict = await judge(c, w, runningSince ?? Date.now(), restartsBefore);
    if ('failed' in verdict) throw new FleetError('smoke_test_failed', `${w.container} did not become healthy: ${verdict.failed}${await tail(w.engine, w.container)}`);
    if (verdict.done) return;
    last = verdict.waiting;
    if (Date.now() - started >= w.deadlineMs) {
      throw new FleetError('smoke_test_failed', `${w.container} was not healthy within ${w.deadlineMs} ms (last: ${last})${await tail(w.engine, w.container)}`);
    }
    await sleep(POLL_MS);
  }
}
