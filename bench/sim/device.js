/**
 * One simulated device: the agent's own parts without onnxruntime. Its MQTT connection is
 * the agent's DeviceConnection (its own credential, client id = device id, persistent
 * session, retained last will "offline", reconnects with exponential backoff and full
 * jitter); requests go through the agent's Dispatcher (one reply each, deadlines,
 * duplicates answered once); transfers go to the agent's real receiver (signed manifest,
 * target, expiry, per-chunk and whole-file sha256, staging file, commit); telemetry goes
 * through the agent's TelemetryFlusher (in order, a sample leaves the buffer only once the
 * broker acknowledged it). What is simulated: the model store (files moved into place,
 * versions in memory, no inference) and the telemetry buffer (in memory, not on disk).
 */
import { mkdir, readFile, rename } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { FleetError, makeStatus, makeTelemetry, parseTopic, topics } from '@edgefleet/protocol';
import { DeviceConnection, Dispatcher, TelemetryFlusher, createTransferReceiver, makeConfig } from '@edgefleet/device-agent';

/** The smallest model store the receiver needs: files moved into place, versions in memory. */
export function fileModels(dataDir) {
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
    /** sha256 of the installed file of the active version, or null. */
    async activeSha256(name) {
      const s = state.get(name);
      if (!s || s.active === null) return null;
      const bytes = await readFile(join(dataDir, 'models', name, String(s.active), 'model.onnx'));
      return { version: s.active, sha256: createHash('sha256').update(bytes).digest('hex') };
    },
  };
}

