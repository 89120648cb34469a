/**
 * npm run bench:inference
 *
 * The same models and inputs through
 *   1. a bare onnxruntime-node session.run in this process (the baseline),
 *   2. the agent's local HTTP API with JSON tensors (`/models/{name}`, keep-alive),
 *   3. the agent's Open Inference Protocol API with binary tensors (`/v2/models/{name}/infer`,
 *      binary inputs and outputs, Inference-Header-Content-Length),
 *   4. MQTT request/response with binary tensors (framed payloads: JSON envelope + raw bytes),
 *   5. MQTT with JSON tensors (the host manager's requester; the MLPs only: the conv model's JSON is
 *      larger than any sensible broker packet),
 *   6. the transport floor: the same request bytes over HTTP to a server in its own process that only
 *      reads them and answers as many bytes as the model's output (no inference, no parsing): the part
 *      of the binary path no agent can avoid on this machine,
 * with the broker and the agent each in their own process. Models: a small MLP (overhead dominates), a
 * deep MLP (inference dominates), and a convolutional model with a real-size [1,3,640,640] float32 input
 * (a detector-like backbone: 4 MB in, 2 MB out). Sequential p50/p99 latency (paths interleaved) and, for
 * the MLPs, concurrent throughput (for the conv model this process collects its garbage between timed
 * requests, so one path's megabytes are not collected during the next one's); one JSON object per result, then a summary with each path's overhead
 * against the baseline and the targets. Every path's outputs are checked equal to the baseline's
 * (byte for byte for binary outputs) before any timing counts.
 *
 * Env: SEQ (sequential requests per path for the small MLP, default 2000; the deep MLP runs SEQ/10, the
 * conv model CONV_SEQ, default 60, and its JSON path, run after the others, CONV_SEQ/6), CONC (concurrent requests, default 4000), IN_FLIGHT (default 16),
 * THREADS (intra-op threads for both the baseline and the agent, default cores-1), ONLY=conv (run only
 * models whose name contains that text), PATHS=bare,oip-binary (run only those paths), AGENT_PROF=<dir>
 * (a V8 CPU profile of the agent process).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { ManifestSchema, OIP_DATATYPE, chunkHashes, encodeFramed, makeRequest, parseReplyPayload, sha256Hex, topics } from '@edgefleet/protocol';
import { createRequester } from '@edgefleet/host-manager';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc'); // a full collection on demand, between timed requests
const { createModelService, encodeTensor } = await import('@edgefleet/device-agent');

const SEQ = Number(process.env.SEQ ?? 2000);
const CONC = Number(process.env.CONC ?? 4000);
const CONV_SEQ = Number(process.env.CONV_SEQ ?? 60);
const IN_FLIGHT = Number(process.env.IN_FLIGHT ?? 16);
const THREADS = Number(process.env.THREADS ?? Math.max(1, availableParallelism() - 1));
/** The models compared: a small one (overhead dominates), a compute-bound one, and a real-size vision input. */
const MODELS = [
  { name: 'mlp-small', kind: 'mlp', in: 64, hidden: 128, out: 10, batch: 1, seq: SEQ, conc: CONC },
  { name: 'mlp-deep', kind: 'mlp', in: 256, hidden: 1024, out: 10, layers: 6, batch: 4, seq: Math.ceil(SEQ / 10), conc: Math.ceil(CONC / 10) },
  { name: 'conv-640', kind: 'conv', channels: [3, 16, 32, 64], head: 85, size: 640, seq: CONV_SEQ, jsonSeq: Math.max(5, Math.ceil(CONV_SEQ / 6)), conc: 0 },
].filter((m) => !process.env.ONLY || m.name.includes(process.env.ONLY));
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

/**
 * x[1,3,S,S] → (Conv 3×3 stride 2 + Relu) for each step of `channels` → Conv 1×1 to `head` channels →
 * y[1,head,S/8,S/8]: the shape of a detector's backbone and head, its weights fixed by a seed.
 */
