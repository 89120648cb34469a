/**
 * The controller's HTTP API and live feed, as the dashboard uses them: the operator token is
 * kept for this tab (sessionStorage), sent as `Authorization: Bearer` on every call and as the
 * feed's first message (browsers cannot set headers on a WebSocket); never in a URL.
 */
import type { FeedEvent } from './types.js';

const KEY = 'edgefleet-token';

export const token = {
  get: (): string | null => sessionStorage.getItem(KEY),
  set: (t: string): void => sessionStorage.setItem(KEY, t),
  clear: (): void => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** One API call; an error answer becomes an ApiError with the controller's own sentence. */
export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { authorization: `Bearer ${token.get() ?? ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  } catch (error) {
    throw new ApiError(0, 'unreachable', `the controller cannot be reached (${(error as Error).message})`);
  }
  const text = await res.text();
  let json: unknown = {};
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    throw new ApiError(res.status, 'bad_response', `the controller answered ${res.status} with something that is not JSON`);
  }
  if (!res.ok) {
    const e = (json as { error?: { code?: string; message?: string } }).error;
    throw new ApiError(res.status, e?.code ?? 'error', e?.message ?? `HTTP ${res.status}`);
  }
  return json as T;
}

/** Events of one event-loop turn on the controller, sent as one WebSocket frame. */
interface FeedBatch {
  type: 'batch';
  events: FeedEvent[];
}

export interface Feed {
  close(): void;
}

/** Opens the live feed; `onClose` gets the close code (4401: the token was refused). */
export function openFeed(onEvent: (e: FeedEvent) => void, onOpen: () => void, onClose: (code: number) => void): Feed {
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`);
  ws.onopen = () => ws.send(JSON.stringify({ token: token.get() }));
  let first = true;
  ws.onmessage = (m) => {
    if (first) {
      first = false;
      onOpen();
    }
    const frame = JSON.parse(String(m.data)) as FeedEvent | FeedBatch;
    // the events of one moment on the controller come as one batch frame (the store renders once per animation frame either way)
    if (frame.type === 'batch') frame.events.forEach(onEvent);
    else onEvent(frame);
  };
  ws.onclose = (e) => onClose(e.code);
  return { close: () => ws.close() };
}
