import { describe, expect, it } from '@jest/globals';
import { ERROR_CODES, FleetError, asFleetError, errorResponse, httpStatusOf, nameRecord, ownEntry, toErrorBody } from '../src/index.js';

describe('the error vocabulary', () => {
  it('gives every code one HTTP status, busy and unavailable alike 503', () => {
    for (const code of ERROR_CODES) expect(httpStatusOf(code)).toBeGreaterThanOrEqual(400);
    expect(httpStatusOf('busy')).toBe(503);
    expect(httpStatusOf('conflict')).toBe(409);
    expect(httpStatusOf('bad_signature')).toBe(502);
  });

  it('turns anything thrown into one reply body and HTTP answer', () => {
    expect(toErrorBody(new FleetError('not_found', 'no model m'))).toEqual({ code: 'not_found', message: 'no model m' });
    expect(toErrorBody(Object.assign(new Error('write failed'), { code: 'ENOSPC' }))).toEqual({ code: 'disk_full', message: 'no space left on the device: write failed' });
    expect(toErrorBody('a string')).toEqual({ code: 'internal', message: 'internal error: a string' });
    expect(errorResponse(new FleetError('invalid_input', 'bad tensor'))).toEqual({ status: 400, body: { error: { code: 'invalid_input', message: 'bad tensor' } } });
    expect(errorResponse(new TypeError('x is undefined')).status).toBe(500);
    const same = new FleetError('expired', 'old');
    expect(asFleetError(same)).toBe(same);
    expect(asFleetError(new Error('boom'))).toMatchObject({ code: 'internal', message: 'internal error: boom' });
  });
});

describe('records keyed by chosen names', () => {
  it('answer only their own entries, whatever the name', () => {
    const r = nameRecord<number>([['constructor', 1]]);
    expect(ownEntry(r, 'constructor')).toBe(1);
    expect(ownEntry(r, 'toString')).toBeUndefined();
    expect(ownEntry(r, 'hasOwnProperty')).toBeUndefined();
    expect(ownEntry({} as Record<string, number>, 'constructor')).toBeUndefined();
    r['__proto__'] = 2;
    expect(Object.keys(r)).toEqual(['constructor', '__proto__']);
    expect(JSON.parse(JSON.stringify(r))).toEqual(JSON.parse('{"constructor":1,"__proto__":2}'));
  });
});
