/**
 * Request/response over MQTT from the operator's side: publish a request on a
 * device's (or group's) command topic, match replies by correlation id. Requests and
 * replies may carry binary parts (framed payloads, protocol frames.ts): the tensors of
 * an inference, the bytes of a sample.
 */
import type { BrokerClient } from '../broker-client.js';
import {
  FleetError,
  MESSAGE_LIMITS,
  encodePayload,
  makeRequest,
  parseReplyPayload,
  parseResult,
  parseTopic,
  topics,
} from '@edgefleet/protocol';
import type { CommandName, CommandParams, CommandResult, Reply } from '@edgefleet/protocol';
import { DEFAULTS } from '../defaults.js';

export type RequestFn = <C extends CommandName>(
  device: string,
  command: C,
  params: CommandParams<C>,
  timeoutMs?: number,
  /** Binary parts sent after the JSON request in one framed payload. */
  binary?: readonly Uint8Array[],
) => Promise<CommandResult<C>>;

/** A reply's data and its binary part (undefined when the device answered with plain JSON). */
export interface Exchanged<C extends CommandName> {
  result: CommandResult<C>;
  binary: Uint8Array | undefined;
}

export interface Requester {
  request: RequestFn;
  /** Like request, and also answers the reply's binary part (e.g. an inference's binary output tensors). */
  exchange<C extends CommandName>(device: string, command: C, params: CommandParams<C>, opts?: { timeoutMs?: number; binary?: readonly Uint8Array[] }): Promise<Exchanged<C>>;
  /** Sends one request to a group's command topic and collects replies from `devices` until each answered or the deadline. */
  requestGroup<C extends CommandName>(
    group: string,
    devices: readonly string[],
    command: C,
    params: CommandParams<C>,
    timeoutMs?: number,
  ): Promise<Map<string, { ok: true; data: CommandResult<C> } | { ok: false; error: FleetError }>>;
  close(): void;
}

interface Pending {
  command: CommandName;
  /** Called with each reply for this correlation id (and its binary part); returns true when nothing more is awaited. */
  onReply(device: string, reply: Reply, binary: Uint8Array | undefined): boolean;
  timer: NodeJS.Timeout;
}

export const DEFAULT_TIMEOUT_MS = DEFAULTS.requestTimeoutMs;

export async function createRequester(mqtt: BrokerClient): Promise<Requester> {
  const pending = new Map<string, Pending>();

  const onMessage = (topic: string, payload: Buffer): void => {
    if (!topic.endsWith('/replies')) return; // every device message passes here; telemetry is most of them
    const parsed = parseTopic(topic);
    if (parsed?.kind !== 'device' || parsed.channel !== 'replies') return;
    let reply: Reply;
    let binary: Uint8Array | undefined;
    try {
      ({ reply, binary } = parseReplyPayload(payload));
    } catch {
      return; // a malformed reply cannot be matched to a request; the requester times out with a clear error
    }
    const entry = pending.get(reply.corr);
    if (entry && entry.onReply(parsed.device, reply, binary)) {
      clearTimeout(entry.timer);
      pending.delete(reply.corr);
    }
  };
  mqtt.on('message', onMessage);
  await mqtt.subscribeAsync(topics.allDevices('replies'), { qos: 1 });

  function publish(topic: string, body: { command: string }, binary?: readonly Uint8Array[]): void {
    const payload = encodePayload(body, binary);
    const size = Buffer.byteLength(payload) + Buffer.byteLength(topic) + PACKET_OVERHEAD;
    if (size > MAX_REQUEST_PACKET) {
      // a packet over the broker's limit would cost this controller its connection, so it never leaves
      throw new FleetError(
        'too_long',
        `the ${body.command} request is ${size} bytes; one MQTT message carries at most ${MAX_REQUEST_PACKET} (the broker's packet limit). Send larger tensors to the device's own inference API (POST /v2/models/NAME/infer on the device)`,
      );
    }
    mqtt.publish(topic, payload, { qos: 1 });
  }

  const exchange = directRequest(pending, publish);
  const request: RequestFn = async (device, command, params, timeoutMs, binary) =>
    (await exchange(device, command, params, { ...(timeoutMs !== undefined ? { timeoutMs } : {}), ...(binary ? { binary } : {}) })).result;
  const requestGroup = groupRequest(pending, publish);

  return {
    request,
    exchange,
    requestGroup,
    close() {
      mqtt.off('message', onMessage);
      for (const [id, entry] of pending) {
        clearTimeout(entry.timer);
        pending.delete(id);
      }
    },
  };
}