function buildConv({ channels, head, size }) {
  const { onnx } = onnxProto;
  const T = onnx.TensorProto.DataType;
  const rnd = seeded(13);
  const tensor = (name, dims, scale) => {
    const data = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => rnd() * scale);
    return { name, dims, dataType: T.FLOAT, rawData: new Uint8Array(data.buffer) };
  };
  const vi = (name, shape) => ({ name, type: { tensorType: { elemType: T.FLOAT, shape: { dim: shape.map((d) => ({ dimValue: d })) } } } });
  const ints = (name, v) => ({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: v });
  const initializer = [];
  const nodes = [];
  let prev = 'x';
  for (let k = 0; k + 1 < channels.length; k++) {
    const [cin, cout] = [channels[k], channels[k + 1]];
    initializer.push(tensor(`W${k}`, [cout, cin, 3, 3], 2 / Math.sqrt(cin * 9)), tensor(`B${k}`, [cout], 0.1));
    nodes.push({ opType: 'Conv', input: [prev, `W${k}`, `B${k}`], output: [`c${k}`], name: `conv${k}`, attribute: [ints('kernel_shape', [3, 3]), ints('strides', [2, 2]), ints('pads', [1, 1, 1, 1])] });
    nodes.push({ opType: 'Relu', input: [`c${k}`], output: [`r${k}`], name: `relu${k}` });
    prev = `r${k}`;
  }
  const last = channels[channels.length - 1];
  initializer.push(tensor('Wh', [head, last, 1, 1], 1 / Math.sqrt(last)), tensor('Bh', [head], 0.1));
  nodes.push({ opType: 'Conv', input: [prev, 'Wh', 'Bh'], output: ['y'], name: 'head', attribute: [ints('kernel_shape', [1, 1])] });
  const out = size / 2 ** (channels.length - 1);
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'edgefleet-bench',
    opsetImport: [{ domain: '', version: 13 }],
    graph: { name: 'conv', input: [vi('x', [1, channels[0], size, size])], output: [vi('y', [1, head, out, out])], initializer, node: nodes },
  });
  return Buffer.from(onnx.ModelProto.encode(model).finish());
}

// ------------------------------------------------------------------ helpers

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * Sequential latency of every path, interleaved (bare, http, mqtt, http, mqtt, bare, ...) so that a
 * change in machine load hits all of them alike.
 */
