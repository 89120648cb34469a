// A lightweight device for bench/transfer.js: the real transfer receiver
// (createTransferReceiver from @edgefleet/device-agent) on its own MQTT connection, with a plain file
// store (install = fsync'd rename; the bench delivers with activate:false, so no
// onnxruntime session is loaded). Answers transfer.* requests; on IPC 'reset' wipes
// its data directory; reports the sha256 of what it installed on IPC 'hash'.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { createTransferReceiver } from '@edgefleet/device-agent';
import { serveTransfers } from './lib.js';

const [id, url, dataDir, publicKeyPem, qosArg, groupsArg] = [process.argv[2], process.argv[3], process.argv[4], process.env.FLEET_PUBLIC_KEY, process.argv[5], process.argv[6]];
const groups = (groupsArg ?? '').split(',').filter(Boolean);
const chunkQos = Number(qosArg ?? 1);
const logger = pino({ level: 'warn' }, pino.destination(2));
const installed = new Map();

function fileModels() {
  return {
    list: () => [...installed.entries()].map(([name, v]) => ({ name, active: null, versions: [...v.keys()] })),
    async install(manifest, staged) {
      const dir = join(dataDir, 'models', manifest.name, String(manifest.version));
      await mkdir(dir, { recursive: true });
      const h = await open(staged, 'r');
      await h.sync();
      await h.close();
      await rename(staged, join(dir, 'model.onnx'));
      const v = installed.get(manifest.name) ?? new Map();
      v.set(manifest.version, join(dir, 'model.onnx'));
      installed.set(manifest.name, v);
    },
    async activate(name, version) {
      return { model: name, version, previous: null };
    },
    highestAccepted: () => 0,
    async recordAccepted() {},
  };
}

let receiver;
function newReceiver() {
  receiver = createTransferReceiver({
    dataDir,
    publicKeyPem,
    identity: { id, groups, arch: process.arch },
    models: fileModels(),
    publishEvent: () => {},
    logger,
    backgroundSyncBytes: Number(process.env.BENCH_SYNC_EVERY ?? 0),
  });
}
newReceiver();

const client = await serveTransfers({ id, url, groups, chunkQos, receiver: () => receiver });

// BENCH_PROFILE_DIR: a CPU profile of each delivery alone (from reset to the hash check), without start-up.
const profiler = process.env.BENCH_PROFILE_DIR ? await import('node:inspector/promises').then(({ Session }) => new Session()) : null;
profiler?.connect();
let deliveries = 0;

process.on('message', async (msg) => {
  if (msg.type === 'reset') {
    if (profiler) {
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.start');
    }
    await receiver.close();
    installed.clear();
    await rm(dataDir, { recursive: true, force: true });
    await mkdir(dataDir, { recursive: true });
    newReceiver();
    process.send({ type: 'reset-done' });
  } else if (msg.type === 'hash') {
    if (profiler) {
      const { profile } = await profiler.post('Profiler.stop');
      await writeFile(join(process.env.BENCH_PROFILE_DIR, `${id}-${++deliveries}.cpuprofile`), JSON.stringify(profile));
    }
    const file = installed.get(msg.name)?.get(msg.version);
    let sha = null;
    if (file) {
      const h = createHash('sha256');
      for await (const part of createReadStream(file)) h.update(part);
      sha = h.digest('hex');
    }
    process.send({ type: 'hash', sha });
  } else if (msg.type === 'exit') {
    await client.endAsync();
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0)); // the bench went away
process.on('SIGTERM', () => process.exit(0));
process.send({ type: 'ready' });
