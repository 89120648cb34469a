// Helpers shared by bench/transfer.js (loopback) and bench/transfer-links.js (a link per device).
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import onnxProto from 'onnx-proto';

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
    return 0;
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

