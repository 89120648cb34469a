/**
 * Which names a request may use for this API. A browser that loads a page from an attacker's
 * site can be pointed at this controller by DNS (the attacker's name resolving to 127.0.0.1:
 * DNS rebinding); it then sends the attacker's name in Host, and the page could read /health,
 * /metrics and the dashboard. So the Host header must name an address the API listens on (for
 * 0.0.0.0 or ::, any address of this machine's interfaces), `localhost` when it listens on a
 * loopback or every address, this machine's host name, or a name the operator allowed
 * (`--http-allowed-hosts`); anything else is refused with 421. A request a browser sends from a
 * page of another origin (its `Origin` header names a host outside that set) is refused with 403,
 * on every route and on the WebSocket upgrade (the operator token is sent in a header, which a
 * cross-site form cannot set, so this is a second lock, not the only one).
 *
 * Only the host name is compared, not the port: a proxy in front may forward its own.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { hostname, networkInterfaces } from 'node:os';
import { FleetError } from '@edgefleet/protocol';

export interface HostCheck {
  /** The refusal for these request headers, or undefined when they may be answered. */
  refusal(headers: IncomingHttpHeaders): FleetError | undefined;
  /** The names accepted now, for messages. */
  allowed(): string[];
}

const WILDCARD = new Set(['0.0.0.0', '::', '']);
const INTERFACES_TTL_MS = 10_000;

/** `Example.COM:7420` → `example.com`; `[::1]:7420` → `::1`; undefined when it is not a host. */
export function hostOf(value: string): string | undefined {
  const v = value.trim().toLowerCase();
  if (v === '') return undefined;
  const bracketed = /^\[([0-9a-f:.]+)\](?::\d+)?$/.exec(v);
  if (bracketed) return bracketed[1];
  const named = /^([^:/\s@]+?)\.?(?::\d+)?$/.exec(v);
  return named?.[1];
}

function isLoopback(address: string): boolean {
  return address === '::1' || address === 'localhost' || /^127\./.test(address);
}

export function createHostCheck(opts: { host: string; allowedHosts?: readonly string[] }): HostCheck {
  const bound = (hostOf(opts.host) ?? opts.host).toLowerCase();
  const configured = (opts.allowedHosts ?? []).map((h) => hostOf(h) ?? h.toLowerCase());
  let cached: { at: number; names: Set<string> } | undefined;
  const names = (): Set<string> => {
    if (cached && Date.now() - cached.at < INTERFACES_TTL_MS) return cached.names;
    const set = new Set<string>(configured);
    if (WILDCARD.has(bound)) {
      for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) set.add(i.address.toLowerCase().replace(/%.*$/, ''));
      set.add('localhost').add(hostname().toLowerCase());
    } else {
      set.add(bound);
      if (isLoopback(bound)) set.add('localhost').add('127.0.0.1').add('::1');
    }
    cached = { at: Date.now(), names: set };
    return set;
  };
  const allowed = (): string[] => [...names()].sort();
  return {
    allowed,
    refusal(headers) {
      const raw = headers.host;
      const host = typeof raw === 'string' ? hostOf(raw) : undefined;
      if (host === undefined || !names().has(host)) {
        const what = raw === undefined ? 'there is no Host header' : `the Host header names "${String(raw).slice(0, 100)}"`;
        return new FleetError(
          'wrong_host',
          `${what}, which is not a name this API answers to (${allowed().join(', ')}); a web page on another site may be trying to reach it (DNS rebinding). To reach the controller by that name, start it with --http-allowed-hosts ${host ?? '<name>'}`,
        );
      }
      const origin = headers.origin;
      // "null" is what a sandboxed frame or a file:// page sends: a page, but of no origin of ours
      if (typeof origin === 'string') {
        let originHost: string | undefined;
        try {
          originHost = hostOf(new URL(origin).host);
        } catch {
          originHost = undefined; // not a URL: treated as a foreign origin below
        }
        if (originHost === undefined || !names().has(originHost)) {
          return new FleetError('forbidden', `a page of another origin (${origin.slice(0, 100)}) may not use this API; open the dashboard from the controller's own address`);
        }
      }
      return undefined;
    },
  };
}
