/**
 * The HTTP client the CLI's one-shot commands use to talk to the running
 * controller. It never opens the state file: the controller's URL and the
 * operator token come from flags, the environment (EDGEFLEET_URL,
 * EDGEFLEET_OPERATOR_TOKEN) or the data directory's controller.json / operator.token.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CONTROLLER_FILE, DEFAULT_HTTP_PORT } from '../defaults.js';
import { operatorTokenPath, readOperatorToken } from '../access/tokens.js';

/** The operator token's environment variable (a device's is EDGEFLEET_DEVICE_TOKEN). */
export const OPERATOR_TOKEN_ENV = 'EDGEFLEET_OPERATOR_TOKEN';
/** Read as a fallback, with a note: it used to name both tokens. */
export const DEPRECATED_TOKEN_ENV = 'EDGEFLEET_TOKEN';

/** Where the operator token came from, so a refusal can say which one to fix. */
export type TokenSource = { kind: 'flag' } | { kind: 'env'; name: string } | { kind: 'file'; path: string } | { kind: 'none'; path: string };

/** The sentence for a token the controller refused (or that is missing), naming where it came from and what to do. */
export function tokenProblem(source: TokenSource, url: string): string {
  const copy = "copy it from operator.token in the controller's data directory (~/.edgefleet/operator.token on its host by default)";
  switch (source.kind) {
    case 'none':
      return `no operator token: pass --token TOKEN, set ${OPERATOR_TOKEN_ENV}, or run where ${source.path} is readable (the controller writes it on its first start)`;
    case 'flag':
      return `the controller at ${url} refused the operator token given with --token; ${copy}`;
    case 'env':
      return `the controller at ${url} refused the operator token in $${source.name}; ${copy}`;
    case 'file':
      return `the controller at ${url} refused the operator token in ${source.path}; is it another controller's? pass --data-dir (the controller's), --token or ${OPERATOR_TOKEN_ENV}`;
  }
}

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
  /** The operator token it sends (for the live feed, which the CLI opens itself). */
  token: string | undefined;
  call<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  upload<T = unknown>(path: string, data: Buffer, headers?: Record<string, string>): Promise<T>;
  /** POSTs a stream as the body as it is read (chunked), never holding it whole. */
  uploadStream<T = unknown>(path: string, data: AsyncIterable<Uint8Array>, headers?: Record<string, string>): Promise<T>;
  /** A POST whose answer may be in the binary tensor data extension's layout: its JSON header and the bytes after it. */
  exchange<T = unknown>(path: string, data: Uint8Array, headers: Record<string, string>): Promise<{ json: T; binary: Uint8Array | undefined }>;
}

export async function resolveConnection(opts: { url?: string | undefined; token?: string | undefined; dataDir: string; env?: NodeJS.ProcessEnv }): Promise<{ url: string; token: string | undefined; source: TokenSource; notes: string[] }> {
  const env = opts.env ?? process.env;
  let url = opts.url ?? env['EDGEFLEET_URL'];
  if (!url) {
    try {
      url = (JSON.parse(await readFile(join(opts.dataDir, CONTROLLER_FILE), 'utf8')) as { url?: string }).url;
    } catch {
      url = undefined; // no controller has announced itself in this data directory; fall back to the default port
    }
  }
  const { token, source, notes } = await resolveToken(opts.token, env, opts.dataDir);
  return { url: (url ?? `http://127.0.0.1:${DEFAULT_HTTP_PORT}`).replace(/\/+$/, ''), token, source, notes };
}

/** --token, then $EDGEFLEET_OPERATOR_TOKEN, then $EDGEFLEET_TOKEN (deprecated, noted), then <data-dir>/operator.token. */
async function resolveToken(flag: string | undefined, env: NodeJS.ProcessEnv, dataDir: string): Promise<{ token: string | undefined; source: TokenSource; notes: string[] }> {
  if (flag) return { token: flag, source: { kind: 'flag' }, notes: [] };
  if (env[OPERATOR_TOKEN_ENV]) return { token: env[OPERATOR_TOKEN_ENV], source: { kind: 'env', name: OPERATOR_TOKEN_ENV }, notes: [] };
  if (env[DEPRECATED_TOKEN_ENV]) {
    return { token: env[DEPRECATED_TOKEN_ENV], source: { kind: 'env', name: DEPRECATED_TOKEN_ENV }, notes: [`${DEPRECATED_TOKEN_ENV} is deprecated for the operator token; use ${OPERATOR_TOKEN_ENV}`] };
  }
  const path = operatorTokenPath(dataDir);
  // an unreadable file is no token: the controller's refusal below says where it looked
  const fromFile = await readOperatorToken(dataDir).catch(() => undefined);
  return fromFile ? { token: fromFile, source: { kind: 'file', path }, notes: [] } : { token: undefined, source: { kind: 'none', path }, notes: [] };
}

export function createClient(url: string, token: string | undefined, timeoutMs = 120_000): Client {
  async function send<T>(method: string, path: string, body: string | Uint8Array | AsyncIterable<Uint8Array> | undefined, headers: Record<string, string>): Promise<{ json: T; binary: Uint8Array | undefined }> {
    let res: Response;
    const streamed = body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array);
    try {
      res = await fetch(`${url}${path}`, {
        method,
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
        // a streamed body needs half duplex (undici's rule for request bodies of unknown length)
        ...(body !== undefined ? { body: body as NonNullable<RequestInit['body']>, ...(streamed ? { duplex: 'half' } : {}) } : {}),
        signal: AbortSignal.timeout(timeoutMs),
      } as RequestInit);
    } catch (error) {
      const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
      throw new ClientError(0, 'unreachable', `cannot reach the controller at ${url} (${cause}); is \`hostManager\` running? Set --url or EDGEFLEET_URL`);
    }
    const bytes = new Uint8Array(await res.arrayBuffer());
    const headerLength = res.ok ? res.headers.get('inference-header-content-length') : null;
    const jsonEnd = headerLength === null ? bytes.byteLength : Number(headerLength);
    const text = Buffer.from(bytes.subarray(0, jsonEnd)).toString('utf8');
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
    return { json: json as T, binary: headerLength === null ? undefined : bytes.subarray(jsonEnd) };
  }
  return {
    url,
    token,
    call: async (method, path, body) =>
      (await send<never>(method, path, body === undefined ? undefined : JSON.stringify(body), body === undefined ? {} : { 'content-type': 'application/json' })).json,
    upload: async (path, data, headers = {}) => (await send<never>('POST', path, new Uint8Array(data), { 'content-type': 'application/octet-stream', ...headers })).json,
    uploadStream: async (path, data, headers = {}) => (await send<never>('POST', path, data, { 'content-type': 'application/octet-stream', ...headers })).json,
    exchange: (path, data, headers) => send('POST', path, data, headers),
  };
}
