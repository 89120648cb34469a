/**
 * npm run bench:inference
 *
 * The same small model and the same inputs through
 *   1. a bare onnxruntime-node session.run in this process (the baseline),
 *   2. the agent's local HTTP API (keep-alive),
 *   3. MQTT request/response (the host manager's requester → broker → agent → broker → requester),
 * with the broker and the agent each in their own process. Sequential p50/p99 latency and
 * concurrent throughput (IN_FLIGHT requests in flight), printed as one JSON object per result,
 * then a summary with the overheads against the baseline. Outputs are checked equal to the
 * baseline's before any timing counts.
 *
 * Env: SEQ (sequential requests per path, default 2000), CONC (concurrent requests, default 4000),
 * IN_FLIGHT (default 16), THREADS (intra-op threads for both the baseline and the agent, default cores-1),
 * AGENT_PROF=<dir> (write a V8 CPU profile of the agent process there).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { ManifestSchema, chunkHashes, sha256Hex } from '@edgefleet/protocol';
import { createRequester } from '@edgefleet/host-manager';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { createModelService, encodeTensor } = await import('@edgefleet/device-agent');

const SEQ = Number(process.env.SEQ ?? 2000);
const CONC = Number(process.env.CONC ?? 4000);
const IN_FLIGHT = Number(process.env.IN_FLIGHT ?? 16);
const THREADS = Number(process.env.THREADS ?? Math.max(1, availableParallelism() - 1));
/** The models compared: a small one (overhead dominates) and a compute-bound one (inference dominates). */
const MODELS = [
  { name: 'mlp-small', in: 64, hidden: 128, out: 10, batch: 1, seq: SEQ, conc: CONC },
  { name: 'mlp-deep', in: 256, hidden: 1024, out: 10, layers: 6, batch: 4, seq: Math.ceil(SEQ / 10), conc: Math.ceil(CONC / 10) },
];
const DEVICE = { id: 'bench-device', token: 'bench-device-token-0001' };
const OPERATOR = { id: 'bench-op', token: 'bench-operator-token-01' };

// ------------------------------------------------------------------ the model: a small MLP, x[batch,64] → y[batch,10]

function seeded(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

/** x[batch,in] → (MatMul, Add, Relu) × (1 + layers) → MatMul, Add → y[batch,out]. */
function buildModel({ in: IN, hidden: HIDDEN, out: OUT, layers = 0 }) {
  const { onnx } = onnxProto;
  const T = onnx.TensorProto.DataType;
  const rnd = seeded(7);
  const scale = 1 / Math.sqrt(HIDDEN);
  const tensor = (name, dims) => {
    const data = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => rnd() * scale);
    return { name, dims, dataType: T.FLOAT, rawData: new Uint8Array(data.buffer) };
  };
  const vi = (name, shape) => ({
    name,
    type: { tensorType: { elemType: T.FLOAT, shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  });
  const node = (opType, input, output) => ({ opType, input, output, name: `${opType}_${output[0]}` });
  const initializer = [];
  const nodes = [];
  let prev = 'x';
  const dense = (k, from, to, relu) => {
    initializer.push(tensor(`W${k}`, [from, to]), tensor(`b${k}`, [to]));
    nodes.push(node('MatMul', [prev, `W${k}`], [`m${k}`]));
    const out = relu ? `a${k}` : 'y';
    nodes.push(node('Add', [`m${k}`, `b${k}`], [relu ? `z${k}` : out]));
    if (relu) nodes.push(node('Relu', [`z${k}`], [out]));
    prev = out;
  };
  dense(0, IN, HIDDEN, true);
  for (let k = 1; k <= layers; k++) dense(k, HIDDEN, HIDDEN, true);
  dense(layers + 1, HIDDEN, OUT, false);
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'edgefleet-bench',
    opsetImport: [{ domain: '', version: 13 }],
    graph: { name: 'mlp', input: [vi('x', ['batch', IN])], output: [vi('y', ['batch', OUT])], initializer, node: nodes },
  });
  return Buffer.from(onnx.ModelProto.encode(model).finish());
}

// ------------------------------------------------------------------ helpers

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * Sequential latency of every path, interleaved (bare, http, mqtt, bare, ...) so that a change in
 * machine load hits all of them alike.
 */
