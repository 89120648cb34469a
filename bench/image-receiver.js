// A device for bench/image.js: the agent's real transfer receiver and real containers service (the one
// `deviceAgent` runs: archive checks, `docker load` with tags stripped, the engine's ID checked against the
// pin, the device's tag) on its own MQTT connection and its own Docker engine socket. No model service and
// no onnxruntime session (the image has no container spec: it is installed, not run). Answers transfer.*
// requests; on IPC 'reset' wipes its data directory and starts a fresh receiver and service.
import { mkdir, rm } from 'node:fs/promises';
import { pino } from 'pino';
import { FleetError } from '@edgefleet/protocol';
import { createContainerService, createTransferReceiver } from '@edgefleet/device-agent';
import { serveTransfers } from './lib.js';

const [id, url, dataDir, socketPath, groupsArg] = process.argv.slice(2);
const groups = (groupsArg ?? '').split(',').filter(Boolean);
const logger = pino({ level: 'warn' }, pino.destination(2));

/** Images only: a model offered to this bench device is refused. */
const noModels = {
  list: () => [],
  install: async () => {
    throw new FleetError('unavailable', 'this bench device takes images only');
  },
  activate: async () => {
    throw new FleetError('unavailable', 'this bench device takes images only');
  },
  highestAccepted: () => 0,
  recordAccepted: async () => {},
};

let containers;
let receiver;
async function fresh() {
  containers = await createContainerService({ device: id, dataDir, logger, socketPath });
  await containers.start();
  receiver = createTransferReceiver({
    dataDir,
    publicKeyPem: process.env.FLEET_PUBLIC_KEY,
    identity: { id, groups, arch: process.arch },
    models: noModels,
    images: containers,
    publishEvent: () => {},
    logger,
  });
}
await fresh();

// chunks at QoS 0, as the agent subscribes them
const client = await serveTransfers({ id, url, groups, chunkQos: 0, receiver: () => receiver });

process.on('message', async (msg) => {
  if (msg.type === 'reset') {
    await receiver.close();
    await containers.close();
    await rm(dataDir, { recursive: true, force: true });
    await mkdir(dataDir, { recursive: true });
    await fresh();
    process.send({ type: 'reset-done' });
  } else if (msg.type === 'exit') {
    await client.endAsync();
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0)); // the bench went away
process.on('SIGTERM', () => process.exit(0));
process.send({ type: 'ready' });
