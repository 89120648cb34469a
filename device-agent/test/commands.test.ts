import { describe, it, expect } from '@jest/globals';
import { pino } from 'pino';
import { FleetError, encodeFramed, makeRequest } from '@edgefleet/protocol';
import type { Reply } from '@edgefleet/protocol';
import { BinaryReply, Dispatcher } from '../src/commands.js';
import type { HandlerTable } from '../src/commands.js';

const logger = pino({ level: 'silent' });

function setup(handlers: HandlerTable) {
  const replies: Reply[] = [];
  const d = new Dispatcher({ handlers, logger, send: async (r) => void replies.push(r) });
  return { d, replies };
}

describe('command dispatch', () => {
  it('answers ok with the handler result, correlated by id', async () => {
    const { d, replies } = setup({ ping: async () => ({ pong: true, uptimeS: 1 }) });
    const req = makeRequest('ping', {}, 1000);
    await d.handle(JSON.stringify(req));
    expect(replies).toEqual([expect.objectContaining({ corr: req.id, status: 'ok', data: { pong: true, uptimeS: 1 } })]);
  });

  it('hands a framed request its binary part, and sends a binary reply with its parts', async () => {
    const sent: { reply: Reply; binary: readonly Uint8Array[] | undefined }[] = [];
    let seen: Uint8Array | undefined;
    const d = new Dispatcher({
      logger,
      send: async (reply, binary) => void sent.push({ reply, binary }),
      handlers: {
        'models.sample': async (_p, ctx) => {
          seen = ctx.request.binary;
          return new BinaryReply({ received: 3, length: 3, complete: true }, [Uint8Array.of(9, 8)]);
        },
      },
    });
    const req = makeRequest('models.sample', { model: 'm', version: 1, offset: 0 }, 1000);
    await d.handle(encodeFramed(req, [Uint8Array.of(1, 2, 3)]));
    expect(Array.from(seen!)).toEqual([1, 2, 3]);
    expect(sent).toEqual([{ reply: expect.objectContaining({ corr: req.id, status: 'ok', data: { received: 3, length: 3, complete: true } }), binary: [Uint8Array.of(9, 8)] }]);
  });

  it('turns thrown errors into one error reply with their code', async () => {
    const { d, replies } = setup({
      'models.activate': async () => {
        throw new FleetError('not_found', 'no such model');
      },
      'models.list': async () => {
        throw new Error('boom');
      },
    });
    const a = makeRequest('models.activate', { model: 'm', version: 1 }, 1000);
    const b = makeRequest('models.list', {}, 1000);
    await Promise.all([d.handle(JSON.stringify(a)), d.handle(JSON.stringify(b))]);
    expect(replies.find((r) => r.corr === a.id)).toMatchObject({ status: 'error', error: { code: 'not_found', message: 'no such model' } });
    expect(replies.find((r) => r.corr === b.id)).toMatchObject({ status: 'error', error: { code: 'internal', message: expect.stringContaining('boom') } });
    expect(replies).toHaveLength(2);
  });

  it('rejects bad payloads with an error reply when an id can be recovered, and logs otherwise', async () => {
    const { d, replies } = setup({});
    await d.handle('not json');
    await d.handle(JSON.stringify({ nothing: true }));
    expect(replies).toHaveLength(0);
    const unknown = { ...makeRequest('ping', {}, 1000), command: 'fly' };
    const badParams = makeRequest('models.activate', { model: '../etc', version: -1 } as never, 1000);
    const notRequest = { id: 'abc', type: 'reply' };
    for (const p of [unknown, badParams, notRequest]) await d.handle(JSON.stringify(p));
    expect(replies.map((r) => [r.corr, r.status === 'error' ? r.error.code : 'ok'])).toEqual([
      [unknown.id, 'unknown_command'],
      [badParams.id, 'invalid_params'],
      ['abc', 'bad_request'],
    ]);
  });

  it('honours deadlines: expired on arrival, and running past it', async () => {
    let ran = false;
    const { d, replies } = setup({
      ping: async () => {
        ran = true;
        return { pong: true, uptimeS: 0 };
      },
      'models.list': (_p, ctx) =>
        new Promise((resolve) => {
          ctx.signal.addEventListener('abort', () => setTimeout(() => resolve({ models: [] }), 5));
        }),
    });
    const expired = makeRequest('ping', {}, 100, Date.now() - 1000);
    await d.handle(JSON.stringify(expired));
    expect(ran).toBe(false);
    const slow = makeRequest('models.list', {}, 50);
    const started = Date.now();
    await d.handle(JSON.stringify(slow));
    expect(Date.now() - started).toBeLessThan(1000);
    expect(replies.map((r) => (r.status === 'error' ? r.error.code : r.status))).toEqual(['deadline_exceeded', 'deadline_exceeded']);
    await d.drain(1000);
    expect(replies).toHaveLength(2); // the late result is not a second reply
  });

  it('answers a redelivered request once, and refuses new ones after close()', async () => {
    const { d, replies } = setup({ ping: async () => ({ pong: true, uptimeS: 0 }) });
    const req = JSON.stringify(makeRequest('ping', {}, 1000));
    await Promise.all([d.handle(req), d.handle(req)]);
    expect(replies).toHaveLength(1);
    d.close();
    await d.handle(JSON.stringify(makeRequest('ping', {}, 1000)));
    expect(replies[1]).toMatchObject({ status: 'error', error: { code: 'unavailable' } });
  });

  it('answers unavailable for a command without a handler', async () => {
    const { d, replies } = setup({});
    await d.handle(JSON.stringify(makeRequest('transfer.status', { transferId: 't1' }, 1000)));
    expect(replies[0]).toMatchObject({ status: 'error', error: { code: 'unavailable' } });
  });
});