async function sequential(model, n, paths) {
  const names = Object.keys(paths);
  const times = Object.fromEntries(names.map((k) => [k, []]));
  for (let i = 0; i < 20; i++) for (const k of names) await paths[k](i); // warm-up
  for (let i = 0; i < n; i++) {
    for (const k of names) {
      const t0 = process.hrtime.bigint();
      await paths[k](i);
      times[k].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  const out = {};
  for (const k of names) {
    const t = times[k].sort((a, b) => a - b);
    out[k] = { result: 'sequential', model, path: k, requests: n, p50Ms: round(percentile(t, 50)), p99Ms: round(percentile(t, 99)), meanMs: round(t.reduce((a, b) => a + b, 0) / n) };
    console.log(JSON.stringify(out[k]));
  }
  return out;
}

/** Throughput with `inFlight` requests in flight, in `rounds` alternating rounds per path (load drift hits all alike). */
async function concurrent(model, n, inFlight, paths, rounds = 5) {
  const names = Object.keys(paths);
  const acc = Object.fromEntries(names.map((k) => [k, { done: 0, seconds: 0 }]));
  const per = Math.ceil(n / rounds);
  for (let r = 0; r < rounds; r++) {
    for (const k of names) {
      let next = 0;
      const t0 = process.hrtime.bigint();
      await Promise.all(
        Array.from({ length: inFlight }, async () => {
          while (next < per) {
            const i = next++;
            await paths[k](i);
            acc[k].done++;
          }
        }),
      );
      acc[k].seconds += Number(process.hrtime.bigint() - t0) / 1e9;
    }
  }
  const out = {};
  for (const k of names) {
    out[k] = { result: 'concurrent', model, path: k, requests: acc[k].done, inFlight, rounds, seconds: round(acc[k].seconds), perSecond: Math.round(acc[k].done / acc[k].seconds) };
    console.log(JSON.stringify(out[k]));
  }
  return out;
}

const round = (v) => Math.round(v * 1000) / 1000;

function spawnNode(args, env) {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 100_000) stderr = stderr.slice(-50_000);
  });
  child.stderrText = () => stderr;
  return child;
}

