/**
 * The HTTP client the CLI's one-shot commands use to talk to the running
 * controller. It never opens the state file: the controller's URL and the
 * operator token come from flags, the environment (EDGEFLEET_URL,
 * EDGEFLEET_TOKEN) or the data directory's controller.json / operator.token.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CONTROLLER_FILE, DEFAULT_HTTP_PORT } from '../defaults.js';
import { readOperatorToken } from '../access/tokens.js';

export class ClientError extends Error {
  constructor(
    /** HTTP status, or 0 when the controller could not be reached. */
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ClientError';
  }
}

export interface Client {
  url: string;
  call<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  upload<T = unknown>(path: string, data: Buffer, headers?: Record<string, string>): Promise<T>;
}

export async function resolveConnection(opts: { url?: string | undefined; token?: string | undefined; dataDir: string; env?: NodeJS.ProcessEnv }): Promise<{ url: string; token: string | undefined }> {
  const env = opts.env ?? process.env;
  let url = opts.url ?? env['EDGEFLEET_URL'];
  if (!url) {
    try {
      url = (JSON.parse(await readFile(join(opts.dataDir, CONTROLLER_FILE), 'utf8')) as { url?: string }).url;
    } catch {
      url = undefined; // no controller has announced itself in this data directory; fall back to the default port
    }
  }
  const token = opts.token ?? env['EDGEFLEET_TOKEN'] ?? (await readOperatorToken(opts.dataDir).catch(() => undefined));
  return { url: (url ?? `http://127.0.0.1:${DEFAULT_HTTP_PORT}`).replace(/\/+$/, ''), token };
}

export function createClient(url: string, token: string | undefined, timeoutMs = 120_000): Client {
  async function send<T>(method: string, path: string, body: string | Uint8Array | undefined, headers: Record<string, string>): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${url}${path}`, {
        method,
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
        ...(body !== undefined ? { body } : {}),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
      throw new ClientError(0, 'unreachable', `cannot reach the controller at ${url} (${cause}); is \`hostManager\` running? Set --url or EDGEFLEET_URL`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      throw new ClientError(res.status, 'bad_response', `the controller at ${url} answered ${res.status} with something that is not JSON`);
    }
    if (!res.ok) {
      const err = (json as { error?: { code?: string; message?: string } }).error;
      throw new ClientError(res.status, err?.code ?? 'error', err?.message ?? `HTTP ${res.status}`);
    }
    return json as T;
  }
  return {
    url,
    call: (method, path, body) =>
      send(method, path, body === undefined ? undefined : JSON.stringify(body), body === undefined ? {} : { 'content-type': 'application/json' }),
    upload: (path, data, headers = {}) => send('POST', path, new Uint8Array(data), { 'content-type': 'application/octet-stream', ...headers }),
  };
}
