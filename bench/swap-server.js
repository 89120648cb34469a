// The device side of bench/swap.js's HTTP setup, in its own process as on a real device: a model
// service with the bench's versions installed and the agent's local inference API on 127.0.0.1.
// IPC: sends {port}; on {activate: v} switches to version v and answers {activated: v, ms}.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { openDevice, workerSessionBytes } from './swap-models.js';

const { createModelService: create, createInferenceServer } = await import('@edgefleet/device-agent');
const createModelService = (o) => create({ workerSessionBytes, ...o });
const [inF, outF, count, threads] = process.argv.slice(2).map(Number);
const logger = pino({ level: 'silent' });
const dir = await mkdtemp(join(tmpdir(), 'edgefleet-bench-swap-'));
const { models, installMs } = await openDevice({ inF, outF, count, threads, createModelService, logger, dir });
const server = await createInferenceServer(models, { port: 0, logger });

process.on('message', async (m) => {
  if (m.activate !== undefined) {
    const t0 = performance.now();
    await models.activate('m', m.activate);
    process.send({ activated: m.activate, ms: performance.now() - t0 });
  } else if (m.exit) {
    await server.close();
    await models.close();
    await rm(dir, { recursive: true, force: true });
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
process.send({ port: server.port, installMs });
