/**
 * An HTTP client for one Open Inference Protocol (KServe V2) server: the contract a runtime container
 * meets. Health (`/v2/health/ready`), server metadata (`/v2`: its extensions say whether it takes binary
 * tensors), model metadata (`/v2/models/{name}`) and infer (`POST /v2/models/{name}/infer`). Any server
 * that speaks the protocol (Triton, OpenVINO Model Server, MLServer, the toolchains' native program) fits.
 *
 * `forward` passes an infer request body through as it is (JSON or binary), for an HTTP front end that
 * already speaks the protocol and wants no decode and re-encode on the way.
 */
import { Agent, request } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import { FleetError, OipModelMetadataSchema, OipServerMetadataSchema, describe } from '@edgefleet/protocol';
import type { ErrorCode, OipModelMetadata, OipServerMetadata } from '@edgefleet/protocol';
import { dtypeOf } from './oip-codec.js';

export type { OipModelMetadata, OipServerMetadata, OipTensorMetadata } from '@edgefleet/protocol';

export interface OipResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

const STATUS_CODE: Record<number, ErrorCode> = { 400: 'invalid_input', 404: 'not_found', 413: 'too_long', 429: 'busy', 503: 'unavailable' };

/** Body limits the agent reads from a runtime (an answer larger than this is refused, not buffered). */
const MAX_ANSWER = 256 * 1024 * 1024;

export class OipClient {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 64 });

  constructor(
    readonly port: number,
    readonly host = '127.0.0.1',
    private readonly timeoutMs = 30_000,
  ) {}

  send(method: string, path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<OipResponse> {
    return new Promise((resolve, reject) => {
      const req = request(
        { host: this.host, port: this.port, path, method, agent: this.agent, timeout: this.timeoutMs, headers: body ? { ...headers, 'content-length': String(body.length) } : headers },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_ANSWER) res.destroy(new Error(`the runtime's answer is over ${MAX_ANSWER} bytes`));
            else chunks.push(c);
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (error) => reject(new FleetError('unavailable', `the runtime at ${this.host}:${this.port} did not answer ${method} ${path}: ${error.message}`)));
      req.end(body);
    });
  }

  /** The answer checked against the protocol's schema; a FleetError with the server's `{"error": "..."}` sentence for a non-2xx answer. */
  private async json<T>(method: string, path: string, schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: Parameters<typeof describe>[0] } }): Promise<T> {
    const res = await this.send(method, path);
    this.check(res, `${method} ${path}`);
    let json: unknown;
    try {
      json = JSON.parse(res.body.toString('utf8'));
    } catch {
      throw new FleetError('internal', `the runtime answered ${method} ${path} with something that is not JSON`);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) throw new FleetError('load_failed', `the runtime's answer to ${method} ${path} is not the protocol's: ${describe(parsed.error)}`);
    return parsed.data;
  }

  check(res: OipResponse, what: string): void {
    if (res.status >= 200 && res.status < 300) return;
    let message = res.body.toString('utf8').slice(0, 500);
    try {
      const parsed = JSON.parse(message) as { error?: unknown };
      if (typeof parsed.error === 'string') message = parsed.error;
    } catch {
      // not the protocol's error form: the raw text is the best sentence there is
    }
    throw new FleetError(STATUS_CODE[res.status] ?? 'internal', `the runtime answered ${what} with ${res.status}: ${message}`);
  }

  async ready(): Promise<boolean> {
    try {
      const res = await this.send('GET', '/v2/health/ready');
      return res.status === 200;
    } catch {
      return false; // not answering is not ready
    }
  }

  server(): Promise<OipServerMetadata> {
    return this.json('GET', '/v2', OipServerMetadataSchema);
  }

  async model(name: string): Promise<OipModelMetadata> {
    const meta = await this.json('GET', `/v2/models/${encodeURIComponent(name)}`, OipModelMetadataSchema);
    for (const t of [...meta.inputs, ...meta.outputs]) dtypeOf(t.datatype, `model ${name} metadata`);
    return meta;
  }

  /** POST /v2/models/{name}/infer with an encoded body; the raw answer (checked for a 2xx status). */
  async infer(name: string, body: Buffer, headers: Record<string, string>): Promise<OipResponse> {
    const res = await this.send('POST', `/v2/models/${encodeURIComponent(name)}/infer`, body, headers);
    this.check(res, `infer on ${name}`);
    return res;
  }

  /** Passes an OIP infer body through unchanged; the answer comes back as the runtime gave it (errors included). */
  forward(name: string, body: Buffer, headers: Record<string, string>): Promise<OipResponse> {
    const pass: Record<string, string> = {};
    for (const key of ['content-type', 'inference-header-content-length']) if (headers[key] !== undefined) pass[key] = headers[key]!;
    return this.send('POST', `/v2/models/${encodeURIComponent(name)}/infer`, body, pass);
  }

  close(): void {
    this.agent.destroy();
  }
}