async function sequential(model, n, paths, collect = false) {
  const names = Object.keys(paths);
  const times = Object.fromEntries(names.map((k) => [k, []]));
  for (let i = 0; i < Math.min(20, Math.ceil(n / 4)); i++) for (const k of names) await paths[k](i); // warm-up
  for (let i = 0; i < n; i++) {
    // the order rotates, so each path follows each other path equally often (what one leaves behind, e.g.
    // the broker's work after a large MQTT reply, does not always land on the same next path)
    const order = [...names.slice(i % names.length), ...names.slice(0, i % names.length)];
    for (const k of order) {
      // with megabytes of garbage per request, this process's collections would land in whichever path runs
      // next; collect between requests instead (the agent's own collections during a request stay in its timing)
      // and let the other processes finish what the previous request left them (acks, their collections)
      if (collect) {
        gc();
        await sleep(10);
      }
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

// ------------------------------------------------------------------ the clients of each path

/** POST with keep-alive, the body written in parts (no concatenation); resolves with status, headers and body. */
function post(agent, port, path, headers, parts) {
  return new Promise((resolve, reject) => {
    const length = parts.reduce((sum, p) => sum + p.byteLength, 0);
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent, headers: { ...headers, 'content-length': length } }, (res) => {
      // one buffer sized by Content-Length, each chunk copied in once
      const body = Buffer.allocUnsafe(Number(res.headers['content-length']));
      let offset = 0;
      res.on('data', (c) => (offset += c.copy(body, offset)));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: body.subarray(0, offset) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    for (let i = 0; i < parts.length - 1; i++) req.write(parts[i]);
    req.end(parts[parts.length - 1]);
  });
}

/** The Open Inference Protocol request for input x: FP32 binary in, binary out. */
const oipHeader = (m) => ({ inputs: [{ name: 'x', datatype: OIP_DATATYPE.float32, shape: m.shape, parameters: { binary_data_size: m.inputs[0].byteLength } }], parameters: { binary_data_output: true } });
const bytesOf = (x) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

/** The y output's bytes in an answer whose outputs are binary. */
function binaryY(header, binary) {
  let offset = 0;
  for (const o of header.outputs) {
    const size = o.parameters?.binary_data_size;
    if (o.name === 'y') return binary.subarray(offset, offset + size);
    offset += size ?? 0;
  }
  throw new Error(`no binary output y in ${JSON.stringify(header).slice(0, 200)}`);
}

async function connectClients(brokerUrl, httpPort, floorPort) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: IN_FLIGHT });
  const httpJson = async (m, i) => {
    const r = await post(agent, httpPort, `/models/${m.name}`, { 'content-type': 'application/json' }, [Buffer.from(JSON.stringify({ inputs: m.tensorInput(i) }))]);
    const json = JSON.parse(r.body.toString());
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(json)}`);
    return json.outputs.y;
  };
  const headers = new Map();
  const oipBinary = async (m, i) => {
    if (!headers.has(m.name)) headers.set(m.name, Buffer.from(JSON.stringify(oipHeader(m))));
    const header = headers.get(m.name);
    const r = await post(agent, httpPort, `/v2/models/${m.name}/infer`, { 'content-type': 'application/octet-stream', 'inference-header-content-length': header.byteLength }, [header, bytesOf(m.inputs[i % m.inputs.length])]);
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body.toString().slice(0, 300)}`);
    const length = Number(r.headers['inference-header-content-length']);
    return binaryY(JSON.parse(r.body.subarray(0, length).toString()), r.body.subarray(length));
  };
  const floor = async (m, i, answerBytes) => {
    const header = headers.get(m.name) ?? Buffer.from(JSON.stringify(oipHeader(m)));
    const r = await post(agent, floorPort, '/', { 'content-type': 'application/octet-stream', 'inference-header-content-length': header.byteLength, 'x-answer-bytes': answerBytes }, [header, bytesOf(m.inputs[i % m.inputs.length])]);
    return r.body.subarray(Number(r.headers['inference-header-content-length']));
  };
  // MQTT with JSON tensors: the host manager's requester
  const op = mqtt.connect(brokerUrl, { clientId: `${OPERATOR.id}-1`, username: OPERATOR.id, password: OPERATOR.token, protocolVersion: 4 });
  await once(op, 'connect');
  op.stream.setNoDelay?.(true);
  const requester = await createRequester(op);
  const mqttJson = async (m, i) => (await requester.request(DEVICE.id, 'infer', { model: m.name, inputs: m.tensorInput(i) }, 60_000)).outputs.y;
  // MQTT with binary tensors: framed payloads, on a connection of its own (the requester would try each reply as JSON)
  const bin = mqtt.connect(brokerUrl, { clientId: `${OPERATOR.id}-2`, username: OPERATOR.id, password: OPERATOR.token, protocolVersion: 4 });
  await once(bin, 'connect');
  bin.stream.setNoDelay?.(true);
  const pending = new Map();
  bin.on('message', (_topic, payload) => {
    const { reply, binary } = parseReplyPayload(payload);
    const p = pending.get(reply.corr);
    if (!p) return;
    pending.delete(reply.corr);
    if (reply.status === 'ok') p.resolve(binaryY(reply.data, binary));
    else p.reject(new Error(`${reply.error.code}: ${reply.error.message}`));
  });
  await bin.subscribeAsync(topics.device(DEVICE.id, 'replies'), { qos: 1 });
  const mqttBinary = (m, i) =>
    new Promise((resolve, reject) => {
      const request = makeRequest('infer', { model: m.name, ...oipHeader(m) }, 60_000);
      pending.set(request.id, { resolve, reject });
      bin.publishAsync(topics.device(DEVICE.id, 'commands'), encodeFramed(request, [bytesOf(m.inputs[i % m.inputs.length])]), { qos: 1 }).catch(reject);
    });
  // the agent is ready once it answers
  for (let tries = 0; ; tries++) {
    try {
      await requester.request(DEVICE.id, 'ping', {}, 2000);
      break;
    } catch (error) {
      if (tries > 10) throw error;
    }
  }
  return {
    httpJson,
    oipBinary,
    floor,
    mqttJson,
    mqttBinary,
    async close() {
      requester.close();
      await op.endAsync();
      await bin.endAsync();
      agent.destroy();
    },
  };
}

