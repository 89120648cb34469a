/**
 * The dashboard's files: the page (`/`), its stylesheet and ES modules (`/dashboard/…`, built by
 * `tsc -b` from host-manager/dashboard/src), and uPlot 1.6 from node_modules (`/dashboard/uplot.js`,
 * `/vendor/uplot/uPlot.min.css`).
 * Only files on this list are served, read once and kept. No route here needs the token: the
 * page asks for it and sends it as a header on every API call and as the feed's first message
 * (never in a URL). A strict Content-Security-Policy keeps the page to its own scripts.
 */
import { readFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** host-manager/ (this file is host-manager/dist/src/api/dashboard.js once built). */
const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const UPLOT_DIST = join(dirname(createRequire(import.meta.url).resolve('uplot/package.json')), 'dist');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
};

/** The files a URL may name: the page, its stylesheet, its modules (by name), uPlot. */
function fileFor(pathname: string): string | undefined {
  if (pathname === '/' || pathname === '/index.html') return join(PACKAGE_ROOT, 'dashboard', 'index.html');
  if (pathname === '/dashboard/style.css') return join(PACKAGE_ROOT, 'dashboard', 'style.css');
  // the modules import uPlot as ./uplot.js (its types: dashboard/src/uplot.d.ts)
  if (pathname === '/dashboard/uplot.js') return join(UPLOT_DIST, 'uPlot.esm.js');
  const module = /^\/dashboard\/([a-z][a-z-]{0,40}\.js)$/.exec(pathname);
  if (module) return join(PACKAGE_ROOT, 'dist', 'dashboard', module[1]!);
  if (pathname === '/vendor/uplot/uPlot.min.css') return join(UPLOT_DIST, 'uPlot.min.css');
  return undefined;
}

const SECURITY_HEADERS = {
  // own scripts and styles only; the feed and the API on this origin; not framed
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

const cache = new Map<string, Buffer>();

/** Answers a GET for a dashboard file; false when the path is not one (the API's routes go on). */
export async function serveDashboard(res: ServerResponse, pathname: string): Promise<boolean> {
  const file = fileFor(pathname);
  if (!file) return false;
  let body = cache.get(file);
  if (!body) {
    try {
      body = await readFile(file);
    } catch {
      return false; // a module name that was never built: answered as an unknown path (404)
    }
    cache.set(file, body);
  }
  const ext = file.slice(file.lastIndexOf('.'));
  res.writeHead(200, { 'content-type': TYPES[ext] ?? 'application/octet-stream', 'cache-control': 'no-cache', 'content-length': body.length, ...SECURITY_HEADERS });
  res.end(body);
  return true;
}
