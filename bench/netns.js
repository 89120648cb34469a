/**
 * Network namespaces for benchmarks: each simulated device gets its own namespace, joined to
 * the host by a veth pair with its own /30 (10.<net>.<i>.0/30: host .1, device .2), so its
 * traffic crosses a link of its own that can be shaped and cut. Root only; everything made
 * here is removed by `destroy()` (and on exit), nothing else is touched.
 *
 * Shaping, as far as this kernel allows: `tc tbf` limits the rate (both directions);
 * `iptables -m statistic` in the device's namespace drops a share of the packets it receives
 * (loss). There is no netem here (no per-packet delay), so delay is added in user space by
 * bench/delay-line.js on the host side of the link.
 */
import { execFileSync } from 'node:child_process';

const sh = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const ip = (...args) => sh('ip', args);

/** Whether this process may make namespaces and shape links (root, iproute2, tbf). */
export function netnsAvailable() {
  try {
    if (process.getuid?.() !== 0) return 'needs root';
    ip('netns', 'list');
    return true;
  } catch (error) {
    return error.message;
  }
}

/**
 * `count` device links. `rate` (e.g. '20mbit') shapes both directions with tbf; `lossPercent`
 * drops that share of what the device receives. Returns the links and `destroy()`.
 */
/** Drops `percent` of what device link `l` receives (0 = none), replacing any earlier rule. */
function setLoss(l, percent) {
  ip('netns', 'exec', l.ns, 'iptables', '-F', 'INPUT');
  if (percent > 0) ip('netns', 'exec', l.ns, 'iptables', '-A', 'INPUT', '-i', l.devIf, '-m', 'statistic', '--mode', 'random', '--probability', String(percent / 100), '-j', 'DROP');
}

export function createLinks(count, { rate, lossPercent = 0, tag = 'ef' } = {}) {
  const net = 100 + (process.pid % 100);
  const base = `${tag}${process.pid % 10000}`;
  const links = [];
  const destroy = () => {
    for (const l of links.splice(0)) {
      try {
        ip('link', 'del', l.hostIf); // takes the peer with it
      } catch {
        // already gone with the namespace
      }
      try {
        ip('netns', 'del', l.ns);
      } catch {
        // never made
      }
    }
  };
  process.once('exit', destroy);
  try {
    for (let i = 0; i < count; i++) {
      const l = { ns: `${base}-${i}`, hostIf: `${base}h${i}`, devIf: `${base}d${i}`, hostIp: `10.${net}.${i}.1`, devIp: `10.${net}.${i}.2` };
      links.push(l);
      ip('netns', 'add', l.ns);
      ip('link', 'add', l.hostIf, 'type', 'veth', 'peer', 'name', l.devIf);
      ip('link', 'set', l.devIf, 'netns', l.ns);
      ip('addr', 'add', `${l.hostIp}/30`, 'dev', l.hostIf);
      ip('link', 'set', l.hostIf, 'up');
      ip('netns', 'exec', l.ns, 'ip', 'addr', 'add', `${l.devIp}/30`, 'dev', l.devIf);
      ip('netns', 'exec', l.ns, 'ip', 'link', 'set', l.devIf, 'up');
      ip('netns', 'exec', l.ns, 'ip', 'link', 'set', 'lo', 'up');
      if (rate) {
        // a queue of ~50 ms at the link rate: TCP sees a link, not an endless buffer
        const tbf = ['root', 'tbf', 'rate', rate, 'burst', '32kb', 'latency', '50ms'];
        sh('tc', ['qdisc', 'add', 'dev', l.hostIf, ...tbf]);
        ip('netns', 'exec', l.ns, 'tc', 'qdisc', 'add', 'dev', l.devIf, ...tbf);
      }
      if (lossPercent > 0) setLoss(l, lossPercent);
    }
  } catch (error) {
    destroy();
    throw error;
  }
  return {
    links,
    destroy,
    /** Takes a device's link down (both ends) or up again. */
    setLink(i, up) {
      ip('link', 'set', links[i].hostIf, up ? 'up' : 'down');
    },
    /** Every device link drops `percent` of what it receives from now on. */
    setLoss(percent) {
      for (const l of links) setLoss(l, percent);
    },
    /** The command prefix that runs a program inside device i's namespace. */
    wrap: (i) => ['ip', 'netns', 'exec', links[i].ns],
  };
}