type Publish = (topic: string, body: { command: string }, binary?: readonly Uint8Array[]) => void;

/** The broker's default packet limit (the embedded broker's, and MESSAGE_LIMITS.request for a JSON request). */
const MAX_REQUEST_PACKET = MESSAGE_LIMITS.request.maxBytes;
/** A PUBLISH packet is its payload and topic plus at most 5 bytes of fixed header, 2 of topic length and 2 of packet id. */
const PACKET_OVERHEAD = 16;

/** A request to one device's command topic; resolves with its reply's data (and binary part), rejects with its error or at the timeout. */
function directRequest(pending: Map<string, Pending>, publish: Publish): Requester['exchange'] {
  return (device, command, params, { timeoutMs = DEFAULT_TIMEOUT_MS, binary } = {}) =>
    new Promise((resolve, reject) => {
      const req = makeRequest(command, params, timeoutMs);
      const timer = setTimeout(() => {
        pending.delete(req.id);
        reject(new FleetError('deadline_exceeded', `${device} did not answer ${command} within ${timeoutMs} ms; is it online?`));
      }, timeoutMs);
      pending.set(req.id, {
        command,
        timer,
        onReply(from, reply, replyBinary) {
          if (from !== device) return false;
          if (reply.status === 'ok') {
            try {
              resolve({ result: parseResult(command, reply.data), binary: replyBinary });
            } catch (error) {
              reject(error);
            }
          } else {
            reject(new FleetError(reply.error.code, reply.error.message));
          }
          return true;
        },
      });
      try {
        publish(topics.device(device, 'commands'), req, binary);
      } catch (error) {
        clearTimeout(timer);
        pending.delete(req.id);
        reject(error);
      }
    });
}

/** One request on a group's command topic, with one outcome per device (a timeout for those that did not answer). */
function groupRequest(pending: Map<string, Pending>, publish: Publish): Requester['requestGroup'] {
  return (group, devices, command, params, timeoutMs = DEFAULT_TIMEOUT_MS) =>
    new Promise((resolve) => {
      type Outcome = { ok: true; data: CommandResult<typeof command> } | { ok: false; error: FleetError };
      const results = new Map<string, Outcome>();
      const waiting = new Set(devices);
      const req = makeRequest(command, params, timeoutMs);
      const finish = (): void => {
        for (const device of waiting) {
          results.set(device, { ok: false, error: new FleetError('deadline_exceeded', `${device} did not answer ${command} within ${timeoutMs} ms`) });
        }
        resolve(results);
      };
      const timer = setTimeout(() => {
        pending.delete(req.id);
        finish();
      }, timeoutMs);
      pending.set(req.id, {
        command,
        timer,
        onReply(from, reply) {
          if (!waiting.delete(from)) return false;
          if (reply.status === 'ok') {
            try {
              results.set(from, { ok: true, data: parseResult(command, reply.data) });
            } catch (error) {
              results.set(from, { ok: false, error: error as FleetError });
            }
          } else {
            results.set(from, { ok: false, error: new FleetError(reply.error.code, reply.error.message) });
          }
          if (waiting.size > 0) return false;
          resolve(results);
          return true;
        },
      });
      if (waiting.size === 0) {
        clearTimeout(timer);
        pending.delete(req.id);
        resolve(results);
        return;
      }
      publish(topics.group(group, 'commands'), req);
    });
}
