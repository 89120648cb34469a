/**
 * The state file: validated on load against the schema of every stored field; a file
 * that does not validate is refused (named, with its first problem and how to restore
 * the last good copy) and never overwritten; a missing file is a new fleet.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openState } from '../src/state/repository.js';
import { emptyState } from '../src/state/schema.js';
import { refusal } from '../../test/support/refusal.js';

let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'state-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const fresh = (): string => join(dir, `case-${++n}`, 'state.json');
const valid = (): Record<string, unknown> => JSON.parse(JSON.stringify(emptyState())) as Record<string, unknown>;

describe('the state file', () => {
  it('is a new, empty fleet when missing, and keeps a last-good copy of every write', async () => {
    const file = fresh();
    const state = await openState(file);
    expect(state.devices()).toEqual([]);
    state.putOperator({ id: 'admin', tokenHash: 'scrypt$x', createdAt: 'now' });
    await state.write();
    expect(await readFile(`${file}.last-good`, 'utf8')).toBe(await readFile(file, 'utf8'));
    expect((await stat(`${file}.last-good`)).mode & 0o777).toBe(0o600);
    const again = await openState(file);
    expect(again.operator('admin')).toEqual({ id: 'admin', tokenHash: 'scrypt$x', createdAt: 'now' });
  });

  it.each([
    ['{}', /devices/],
    ['null', /\(the whole file\)/],
    [JSON.stringify({ ...valid(), devices: null }), /devices/],
    ['{"devices": {', /not JSON/],
    [JSON.stringify({ ...valid(), modelVersionHighWater: { m: 'three' } }), /modelVersionHighWater\.m/],
    [JSON.stringify({ ...valid(), somethingElse: 1 }), /somethingElse/],
    [JSON.stringify(valid()).replace('"devices":{}', '"devices":{"__proto__":{}}'), /devices/],
  ])('refuses %s, naming the file and the problem, and leaves it as it was', async (text, problem) => {
    const file = fresh();
    await openState(file); // creates the directory
    await writeFile(file, text);
    const error = await refusal(openState(file));
    expect(error.message).toContain(file);
    expect(error.message).toMatch(problem);
    expect(error.message).toMatch(/no last-good copy/);
    expect(await readFile(file, 'utf8')).toBe(text);
  });

  it('says how to restore the last good copy, which then opens', async () => {
    const file = fresh();
    const state = await openState(file);
    state.putDevice({ id: 'pi-1', groups: ['lab'], tokenHash: '', createdAt: 'then', online: false, lastSeen: null, info: null, telemetry: null });
    await state.write();
    await writeFile(file, '{"devices": null}');
    const error = await refusal(openState(file));
    expect(error.message).toContain(`cp ${file}.last-good ${file}`);
    expect(await readFile(file, 'utf8')).toBe('{"devices": null}');
    await copyFile(`${file}.last-good`, file);
    expect((await openState(file)).device('pi-1')?.groups).toEqual(['lab']);
  });

  it('declares the version high-water mark the registry keeps, and reads it back', async () => {
    const file = fresh();
    await openState(file);
    await writeFile(file, JSON.stringify({ ...valid(), modelVersionHighWater: { m: 3 } }));
    const state = await openState(file);
    expect(state.highestVersionEver('m')).toBe(3);
    expect(state.highestVersionEver('constructor')).toBe(0);
  });
});
