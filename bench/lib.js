// What the benchmarks that start processes share: JSON output, CPU seconds from /proc, waiting for a
// child's line or IPC reply, a model file of a given size, a real sshd (on loopback, or inside a
// device's network namespace) for the scp / ssh baselines, and a bench device's MQTT side (chunks and
// transfer.* requests to the agent's real receiver).
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import onnxProto from 'onnx-proto';
import { FleetError, errorReply, okReply, parseRequest, parseTopic, topics } from '@edgefleet/protocol';

export const run = promisify(execFile);
export const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
export const seconds = (ms) => Math.round(ms) / 1000;
export const round2 = (x) => Math.round(x * 100) / 100;

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); with `reaped`, only its waited-for children's. */
export async function cpuSeconds(pid, { reaped = false } = {}) {
  try {
    const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
    const [user, system] = reaped ? [fields[13], fields[14]] : [fields[11], fields[12]];
    return (Number(user) + Number(system)) / 100;
  } catch {
    return 0; // the process is gone: it uses nothing more
  }
}
export async function cpuOf(broker, receivers) {
  const r = await Promise.all(receivers.map((c) => cpuSeconds(c.pid)));
  return { broker: await cpuSeconds(broker.pid), host: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6, receivers: r.reduce((a, b) => a + b, 0) };
}

export async function sha256File(file) {
  const h = createHash('sha256');
  for await (const part of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(part);
  return h.digest('hex');
}

export function buildModel(bytes) {
  const { onnx } = onnxProto;
  const rows = 1024;
  const cols = Math.floor(bytes / 4 / rows);
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'edgefleet-bench',
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'bench',
      node: [{ opType: 'MatMul', input: ['x', 'W'], output: ['y'] }],
      input: [{ name: 'x', type: { tensorType: { elemType: 1, shape: { dim: [{ dimParam: 'batch' }, { dimValue: rows }] } } } }],
      output: [{ name: 'y', type: { tensorType: { elemType: 1, shape: { dim: [{ dimParam: 'batch' }, { dimValue: cols }] } } } }],
      initializer: [{ name: 'W', dims: [rows, cols], dataType: 1, rawData: randomBytes(rows * cols * 4) }],
    },
  });
  return Buffer.from(onnx.ModelProto.encode(model).finish());
}

export function waitLine(child, pattern) {
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d.toString();
      const m = buf.match(pattern);
      if (m) resolve(m);
    });
    child.once('exit', (code) => reject(new Error(`child exited ${code} before ${pattern}`)));
  });
}

export function ipc(child, message, replyType) {
  return new Promise((resolve) => {
    const on = (m) => {
      if (m.type === replyType) {
        child.off('message', on);
        resolve(m);
      }
    };
    child.on('message', on);
    child.send(message);
  });
}

/**
 * An sshd on a free port for the scp baseline; `listen` is its address, `wrap` (ip netns exec NS)
 * runs it inside a device's namespace so that the copy crosses that device's link.
 */
export async function startSshd(dir, { listen = '127.0.0.1', wrap = [] } = {}) {
  await mkdir('/run/sshd', { recursive: true });
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'client_key')]);
  await writeFile(join(dir, 'authorized_keys'), await readFile(join(dir, 'client_key.pub')));
  const port = await new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
  const config = [
    `Port ${port}`, `ListenAddress ${listen}`, `HostKey ${join(dir, 'host_key')}`, `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, 'PermitRootLogin yes', 'StrictModes no', 'UsePAM no',
    'PasswordAuthentication no', 'MaxStartups 200', 'Subsystem sftp internal-sftp', 'LogLevel INFO',
  ].join('\n');
  await writeFile(join(dir, 'sshd_config'), `${config}\n`);
  const argv = [...wrap, '/usr/sbin/sshd', '-D', '-e', '-f', join(dir, 'sshd_config')];
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise((resolve, reject) => {
    let err = '';
    child.stderr.on('data', (d) => {
      err += d.toString();
      if (/Server listening/.test(err)) resolve();
    });
    child.once('exit', (c) => reject(new Error(`sshd exited ${c}: ${err}`)));
  });
  return { port, key: join(dir, 'client_key'), child };
}


/**
 * Connects as device `id` and hands chunks and transfer.* requests to `receiver()` (the receiver of the
 * moment: a reset replaces it); every request gets one reply. Chunk topics at `chunkQos`.
 */
export async function serveTransfers({ id, url, groups, chunkQos, receiver }) {
  const client = await mqtt.connectAsync(url, { clientId: id, username: id, password: 'bench-device', reconnectPeriod: 0 });
  client.on('message', (topic, payload) => {
    const parsed = parseTopic(topic);
    if (parsed?.kind === 'transfer') {
      receiver().chunk(parsed.transferId, parsed.index, payload);
      return;
    }
    const req = parseRequest(payload);
    if (!req.ok) return;
    const { command, params } = req.request;
    const r = receiver();
    const handler = { 'transfer.offer': r.offer, 'transfer.status': r.status, 'transfer.commit': r.commit }[command];
    const reply = (body) => client.publish(topics.device(id, 'replies'), JSON.stringify(body), { qos: 1 });
    if (!handler) return reply(errorReply(req.request.id, { code: 'unknown_command', message: command }));
    handler(params).then(
      (data) => reply(okReply(req.request, data)),
      (e) => reply(errorReply(req.request.id, e instanceof FleetError ? e.toJSON() : { code: 'internal', message: String(e) })),
    );
  });
  // as the agent: its own commands and its groups' (a group's offer, status and commit reach every member at once)
  await client.subscribeAsync([topics.device(id, 'commands'), ...groups.map((g) => topics.group(g, 'commands'))], { qos: 1 });
  await client.subscribeAsync([topics.transferFilter({ kind: 'device', name: id }), ...groups.map((g) => topics.transferFilter({ kind: 'group', name: g }))], { qos: chunkQos });
  return client;
}