async function firstLine(stream, match, timeoutMs, describe) {
  let buf = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${describe}`)), timeoutMs);
    const onData = (d) => {
      buf += d;
      for (const line of buf.split('\n')) {
        const m = match(line);
        if (m !== undefined) {
          clearTimeout(timer);
          stream.off('data', onData);
          resolve(m);
          return;
        }
      }
    };
    stream.on('data', onData);
  });
}

const tryJson = (line) => {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
};

// ------------------------------------------------------------------ main

const sessionOptions = {
  intraOpNumThreads: THREADS,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
  extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
};

const prepared = MODELS.map((m) => {
  const rnd = seeded(11);
  const bytes = buildModel(m);
  const inputs = Array.from({ length: 32 }, () => Array.from({ length: m.batch * m.in }, () => Math.round(rnd() * 1000) / 250));
  return { ...m, bytes, inputs, tensorInput: (i) => ({ x: { dtype: 'float32', shape: [m.batch, m.in], data: inputs[i % inputs.length] } }) };
});

const dataDir = await mkdtemp(join(tmpdir(), 'bench-inference-'));
const children = [];
const cleanup = async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await rm(dataDir, { recursive: true, force: true });
};
try {
  // the models installed in the agent's data directory, as a finished transfer leaves them
  const svc = await createModelService({ dataDir, threads: THREADS, logger: pino({ level: 'silent' }) });
  for (const m of prepared) {
    const manifest = ManifestSchema.parse({
      kind: 'model', name: m.name, version: 1, sha256: sha256Hex(m.bytes), length: m.bytes.length,
      issuedAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 86_400_000).toISOString(),
      target: { devices: [DEVICE.id] }, chunking: { size: 262144, sha256: chunkHashes(m.bytes, 262144) },
    });
    await writeFile(join(dataDir, 'staged.onnx'), m.bytes);
    await svc.install(manifest, join(dataDir, 'staged.onnx'));
    await svc.activate(m.name, 1);
  }
  await svc.close();

  // broker in its own process
  // BROKER_NODELAY=1 forces TCP_NODELAY on the broker's accepted sockets (to compare with a broker that lacks it)
  const noDelayPatch = process.env.BROKER_NODELAY === '1'
    ? `import net from 'node:net'; import { syncBuiltinESMExports } from 'node:module';
       const original = net.createServer;
       net.createServer = (...args) => original(...args).on('connection', (s) => s.setNoDelay(true));
       syncBuiltinESMExports();`
    : '';
  const brokerScript = `${noDelayPatch}
    const { createBroker, staticCredentials } = await import(${JSON.stringify(import.meta.resolve('@edgefleet/broker'))});
    const { hashSecret } = await import(${JSON.stringify(import.meta.resolve('@edgefleet/node-io'))});
    const b = await createBroker({ tcp: { host: '127.0.0.1', port: 0 }, credentials: staticCredentials([
      { role: 'device', id: ${JSON.stringify(DEVICE.id)}, groups: [], secretHash: hashSecret(process.env.DEVICE_TOKEN) },
      { role: 'operator', id: ${JSON.stringify(OPERATOR.id)}, groups: [], secretHash: hashSecret(process.env.OPERATOR_TOKEN) } ]) });
    console.log(JSON.stringify({ url: b.url }));
    process.on('SIGTERM', () => b.close().then(() => process.exit(0)));`;
  const brokerProc = spawnNode(['--input-type=module', '-e', brokerScript], { DEVICE_TOKEN: DEVICE.token, OPERATOR_TOKEN: OPERATOR.token });
  children.push(brokerProc);
  const brokerUrl = await firstLine(brokerProc.stdout, (l) => tryJson(l)?.url, 15_000, 'the broker');

  // agent in its own process
  const agentProc = spawnNode(
    [...(process.env.AGENT_PROF ? ['--cpu-prof', '--cpu-prof-dir=' + process.env.AGENT_PROF] : []), join(ROOT, 'device-agent/dist/bin/deviceAgent.js'), '--broker', brokerUrl, '--device', DEVICE.id, '--data-dir', dataDir,
      '--http-port', '0', '--inference-threads', String(THREADS), '--telemetry-interval-ms', '60000', '--log-level', 'info'],
    { EDGEFLEET_DEVICE_TOKEN: DEVICE.token },
  );
  children.push(agentProc);
  const httpPort = await firstLine(agentProc.stderr, (l) => {
    const j = tryJson(l);
    return j?.msg === 'HTTP inference API listening' ? j.port : undefined;
  }, 20_000, 'the agent HTTP API');

  // HTTP client with keep-alive
  const agent = new http.Agent({ keepAlive: true, maxSockets: IN_FLIGHT });
  const viaHttp = (model, inputs) =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify({ inputs });
      const req = http.request(
        { host: '127.0.0.1', port: httpPort, path: `/models/${model}`, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            const json = JSON.parse(Buffer.concat(chunks).toString());
            if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}: ${JSON.stringify(json)}`));
            else resolve(json.outputs);
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });

  // MQTT operator with the host manager's requester
  const op = mqtt.connect(brokerUrl, { clientId: `${OPERATOR.id}-1`, username: OPERATOR.id, password: OPERATOR.token, protocolVersion: 4 });
  await once(op, 'connect');
  op.stream.setNoDelay?.(true);
  const requester = await createRequester(op);
  const viaMqtt = async (model, inputs) => (await requester.request(DEVICE.id, 'infer', { model, inputs }, 60_000)).outputs;
  // the agent is ready once it answers
  for (let tries = 0; ; tries++) {
    try {
      await requester.request(DEVICE.id, 'ping', {}, 2000);
      break;
    } catch (error) {
      if (tries > 10) throw error;
    }
  }

  const summary = { result: 'summary', targets: 'at most 1 ms added at p50 (small model); at least 0.9x bare throughput under concurrent load' };
  for (const m of prepared) {
    const session = await ort.InferenceSession.create(m.bytes, sessionOptions);
    const bare = async (i) => {
      const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from(m.inputs[i % m.inputs.length]), [m.batch, m.in]) });
      return { y: encodeTensor(out.y) };
    };
    const http = (i) => viaHttp(m.name, m.tensorInput(i));
    const mq = (i) => viaMqtt(m.name, m.tensorInput(i));
    // verify before timing: every path gives the baseline's outputs, exactly
    for (let i = 0; i < m.inputs.length; i++) {
      const want = JSON.stringify(await bare(i));
      const h = JSON.stringify(await http(i));
      const q = JSON.stringify(await mq(i));
      if (h !== want || q !== want) throw new Error(`${m.name}: output mismatch on input ${i}`);
    }
    console.log(JSON.stringify({
      result: 'setup', model: m.name, shape: `MLP ${m.in}-${m.hidden}x${1 + (m.layers ?? 0)}-${m.out} float32, batch ${m.batch}`, bytes: m.bytes.length, threads: THREADS,
      layout: 'bare session in the bench process; broker and agent each in their own process; loopback; JSON tensors; paths interleaved',
      verified: `${m.inputs.length} inputs: HTTP and MQTT outputs equal the bare session's exactly`,
      sequentialRequests: m.seq, concurrentRequests: m.conc, inFlight: IN_FLIGHT,
    }));
    const paths = { bare, http, mqtt: mq };
    const seq = await sequential(m.name, m.seq, paths);
    const conc = await concurrent(m.name, m.conc, IN_FLIGHT, paths);
    // the baseline's best throughput: concurrent runs on one session can be slower than back-to-back ones
    const bareSequentialPerSecond = Math.round(1000 / seq.bare.meanMs);
    const bareBest = Math.max(conc.bare.perSecond, bareSequentialPerSecond);
    summary[m.name] = { bareP50Ms: seq.bare.p50Ms, barePerSecond: { concurrent: conc.bare.perSecond, sequential: bareSequentialPerSecond } };
    for (const path of ['http', 'mqtt']) {
      summary[m.name][path] = {
        addedP50Ms: round(seq[path].p50Ms - seq.bare.p50Ms),
        addedP99Ms: round(seq[path].p99Ms - seq.bare.p99Ms),
        perSecond: conc[path].perSecond,
        throughputVsBestBare: round(conc[path].perSecond / bareBest),
      };
    }
    await session.release();
  }
  console.log(JSON.stringify(summary));

  requester.close();
  await op.endAsync();
  agent.destroy();
  agentProc.kill('SIGTERM');
  await once(agentProc, 'exit');
  brokerProc.kill('SIGTERM');
  await once(brokerProc, 'exit');
} catch (error) {
  for (const c of children) process.stderr.write(c.stderrText().slice(-3000));
  throw error;
} finally {
  await cleanup();
}