/** Verifies every path against the bare session, then times them: sequential (interleaved), and concurrent for the MLPs. */
async function benchModel(m, clients) {
  const session = await ort.InferenceSession.create(m.bytes, sessionOptions);
  const bare = async (i) => (await session.run({ x: new ort.Tensor('float32', m.inputs[i % m.inputs.length], m.shape) })).y;
  const paths = {
    bare,
    'http-json': (i) => clients.httpJson(m, i),
    'oip-binary': (i) => clients.oipBinary(m, i),
    'mqtt-binary': (i) => clients.mqttBinary(m, i),
    ...(m.kind === 'mlp' ? { 'mqtt-json': (i) => clients.mqttJson(m, i) } : {}),
  };
  // PATHS=bare,oip-binary keeps only those paths (e.g. to profile one)
  for (const name of Object.keys(paths)) if (process.env.PATHS && name !== 'bare' && !process.env.PATHS.split(',').includes(name)) delete paths[name];
  // verify before timing: JSON paths give the bare session's outputs exactly, binary paths its bytes
  for (let i = 0; i < m.inputs.length; i++) {
    const want = await bare(i);
    const wantJson = JSON.stringify(encodeTensor(want));
    const wantBytes = bytesOf(want.data);
    for (const [name, path] of Object.entries(paths)) {
      if (name === 'bare') continue;
      const got = await path(i);
      const same = name.endsWith('binary') ? Buffer.compare(got, wantBytes) === 0 : JSON.stringify(got) === wantJson;
      if (!same) throw new Error(`${m.name}: ${name} output differs from the bare session's on input ${i}`);
    }
  }
  const answerBytes = (await bare(0)).data.byteLength;
  if ((await clients.floor(m, 0, answerBytes)).byteLength !== answerBytes) throw new Error('the transport floor server answered the wrong size');
  if (!process.env.PATHS || process.env.PATHS.split(',').includes('transport-floor')) paths['transport-floor'] = (i) => clients.floor(m, i, answerBytes);
  console.log(JSON.stringify({
    result: 'setup', model: m.name,
    shape: m.kind === 'conv' ? `conv ${m.channels.join('→')} (3x3 stride 2) → ${m.head} (1x1), x float32 [${m.shape}] (${m.inputs[0].byteLength} B)` : `MLP ${m.in}-${m.hidden}x${1 + (m.layers ?? 0)}-${m.out} float32, batch ${m.batch}`,
    bytes: m.bytes.length, threads: THREADS,
    layout: 'bare session in the bench process; broker and agent each in their own process; loopback; paths interleaved',
    verified: `${m.inputs.length} inputs: every path's outputs equal the bare session's exactly (binary paths byte for byte); transport-floor (no inference: the same request bytes to a server that only answers ${answerBytes} bytes) answers that many`,
    sequentialRequests: m.seq, concurrentRequests: m.conc, inFlight: IN_FLIGHT,
  }));
  // The conv model's JSON path makes ~30 MB of garbage per request in both processes; interleaved, its
  // collections would land in the other paths' timings, so it runs after them, with fewer requests.
  const apart = m.kind === 'conv' && paths['http-json'] ? { 'http-json': paths['http-json'] } : {};
  for (const name of Object.keys(apart)) delete paths[name];
  const seq = await sequential(m.name, m.seq, paths, m.kind === 'conv');
  for (const [name, path] of Object.entries(apart)) {
    Object.assign(seq, await sequential(m.name, m.jsonSeq, { bare, [name]: path }).then((r) => ({ [name]: r[name], [`bare-beside-${name}`]: r.bare })));
    paths[name] = path;
  }
  const result = { bareP50Ms: seq.bare.p50Ms };
  for (const path of Object.keys(paths).filter((p) => p !== 'bare' && seq[p])) {
    if (path === 'transport-floor') {
      result[path] = { p50Ms: seq[path].p50Ms, p99Ms: seq[path].p99Ms }; // not an inference: nothing to add to bare
      continue;
    }
    const base = seq[`bare-beside-${path}`] ?? seq.bare; // the bare runs interleaved with this path
    result[path] = { p50Ms: seq[path].p50Ms, addedP50Ms: round(seq[path].p50Ms - base.p50Ms), addedP99Ms: round(seq[path].p99Ms - base.p99Ms), p50VsBare: round(seq[path].p50Ms / base.p50Ms) };
  }
  if (m.conc > 0) {
    const conc = await concurrent(m.name, m.conc, IN_FLIGHT, paths);
    // the baseline's best throughput: concurrent runs on one session can be slower than back-to-back ones
    const bareBest = Math.max(conc.bare.perSecond, Math.round(1000 / seq.bare.meanMs));
    result.barePerSecond = bareBest;
    for (const path of Object.keys(paths).filter((p) => p !== 'bare' && p !== 'transport-floor')) {
      Object.assign(result[path], { perSecond: conc[path].perSecond, throughputVsBestBare: round(conc[path].perSecond / bareBest) });
    }
  }
  await session.release();
  return result;
}

