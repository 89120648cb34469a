/**
 * A delay line for bench/transfer-links.js, in its own process: this kernel has no netem, so
 * the one-way delay of each device's link is added here. For every route
 * `listenHost:listenPort → targetHost:targetPort` it accepts connections and forwards the
 * bytes both ways, each piece held `delayMs` before it is written on (order kept). The rate
 * is the kernel's (tbf on the device's veth), so what this adds is latency, not a bottleneck:
 * back-pressure from the slower side pauses the faster one.
 *
 *   argv[2]: JSON {delayMs, routes:[{listenHost, listenPort, targetHost, targetPort}]}
 *   prints {"ready":true} once every route listens; exits on SIGTERM or when stdin closes
 */
import { connect, createServer } from 'node:net';

const { delayMs, routes } = JSON.parse(process.argv[2]);

/** Forwards `from` into `to`, each chunk `delayMs` late; pauses `from` while `to` is full. */
function pipeDelayed(from, to) {
  const queue = [];
  let timer = null;
  let waiting = false;
  const flush = () => {
    timer = null;
    const now = Date.now();
    while (queue.length && queue[0].at <= now) {
      if (!to.write(queue.shift().data) && !waiting) {
        waiting = true;
        from.pause();
        to.once('drain', () => {
          waiting = false;
          from.resume();
        });
      }
    }
    if (queue.length) timer = setTimeout(flush, queue[0].at - now);
  };
  from.on('data', (data) => {
    queue.push({ at: Date.now() + delayMs, data });
    timer ??= setTimeout(flush, delayMs);
  });
  from.on('end', () => {
    const finish = () => (queue.length ? setTimeout(finish, delayMs) : to.end());
    finish();
  });
}

const servers = [];
await Promise.all(
  routes.map(
    (r) =>
      new Promise((resolve, reject) => {
        const server = createServer((a) => {
          a.setNoDelay(true);
          const b = connect(r.targetPort, r.targetHost);
          b.setNoDelay(true);
          const close = () => {
            a.destroy();
            b.destroy();
          };
          a.on('error', close);
          b.on('error', close);
          a.on('close', close);
          b.on('close', close);
          pipeDelayed(a, b);
          pipeDelayed(b, a);
        });
        server.once('error', reject);
        server.listen(r.listenPort, r.listenHost, resolve);
        servers.push(server);
      }),
  ),
);
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
process.on('SIGTERM', () => process.exit(0));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
