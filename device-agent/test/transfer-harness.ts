/**
 * In-process test harness for the transfer receiver: a device that connects to a
 * real broker with its own credentials, subscribes exactly as the agent does
 * (its commands, its groups' commands, the transfer topics of itself and its
 * groups), answers transfer.* requests through the real receiver and feeds it
 * every chunk message. Plus a small file-backed model store for the tests that
 * are about the transfer rather than about onnxruntime.
 */
import { mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { pino } from 'pino';
import { FleetError, errorReply, okReply, parseRequest, parseTopic, sha256Hex, topics } from '@edgefleet/protocol';
import type { CommandName, FleetEvent, Manifest, ModelState, Reply } from '@edgefleet/protocol';
import { createTransferReceiver } from '../src/transfer/index.js';
import type { DiskSpace, ReceiverModels, TransferReceiver } from '../src/transfer/index.js';

export function quietLogger(name = 'test') {
  return pino({ name, level: process.env.TEST_LOG_LEVEL ?? 'silent' }, pino.destination(2));
}

/** A model store that installs by rename and activates by pointer; counts calls. */
export class FileModels implements ReceiverModels {
  readonly installed = new Map<string, Map<number, string>>();
  readonly activeVersion = new Map<string, number>();
  readonly accepted = new Map<string, number>();
  activateCalls = 0;
  /** Makes the next activation fail with this error (to test failure paths). */
  failNextActivation: FleetError | undefined;

  /** verifyOnInstall: re-hash the staged file against the manifest, as the agent's model store does. */
  constructor(
    readonly dir: string,
    readonly verifyOnInstall = false,
  ) {}

  list(): ModelState[] {
    return [...this.installed].map(([name, versions]) => ({
      name,
      active: this.activeVersion.get(name) ?? null,
      versions: [...versions.keys()].sort((a, b) => a - b),
    }));
  }
  async install(manifest: Manifest, stagedFile: string): Promise<void> {
    if (this.verifyOnInstall && sha256Hex(await readFile(stagedFile)) !== manifest.sha256) {
      throw new FleetError('corrupt_chunk', `${manifest.name}@${manifest.version} does not match its sha256; send it again`);
    }
    const dir = join(this.dir, manifest.name, String(manifest.version));
    await mkdir(dir, { recursive: true });
    const file = join(dir, 'model.onnx');
    await rename(stagedFile, file);
    const versions = this.installed.get(manifest.name) ?? new Map<number, string>();
    versions.set(manifest.version, file);
    this.installed.set(manifest.name, versions);
  }
  async activate(name: string, version: number) {
    this.activateCalls++;
    if (this.failNextActivation) {
      const error = this.failNextActivation;
      this.failNextActivation = undefined;
      throw error;
    }
    if (!this.installed.get(name)?.has(version)) throw new FleetError('not_found', `${name}@${version} is not installed`);
    const previous = this.activeVersion.get(name) ?? null;
    this.activeVersion.set(name, version);
    return { model: name, version, previous };
  }
  async remove(name: string, version: number) {
    const removed = this.installed.get(name)?.delete(version) ?? false;
    return { removed };
  }
  highestAccepted(name: string): number {
    return this.accepted.get(name) ?? 0;
  }
  async recordAccepted(name: string, version: number): Promise<void> {
    this.accepted.set(name, Math.max(version, this.accepted.get(name) ?? 0));
  }
  async bytesOf(name: string, version: number): Promise<Buffer> {
    const file = this.installed.get(name)?.get(version);
    if (!file) throw new Error(`${name}@${version} not installed`);
    return readFile(file);
  }
}

export interface InProcessDevice {
  id: string;
  client: MqttClient;
  receiver: TransferReceiver;
  models: ReceiverModels;
  events: FleetEvent[];
  /** Chunk messages that reached this device. */
  chunksSeen: number;
  close(): Promise<void>;
}

export async function startInProcessDevice(opts: {
  brokerUrl: string;
  id: string;
  token: string;
  groups?: string[];
  dataDir: string;
  publicKeyPem: string;
  models: ReceiverModels;
  diskSpace?: (dir: string) => Promise<DiskSpace>;
  now?: () => Date;
  verifyFromDisk?: boolean;
}): Promise<InProcessDevice> {
  const groups = opts.groups ?? [];
  const client = await mqtt.connectAsync(opts.brokerUrl, {
    clientId: opts.id,
    username: opts.id,
    password: opts.token,
    reconnectPeriod: 0,
  });
  const events: FleetEvent[] = [];
  const receiver = createTransferReceiver({
    dataDir: opts.dataDir,
    publicKeyPem: opts.publicKeyPem,
    identity: { id: opts.id, groups, arch: process.arch },
    models: opts.models,
    publishEvent: (e) => {
      events.push(e);
      client.publish(topics.device(opts.id, 'events'), JSON.stringify(e), { qos: 0 });
    },
    logger: quietLogger(opts.id),
    progressIntervalMs: 50,
    ...(opts.diskSpace ? { diskSpace: opts.diskSpace } : {}),
    ...(opts.now ? { now: opts.now } : {}),
    ...(opts.verifyFromDisk ? { verifyFromDisk: true } : {}),
  });
  const device: InProcessDevice = {
    id: opts.id,
    client,
    receiver,
    models: opts.models,
    events,
    chunksSeen: 0,
    async close() {
      await client.endAsync(true);
      await receiver.close();
    },
  };
  const handlers: { [C in CommandName]?: (params: never) => Promise<unknown> } = {
    'transfer.offer': (p) => receiver.offer(p),
    'transfer.status': (p) => receiver.status(p),
    'transfer.commit': (p) => receiver.commit(p),
  };
  client.on('message', (topic, payload) => {
    const parsed = parseTopic(topic);
    if (parsed?.kind === 'transfer') {
      device.chunksSeen++;
      receiver.chunk(parsed.transferId, parsed.index, payload);
      return;
    }
    const req = parseRequest(payload);
    if (!req.ok) {
      if (req.corr) send(errorReply(req.corr, req.error.toJSON()));
      return;
    }
    const handler = handlers[req.request.command];
    if (!handler) {
      send(errorReply(req.request.id, { code: 'unknown_command', message: req.request.command }));
      return;
    }
    handler(req.request.params as never).then(
      (data) => send(okReply(req.request, data as never)),
      (error: unknown) =>
        send(errorReply(req.request.id, error instanceof FleetError ? error.toJSON() : { code: 'internal', message: String(error) })),
    );
  });
  function send(reply: Reply): void {
    client.publish(topics.device(opts.id, 'replies'), JSON.stringify(reply), { qos: 1 });
  }
  // as the agent does: commands at QoS 1, chunks at QoS 0 (the broker grants a device's transfer filters no more)
  await client.subscribeAsync([topics.device(opts.id, 'commands'), ...groups.map((g) => topics.group(g, 'commands'))], { qos: 1 });
  await client.subscribeAsync([topics.transferFilter({ kind: 'device', name: opts.id }), ...groups.map((g) => topics.transferFilter({ kind: 'group', name: g }))], { qos: 0 });
  return device;
}