/** The targets, measured (not asserted): real-size binary p50 within 1.15x bare + 1 ms; small-model HTTP overhead at most 0.5 ms. */
function targets(summary) {
  const out = {};
  const conv = summary['conv-640'];
  if (conv) {
    const limit = round(conv.bareP50Ms * 1.15 + 1);
    const floor = conv['transport-floor']?.p50Ms;
    out['conv-640 oip-binary p50 <= 1.15x bare + 1 ms'] = {
      bareP50Ms: conv.bareP50Ms,
      oipBinaryP50Ms: conv['oip-binary']?.p50Ms,
      limitMs: limit,
      met: conv['oip-binary']?.p50Ms <= limit,
      // the bound: bare plus what moving the same bytes over HTTP costs with no work at all
      transportFloorP50Ms: floor,
      barePlusFloorMs: floor === undefined ? undefined : round(conv.bareP50Ms + floor),
      agentBeyondFloorMs: floor === undefined || !conv['oip-binary'] ? undefined : round(conv['oip-binary'].p50Ms - conv.bareP50Ms - floor),
      jsonP50Ms: conv['http-json']?.p50Ms,
      jsonVsBare: conv['http-json']?.p50VsBare,
    };
  }
  const small = summary['mlp-small'];
  if (small) {
    out['mlp-small HTTP added p50 <= 0.5 ms'] = { 'oip-binary': small['oip-binary']?.addedP50Ms, 'http-json': small['http-json']?.addedP50Ms, met: small['oip-binary']?.addedP50Ms <= 0.5 && small['http-json']?.addedP50Ms <= 0.5 };
  }
  return out;
}

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
  const bytes = m.kind === 'conv' ? buildConv(m) : buildModel(m);
  const shape = m.kind === 'conv' ? [1, m.channels[0], m.size, m.size] : [m.batch, m.in];
  const count = shape.reduce((a, b) => a * b, 1);
  // inputs exactly representable in float32, so the JSON path carries the same values
  const inputs = Array.from({ length: m.kind === 'conv' ? 4 : 32 }, () => Float32Array.from({ length: count }, () => Math.round(rnd() * 1000) / 250));
  const lists = inputs.map((x) => Array.from(x));
  return { ...m, bytes, shape, inputs, tensorInput: (i) => ({ x: { dtype: 'float32', shape, data: lists[i % lists.length] } }) };
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
    const b = await createBroker({ tcp: { host: '127.0.0.1', port: 0 }, maxPacketSize: 64 * 1024 * 1024, credentials: staticCredentials([
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

  // the transport floor in its own process: an HTTP server that reads the body into a reused buffer and
  // answers as many bytes as the model's output has, doing nothing else (what moving the bytes costs)
  const floorScript = `
    const http = await import('node:http');
    let body = Buffer.alloc(0); const answers = new Map();
    const server = http.createServer((req, res) => {
      const length = Number(req.headers['content-length']);
      if (body.length < length) body = Buffer.alloc(length);
      let offset = 0;
      req.on('data', (c) => { offset += c.copy(body, offset); });
      req.on('end', () => {
        const size = Number(req.headers['x-answer-bytes']);
        if (!answers.has(size)) answers.set(size, Buffer.alloc(size, 1));
        const json = Buffer.from(JSON.stringify({ received: offset }));
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'inference-header-content-length': json.length, 'content-length': json.length + size });
        res.cork();
        res.write(json);
        res.end(answers.get(size));
        res.uncork();
      });
    });
    server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));`;
  const floorProc = spawnNode(['--input-type=module', '-e', floorScript], {});
  children.push(floorProc);
  const floorPort = await firstLine(floorProc.stdout, (l) => tryJson(l)?.port, 15_000, 'the transport floor server');

  const clients = await connectClients(brokerUrl, httpPort, floorPort);
  const summary = { result: 'summary', targets: {} };
  for (const m of prepared) summary[m.name] = await benchModel(m, clients);
  summary.targets = targets(summary);
  console.log(JSON.stringify(summary));

  await clients.close();
  agentProc.kill('SIGTERM');
  await once(agentProc, 'exit');
  floorProc.kill('SIGTERM');
  brokerProc.kill('SIGTERM');
  await once(brokerProc, 'exit');
} catch (error) {
  for (const c of children) process.stderr.write(c.stderrText().slice(-3000));
  throw error;
} finally {
  await cleanup();
}
