/**
 * The parent's side of the simulator: provisioning through the controller's HTTP API (batch
 * route, as an operator's script would), and a fleet of simulated devices spread over
 * several processes (bench/sim/worker.js), driven over IPC.
 */
import { fork, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));
export const BATCH = 1000;

async function api(base, token, method, path, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** `count` devices named `<prefix>00000`… in `groups`, 1,000 per request, `parallel` requests at once. */
export async function provision({ url, token, count, prefix, groups = [], parallel = 2 }) {
  const ids = Array.from({ length: count }, (_, i) => `${prefix}${String(i).padStart(5, '0')}`);
  const batches = [];
  for (let i = 0; i < ids.length; i += BATCH) batches.push(ids.slice(i, i + BATCH));
  const creds = [];
  let shared;
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, batches.length) }, async () => {
      while (next < batches.length) {
        const batch = batches[next++];
        const r = await api(url, token, 'POST', '/api/devices/batch', { devices: batch.map((id) => ({ id })), groups });
        shared = { broker: r.broker, fleetPublicKey: r.fleetPublicKey };
        creds.push(...r.devices);
      }
    }),
  );
  creds.sort((a, b) => (a.id < b.id ? -1 : 1));
  return { creds, ...shared };
}

export async function unprovision({ url, token, ids }) {
  for (let i = 0; i < ids.length; i += BATCH) await api(url, token, 'POST', '/api/devices/batch-remove', { ids: ids.slice(i, i + BATCH) });
}

/**
 * Starts `creds` as simulated devices in `processes` processes. Resolves once every device is
 * connected and announced. `connectPerS` is the whole fleet's pace of first connections.
 */
export async function startFleet({ creds, broker, publicKeyPem, processes, dataRoot, models = 0, connectPerS = 500, keepaliveS, reconnectMinMs, reconnectMaxMs, execArgv = [], wrap, nice = 0 }) {
  const workers = [];
  const per = Math.ceil(creds.length / processes);
  const exited = [];
  await Promise.all(
    Array.from({ length: processes }, (_, w) => {
      // each real device has its own thread pool for its file system calls; a process of thousands gets a larger one
      const env = { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' };
      // `wrap` (e.g. ip netns exec NS) runs the process inside a device's own network namespace; it execs, keeping the IPC channel.
      // `nice`: the simulated fleet yields the host's cores to the controller it measures (real devices have CPUs of their own);
      // started under nice(1), so every thread of the process is niced, not only its first
      const prefix = [...(nice > 0 ? ['nice', '-n', String(nice)] : []), ...(wrap ?? [])];
      const child = prefix.length
        ? spawn(prefix[0], [...prefix.slice(1), process.execPath, ...execArgv, WORKER], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env })
        : fork(WORKER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env, execArgv });
      workers.push(child);
      child.once('exit', (code, signal) => exited.push({ w, code, signal }));
      return new Promise((resolve, reject) => {
        const onExit = (code) => reject(new Error(`simulator process ${w} exited with ${code} before it was ready`));
        child.once('exit', onExit);
        child.once('message', (m) => {
          child.off('exit', onExit);
          if (m.type === 'ready') resolve(m);
          else reject(new Error(JSON.stringify(m)));
        });
        child.send({
          type: 'start',
          devices: creds.slice(w * per, (w + 1) * per),
          broker,
          publicKeyPem,
          dataRoot: `${dataRoot}/p${w}`,
          models,
          connectPerS: connectPerS / processes,
          ...(keepaliveS ? { keepaliveS } : {}),
          ...(reconnectMinMs ? { reconnectMinMs } : {}),
          ...(reconnectMaxMs ? { reconnectMaxMs } : {}),
        });
      });
    }),
  );

  const ask = (child, msg, answer) =>
    new Promise((resolve) => {
      const on = (m) => {
        if (m.type !== answer) return;
        child.off('message', on);
        resolve(m);
      };
      child.on('message', on);
      child.send(msg);
    });
  const all = (msg, answer) => Promise.all(workers.map((c) => ask(c, msg, answer)));

  return {
    workers,
    exited,
    pids: workers.map((c) => c.pid),
    telemetry: (hz) => workers.forEach((c) => c.send({ type: 'telemetry', hz })),
    /** Counters summed over the processes; per-device samples and connects by second merged. */
    async stats() {
      const list = await all({ type: 'stats' }, 'stats');
      const sum = (k) => list.reduce((n, s) => n + s[k], 0);
      const connectsBySecond = {};
      for (const s of list) for (const [sec, n] of Object.entries(s.connectsBySecond)) connectsBySecond[sec] = (connectsBySecond[sec] ?? 0) + n;
      return {
        devices: sum('devices'),
        connected: sum('connected'),
        connects: sum('connects'),
        sampled: sum('sampled'),
        published: sum('published'),
        pending: sum('pending'),
        rss: sum('rss'),
        cpuUserS: list.reduce((n, s) => n + s.cpu.user, 0) / 1e6,
        cpuSystemS: list.reduce((n, s) => n + s.cpu.system, 0) / 1e6,
        connectsBySecond,
        sampledById: Object.assign({}, ...list.map((s) => s.sampledById)),
        devicesDetail: Object.assign({}, ...list.map((s) => s.devicesDetail)),
      };
    },
    async verify(model, version, sha256) {
      const list = await all({ type: 'verify', model, version, sha256 }, 'verified');
      return { checked: list.reduce((n, a) => n + a.count, 0), bad: list.flatMap((a) => a.bad) };
    },
    /** Drops `count` devices' connections without a goodbye, from the first process. */
    kill: (count) => ask(workers[0], { type: 'kill', count }, 'killed'),
    async stop() {
      await Promise.all(
        workers.map(
          (child) =>
            new Promise((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null || !child.connected) return resolve();
              child.once('exit', resolve);
              child.send({ type: 'stop' });
              setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
            }),
        ),
      );
    },
  };
}
