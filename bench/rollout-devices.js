/**
 * Worker for bench/rollout.js: many lightweight simulated devices in one
 * process. Each has its own MQTT connection and device credential, publishes a
 * retained status, answers requests through the protocol's parser, and hands
 * transfers to the agent's real receiver (createTransferReceiver from @edgefleet/device-agent:
 * manifest signature, target, expiry, per-chunk and whole-file sha256, staging
 * file, commit). Only the model runtime is replaced by a file store without
 * onnxruntime (a thousand sessions would measure onnxruntime, not delivery).
 *
 * Messages from the parent: {type:'start', devices:[{id,token}], broker, group, publicKeyPem, dataRoot}
 *                            {type:'verify', model, version, sha256} → {type:'verified', ok, bad:[...]}
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { errorReply, FleetError, makeStatus, okReply, parseRequest, parseTopic, topics } from '@edgefleet/protocol';
import { createTransferReceiver } from '@edgefleet/device-agent';

const logger = pino({ level: 'silent' });
const devices = new Map();

/** The smallest model store the receiver needs: files moved into place, versions in memory. */
function fileModels(dataDir) {
  const state = new Map(); // name → { active, versions:Set, highest }
  const entry = (name) => {
    let s = state.get(name);
    if (!s) state.set(name, (s = { active: null, versions: new Set(), highest: 0 }));
    return s;
  };
  return {
    list: () => [...state].map(([name, s]) => ({ name, active: s.active, versions: [...s.versions] })),
    async install(manifest, staged) {
      const dir = join(dataDir, 'models', manifest.name, String(manifest.version));
      await mkdir(dir, { recursive: true });
      await rename(staged, join(dir, 'model.onnx'));
      entry(manifest.name).versions.add(manifest.version);
    },
    async activate(name, version) {
      const s = entry(name);
      if (!s.versions.has(version)) throw new FleetError('not_found', `${name}@${version} is not installed`);
      const previous = s.active;
      s.active = version;
      return { model: name, version, previous };
    },
    highestAccepted: (name) => entry(name).highest,
    async recordAccepted(name, version) {
      const s = entry(name);
      s.highest = Math.max(s.highest, version);
    },
    active: () => [...state].filter(([, s]) => s.active !== null).map(([name, s]) => ({ name, version: s.active })),
  };
}

function info(groups, models) {
  return {
    agentVersion: 'bench-sim',
    hostname: 'sim',
    arch: process.arch,
    platform: process.platform,
    cpus: 4,
    memoryBytes: 4 * 1024 ** 3,
    onnxruntime: { version: '1.30.0', executionProviders: ['cpu'] },
    docker: false,
    groups,
    models: models.active(),
  };
}

async function startDevice(d, opts) {
  const dataDir = join(opts.dataRoot, d.id);
  await mkdir(dataDir, { recursive: true });
  const models = fileModels(dataDir);
  const client = mqtt.connect(opts.broker, {
    clientId: d.id,
    username: d.id,
    password: d.token,
    protocolVersion: 4,
    reconnectPeriod: 1000,
    connectTimeout: 60_000,
    will: { topic: topics.device(d.id, 'status'), payload: Buffer.from(JSON.stringify({ v: 1, id: 'will', ts: Date.now(), type: 'status', online: false, reason: 'connection lost' })), qos: 1, retain: true },
  });
  const publishStatus = () => client.publish(topics.device(d.id, 'status'), JSON.stringify(makeStatus(info([opts.group], models))), { qos: 1, retain: true });
  const receiver = createTransferReceiver({
    dataDir,
    publicKeyPem: opts.publicKeyPem,
    identity: { id: d.id, groups: [opts.group], arch: process.arch },
    models,
    publishEvent: (e) => client.publish(topics.device(d.id, 'events'), JSON.stringify(e), { qos: 0 }),
    logger,
    progressIntervalMs: 1000,
  });
  const handlers = {
    ping: async () => ({ pong: true, uptimeS: process.uptime() }),
    info: async () => info([opts.group], models),
    'models.list': async () => ({ models: models.list() }),
    'transfer.offer': (p) => receiver.offer(p),
    'transfer.status': (p) => receiver.status(p),
    'transfer.commit': async (p) => {
      const r = await receiver.commit(p);
      publishStatus();
      return r;
    },
  };
  client.on('message', (topic, payload) => {
    const parsed = parseTopic(topic);
    if (parsed?.kind === 'transfer') {
      receiver.chunk(parsed.transferId, parsed.index, payload);
      return;
    }
    const req = parseRequest(payload);
    const reply = (body) => client.publish(topics.device(d.id, 'replies'), JSON.stringify(body), { qos: 1 });
    if (!req.ok) {
      if (req.corr) reply(errorReply(req.corr, req.error.toJSON()));
      return;
    }
    const handler = handlers[req.request.command];
    if (!handler) {
      reply(errorReply(req.request.id, { code: 'unknown_command', message: `the simulator does not do ${req.request.command}` }));
      return;
    }
    handler(req.request.params).then(
      (data) => reply(okReply(req.request, data)),
      (error) => reply(errorReply(req.request.id, error instanceof FleetError ? error.toJSON() : { code: 'internal', message: error.message })),
    );
  });
  // A CONNECT can wait long for the broker's scrypt check while a thousand arrive: MQTT.js retries it.
  client.on('error', () => {});
  await new Promise((resolve) => client.once('connect', resolve));
  // As the real agent does: commands at QoS 1, chunks at QoS 0 (a lost chunk is asked for again by transfer.status).
  await client.subscribeAsync({
    [topics.device(d.id, 'commands')]: { qos: 1 },
    [topics.group(opts.group, 'commands')]: { qos: 1 },
    [topics.transferFilter({ kind: 'device', name: d.id })]: { qos: 0 },
    [topics.transferFilter({ kind: 'group', name: opts.group })]: { qos: 0 },
  });
  publishStatus();
  devices.set(d.id, { client, receiver, dataDir, models });
}

process.on('message', async (msg) => {
  if (msg.type === 'start') {
    // Connect in small batches: each CONNECT costs the broker one scrypt verification.
    const list = msg.devices;
    for (let i = 0; i < list.length; i += 50) await Promise.all(list.slice(i, i + 50).map((d) => startDevice(d, msg)));
    process.send({ type: 'ready', count: devices.size });
  } else if (msg.type === 'verify') {
    const bad = [];
    for (const [id, d] of devices) {
      const active = d.models.active().find((m) => m.name === msg.model);
      let ok = active?.version === msg.version;
      if (ok) {
        const bytes = await readFile(join(d.dataDir, 'models', msg.model, String(msg.version), 'model.onnx'));
        ok = createHash('sha256').update(bytes).digest('hex') === msg.sha256;
      }
      if (!ok) bad.push(id);
    }
    process.send({ type: 'verified', count: devices.size, bad });
  } else if (msg.type === 'stop') {
    await Promise.all([...devices.values()].map(async (d) => {
      await d.receiver.close();
      await d.client.endAsync(true);
    }));
    process.exit(0);
  }
});
