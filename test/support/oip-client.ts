/**
 * Test clients for the inference paths as a third-party client sees them: raw HTTP requests (full
 * control of headers and body bytes) with replies split at Inference-Header-Content-Length, and MQTT
 * requests as framed payloads (a JSON envelope + binary part) with replies read the same way.
 */
import { request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import type { MqttClient } from 'mqtt';
import { encodeFramed, encodeInferBody, makeRequest, parseReplyPayload, topics } from '@edgefleet/protocol';
import type { CommandName, CommandParams, Reply } from '@edgefleet/protocol';

export interface HttpReply {
  status: number;
  headers: IncomingHttpHeaders;
  /** The JSON part (the whole body when there is no binary part). */
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- JSON under test
  /** The bytes after the JSON header, when Inference-Header-Content-Length was sent. */
  binary: Buffer | undefined;
  raw: Buffer;
}

export function httpCall(port: number, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        const headerLength = res.headers['inference-header-content-length'];
        const jsonPart = headerLength === undefined ? raw : raw.subarray(0, Number(headerLength));
        let json: unknown;
        try {
          json = jsonPart.length > 0 ? JSON.parse(jsonPart.toString()) : undefined;
        } catch {
          json = undefined; // not JSON: the test looks at `raw`
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json, binary: headerLength === undefined ? undefined : raw.subarray(Number(headerLength)), raw });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** POSTs a JSON body (content-type application/json). */
export function postJson(port: number, path: string, body: unknown, headers: Record<string, string> = {}): Promise<HttpReply> {
  return httpCall(port, 'POST', path, JSON.stringify(body), { 'content-type': 'application/json', ...headers });
}

/** POSTs a binary-extension body: the JSON header, then `binary`, with Inference-Header-Content-Length. */
export function postBinary(port: number, path: string, header: unknown, binary: readonly Uint8Array[], headers: Record<string, string> = {}): Promise<HttpReply> {
  const { body, headerLength } = encodeInferBody(header, binary);
  return httpCall(port, 'POST', path, body, {
    'content-type': 'application/octet-stream',
    'inference-header-content-length': String(headerLength),
    ...headers,
  });
}

/** The binary outputs of an answer, by name, cut at their binary_data_size in the order listed. */
export function binaryOutputs(reply: HttpReply | { json: unknown; binary: Uint8Array | undefined }): Record<string, Buffer> {
  const outputs = (reply.json as { outputs: { name: string; parameters?: { binary_data_size?: number } }[] }).outputs;
  const out: Record<string, Buffer> = {};
  let offset = 0;
  for (const o of outputs) {
    const size = o.parameters?.binary_data_size;
    if (size === undefined) continue;
    out[o.name] = Buffer.from(reply.binary!.subarray(offset, offset + size));
    offset += size;
  }
  if (offset !== (reply.binary?.byteLength ?? 0)) throw new Error(`binary part is ${reply.binary?.byteLength} bytes, the outputs declare ${offset}`);
  return out;
}

/**
 * One request to a device over MQTT as a framed payload (or plain JSON without `binary`); resolves with
 * the reply and its binary part. The client must be an operator's.
 */
export async function mqttRequest<C extends CommandName>(
  client: MqttClient,
  device: string,
  command: C,
  params: CommandParams<C>,
  binary?: readonly Uint8Array[],
  timeoutMs = 10_000,
): Promise<{ reply: Reply; binary: Uint8Array | undefined }> {
  const request = makeRequest(command, params, timeoutMs);
  const repliesTopic = topics.device(device, 'replies');
  await client.subscribeAsync(repliesTopic, { qos: 1 });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('message', onMessage);
      reject(new Error(`no reply to ${command} from ${device} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (topic: string, payload: Buffer): void => {
      if (topic !== repliesTopic) return;
      const parsed = parseReplyPayload(payload);
      if (parsed.reply.corr !== request.id) return;
      clearTimeout(timer);
      client.off('message', onMessage);
      resolve(parsed);
    };
    client.on('message', onMessage);
    const payload = binary ? encodeFramed(request, binary) : JSON.stringify(request);
    client.publishAsync(topics.device(device, 'commands'), payload, { qos: 1 }).catch(reject);
  });
}
