/**
 * A tiny Open Inference Protocol (KServe V2) server for tests: runs in a test image (node + this file) or as
 * a plain child process. Model EDGEFLEET_MODEL_NAME (default "x") answers y = x * FACTOR for FP32 x of
 * shape [-1, 4]; model "echo" returns every input as an output of the same name. JSON and the binary tensor
 * extension. MODE: "ok" (default), "exit" (exits at once with code 3), "never-ready" (/v2/health/ready 503),
 * "infer-errors" (healthy and ready, but every infer answers 500).
 * GET /health and /version serve the app-container tests; /v2 reports the sha256 of the mounted model file.
 */
'use strict';
const http = require('node:http');
const fs = require('node:fs');
const crypto = require('node:crypto');

const env = process.env;
const mode = env.MODE || 'ok';
const port = Number(env.PORT || env.EDGEFLEET_OIP_PORT || 8000);
const model = env.EDGEFLEET_MODEL_NAME || 'x';
const factor = Number(env.FACTOR || 2);
const binary = env.BINARY !== '0';
console.log(`oip-server ${env.APP_VERSION || ''} mode=${mode} port=${port} model=${model}`);
if (mode === 'exit') process.exit(3);

let modelSha = null;
if (env.EDGEFLEET_MODEL_DIR) {
  try {
    modelSha = crypto.createHash('sha256').update(fs.readFileSync(`${env.EDGEFLEET_MODEL_DIR}/model.onnx`)).digest('hex');
  } catch (e) {
    modelSha = `unreadable: ${e.code}`;
  }
}

const SIZES = { FP32: 4, FP64: 8, FP16: 2, INT8: 1, INT16: 2, INT32: 4, INT64: 8, UINT8: 1, UINT16: 2, UINT32: 4, UINT64: 8, BOOL: 1 };
const send = (res, status, body, headers = {}) => {
  const data = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': data.length, ...headers });
  res.end(data);
};
const tensorMeta = (name) => ({ name, datatype: 'FP32', shape: [-1, 4] });

function infer(name, req, body, res) {
  const headerLength = req.headers['inference-header-content-length'];
  const jsonEnd = headerLength === undefined ? body.length : Number(headerLength);
  let request;
  try {
    request = JSON.parse(body.toString('utf8', 0, jsonEnd));
  } catch {
    return send(res, 400, { error: 'the request is not JSON' });
  }
  let offset = jsonEnd;
  const inputs = request.inputs.map((t) => {
    const size = t.parameters && t.parameters.binary_data_size;
    if (size === undefined) return { ...t, raw: null };
    const raw = body.subarray(offset, offset + size);
    offset += size;
    return { ...t, raw };
  });
  const outputs = name === 'echo' ? inputs : [double(inputs.find((t) => t.name === 'x'))];
  if (outputs.includes(undefined)) return send(res, 400, { error: 'model x needs input x' });
  if (name !== 'echo' && outputs[0].error) return send(res, 400, { error: outputs[0].error });
  const wantBinary = binary && (request.outputs || []).some((o) => o.parameters && o.parameters.binary_data);
  const blobs = [];
  const header = {
    model_name: name,
    id: request.id,
    outputs: outputs.map((t) => {
      const out = { name: name === 'echo' ? t.name : 'y', datatype: t.datatype, shape: t.shape };
      const raw = t.raw || (wantBinary ? toRaw(t) : null);
      if (wantBinary) {
        blobs.push(raw);
        out.parameters = { binary_data_size: raw.length };
      } else out.data = t.raw ? fromRaw(t) : t.data;
      return out;
    }),
  };
  const json = Buffer.from(JSON.stringify(header));
  if (!wantBinary) return send(res, 200, json);
  send(res, 200, Buffer.concat([json, ...blobs]), { 'content-type': 'application/octet-stream', 'inference-header-content-length': json.length });
}

function double(x) {
  if (!x) return undefined;
  if (x.datatype !== 'FP32' || x.shape.length !== 2 || x.shape[1] !== 4) return { error: `x must be FP32 [-1, 4], got ${x.datatype} [${x.shape}]` };
  const values = x.raw ? Array.from(new Float32Array(Uint8Array.from(x.raw).buffer)) : x.data;
  const y = values.map((v) => v * factor);
  return { name: 'y', datatype: 'FP32', shape: x.shape, data: y, raw: x.raw ? Buffer.from(new Float32Array(y).buffer) : null };
}

// JSON ↔ raw only for FP32 here (the x model); echo passes the client's own form back.
const toRaw = (t) => Buffer.from(new Float32Array(t.data).buffer);
const fromRaw = (t) => (t.datatype === 'FP32' ? Array.from(new Float32Array(Uint8Array.from(t.raw).buffer)) : []);

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const url = req.url.split('?')[0];
    const m = /^\/v2\/models\/([^/]+)(\/ready|\/infer)?$/.exec(url);
    if (url === '/health' || url === '/v2/health/live') return send(res, 200, { live: true });
    if (url === '/version') return send(res, 200, { version: env.APP_VERSION || null, pid: process.pid });
    if (url === '/v2/health/ready') return mode === 'never-ready' ? send(res, 503, { error: 'not ready' }) : send(res, 200, { ready: true });
    if (url === '/v2') return send(res, 200, { name: 'edgefleet-test-oip', version: env.APP_VERSION || '1', extensions: binary ? ['binary_tensor_data'] : [], model_sha256: modelSha });
    if (!m) return send(res, 404, { error: `no route ${url}` });
    const name = decodeURIComponent(m[1]);
    if (name !== model && name !== 'echo') return send(res, 404, { error: `unknown model ${name}` });
    if (m[2] === '/ready') return send(res, 200, { name, ready: true });
    if (m[2] === '/infer' && req.method === 'POST') {
      if (mode === 'infer-errors') return send(res, 500, { error: 'this build fails every request' });
      return infer(name, req, Buffer.concat(chunks), res);
    }
    if (name === 'echo') return send(res, 400, { error: 'echo has no fixed metadata' });
    send(res, 200, { name, versions: ['1'], platform: 'edgefleet-test', inputs: [tensorMeta('x')], outputs: [{ ...tensorMeta('y') }] });
  });
});
server.listen(port, '0.0.0.0', () => console.log(`listening on ${server.address().port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