/** The agent's telemetry buffer, in memory: same sequence numbers, same order, same acknowledgement rule. */
export class MemoryTelemetryQueue {
  #entries = [];
  #seq = 0;
  async append(sample) {
    const message = makeTelemetry(this.#seq++, 0, sample);
    this.#entries.push(message);
    return message;
  }
  peek(n) {
    return this.#entries.slice(0, n);
  }
  async ack(seq) {
    let k = 0;
    while (k < this.#entries.length && this.#entries[k].seq <= seq) k++;
    this.#entries.splice(0, k);
  }
  get size() {
    return this.#entries.length;
  }
  get nextSeq() {
    return this.#seq;
  }
  async close() {}
}

const SILENT = { level: 'silent', child: () => SILENT, trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {} };

export class SimDevice {
  /**
   * @param {{id:string, token:string, groups:string[]}} cred
   * @param {{broker:string, publicKeyPem:string, dataRoot:string, models:number, keepaliveS?:number, reconnectMinMs?:number, reconnectMaxMs?:number, onConnect?:(d:SimDevice)=>void}} opts
   */
  constructor(cred, opts) {
    this.id = cred.id;
    this.groups = cred.groups;
    this.opts = opts;
    this.dataDir = join(opts.dataRoot, cred.id);
    this.models = fileModels(this.dataDir);
    this.connects = 0;
    this.published = 0;
    this.queue = new MemoryTelemetryQueue();
    this.config = makeConfig({
      device: cred.id,
      token: cred.token,
      broker: opts.broker,
      groups: cred.groups,
      dataDir: this.dataDir,
      http: false,
      keepaliveS: opts.keepaliveS ?? 30,
      reconnectMinMs: opts.reconnectMinMs ?? 1000,
      reconnectMaxMs: opts.reconnectMaxMs ?? 60_000,
    });
    this.link = new DeviceConnection(this.config, SILENT, { onConnected: (c) => this.#onConnected(c), onMessage: (t, p) => this.#onMessage(t, p) });
    this.receiver = createTransferReceiver({
      dataDir: this.dataDir,
      publicKeyPem: opts.publicKeyPem,
      identity: { id: cred.id, groups: cred.groups, arch: process.arch },
      models: this.models,
      publishEvent: (e) => this.link.publishJson(topics.device(this.id, 'events'), e).catch(() => undefined), // progress is advisory
      logger: SILENT,
      progressIntervalMs: 1000,
    });
    this.dispatcher = new Dispatcher({
      handlers: this.#handlers(),
      logger: SILENT,
      send: (reply) => this.link.publishJson(topics.device(this.id, 'replies'), reply),
    });
    this.flusher = new TelemetryFlusher(this.queue, (m) => this.link.publishJson(topics.device(this.id, 'telemetry'), m).then(() => void this.published++), () => this.link.connected, SILENT);
    this.simModels = Array.from({ length: opts.models ?? 0 }, (_, k) => `sim-model-${k}@1`);
  }

  #handlers() {
    return {
      ping: async () => ({ pong: true, uptimeS: process.uptime() }),
      info: async () => this.info(),
      'models.list': async () => ({ models: this.models.list() }),
      'transfer.offer': (p) => this.receiver.offer(p),
      'transfer.status': (p) => this.receiver.status(p),
      'transfer.commit': async (p) => {
        const r = await this.receiver.commit(p);
        void this.publishStatus();
        return r;
      },
    };
  }

  info() {
    return {
      agentVersion: 'sim',
      hostname: this.id,
      arch: process.arch,
      platform: process.platform,
      cpus: 4,
      memoryBytes: 4 * 1024 ** 3,
      onnxruntime: { version: '1.30.0', executionProviders: ['cpu'] },
      docker: false,
      groups: this.groups,
      models: [...this.models.active(), ...this.simModels.map((key) => ({ name: key.split('@')[0], version: 1 }))],
    };
  }

  /** A sample as the agent's sampler makes it (`ts` is when it was taken: the latency clock starts there). */
  sample() {
    const models = {};
    for (const key of this.simModels) models[key] = { requests: 20, errors: 0, p50Ms: 1.2, p95Ms: 2.5, p99Ms: 3.1 };
    return {
      ts: Date.now(),
      cpuPercent: 12.5,
      load: [0.2, 0.3, 0.25],
      memoryUsedBytes: 1_200_000_000,
      memoryTotalBytes: 4 * 1024 ** 3,
      diskFreeBytes: 20_000_000_000,
      temperatureC: 48.5,
      uptimeS: Math.round(process.uptime()),
      models,
    };
  }

  start() {
    this.link.connect();
  }

  /** Takes a sample and flushes (TelemetryFlusher.takeSample: buffered while offline, sent in order). */
  tick() {
    return this.flusher.takeSample(async () => this.sample());
  }

  publishStatus() {
    if (!this.link.connected) return Promise.resolve();
    return this.link.publishJson(topics.device(this.id, 'status'), makeStatus(this.info()), true).catch(() => undefined); // republished on the next connect
  }

  async #onConnected(c) {
    this.connects++;
    this.opts.onConnect?.(this);
    // as the agent: commands at QoS 1, chunk topics at QoS 0 (a missing chunk is asked for again)
    const filters = { [topics.device(this.id, 'commands')]: { qos: 1 }, [topics.transferFilter({ kind: 'device', name: this.id })]: { qos: 0 } };
    for (const g of this.groups) {
      filters[topics.group(g, 'commands')] = { qos: 1 };
      filters[topics.transferFilter({ kind: 'group', name: g })] = { qos: 0 };
    }
    await c.subscribeAsync(filters);
    await this.publishStatus();
    await this.flusher.flush();
  }

  #onMessage(topic, payload) {
    const parsed = parseTopic(topic);
    if (parsed?.kind === 'transfer') {
      try {
        this.receiver.chunk(parsed.transferId, parsed.index, payload);
      } catch {
        // the receiver counts and reports what it refuses; a simulator has no log to write it to
      }
      return;
    }
    void this.dispatcher.handle(payload);
  }

  async stop(reason = 'simulator stopped') {
    this.flusher.stop();
    this.link.stopReconnecting();
    this.dispatcher.close();
    await this.receiver.close().catch(() => undefined); // closing anyway
    await this.link.close(reason);
  }

  /** Drops the connection without a goodbye (the broker publishes the last will), for fault scenarios. */
  kill() {
    this.flusher.stop();
    this.link.stopReconnecting();
    this.link.client?.stream?.destroy();
    this.link.client?.end(true);
  }
}
