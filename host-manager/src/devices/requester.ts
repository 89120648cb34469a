/**
 * Request/response over MQTT from the operator's side: publish a request on a
 * device's (or group's) command topic, match replies by correlation id.
 */
import type { BrokerClient } from '../broker-client.js';
import {
  FleetError,
  ReplySchema,
  makeRequest,
  parseMessage,
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
) => Promise<CommandResult<C>>;

export interface Requester {
  request: RequestFn;
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
  /** Called with each reply for this correlation id; returns true when nothing more is awaited. */
  onReply(device: string, reply: Reply): boolean;
  timer: NodeJS.Timeout;
}

export const DEFAULT_TIMEOUT_MS = DEFAULTS.requestTimeoutMs;

export async function createRequester(mqtt: BrokerClient): Promise<Requester> {
  const pending = new Map<string, Pending>();

  const onMessage = (topic: string, payload: Buffer): void => {
    const parsed = parseTopic(topic);
    if (parsed?.kind !== 'device' || parsed.channel !== 'replies') return;
    let reply: Reply;
    try {
      reply = parseMessage(ReplySchema, payload);
    } catch {
      return; // a malformed reply cannot be matched to a request; the requester times out with a clear error
    }
    const entry = pending.get(reply.corr);
    if (entry && entry.onReply(parsed.device, reply)) {
      clearTimeout(entry.timer);
      pending.delete(reply.corr);
    }
  };
  mqtt.on('message', onMessage);
  await mqtt.subscribeAsync(topics.allDevices('replies'), { qos: 1 });

  function publish(topic: string, body: unknown): void {
    mqtt.publish(topic, JSON.stringify(body), { qos: 1 });
  }

  const request = directRequest(pending, publish);
  const requestGroup = groupRequest(pending, publish);

  return {
    request,
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

/** A request to one device's command topic; resolves with its reply's data, rejects with its error or at the timeout. */
function directRequest(pending: Map<string, Pending>, publish: (topic: string, body: unknown) => void): RequestFn {
  return (device, command, params, timeoutMs = DEFAULT_TIMEOUT_MS) =>
    new Promise((resolve, reject) => {
      const req = makeRequest(command, params, timeoutMs);
      const timer = setTimeout(() => {
        pending.delete(req.id);
        reject(new FleetError('deadline_exceeded', `${device} did not answer ${command} within ${timeoutMs} ms; is it online?`));
      }, timeoutMs);
      pending.set(req.id, {
        command,
        timer,
        onReply(from, reply) {
          if (from !== device) return false;
          if (reply.status === 'ok') {
            try {
              resolve(parseResult(command, reply.data));
            } catch (error) {
              reject(error);
            }
          } else {
            reject(new FleetError(reply.error.code, reply.error.message));
          }
          return true;
        },
      });
      publish(topics.device(device, 'commands'), req);
    });
}

/** One request on a group's command topic, with one outcome per device (a timeout for those that did not answer). */
function groupRequest(pending: Map<string, Pending>, publish: (topic: string, body: unknown) => void): Requester['requestGroup'] {
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
