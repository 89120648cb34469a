import { describe, expect, it } from '@jest/globals';
import { RESERVED_IDS, assertDeviceId, deviceIdProblem } from '../src/index.js';

describe('one namespace of ids for devices and operators', () => {
  it('refuses a device id equal to an operator id, or inside its client-id range, whatever the case', () => {
    const operators = ['ops'];
    expect(() => assertDeviceId('ops', { operators })).toThrow(/is the id of an operator; devices and operators share one namespace/);
    expect(() => assertDeviceId('OPS', { operators })).toThrow(/is the id of an operator/);
    expect(() => assertDeviceId('ops-controller-1a2b3c', { operators })).toThrow(/falls in operator "ops"'s client ids/);
    expect(() => assertDeviceId('ops-cli', { operators })).toThrow(TypeError);
    expect(assertDeviceId('opsx', { operators })).toBe('opsx');
    expect(assertDeviceId('pi-ops', { operators })).toBe('pi-ops');
  });

  it('reserves the ids the system uses, and the default operator\'s client ids even when another operator is configured', () => {
    for (const id of RESERVED_IDS) expect([id, deviceIdProblem(id)]).toEqual([id, expect.stringMatching(/is reserved/)]);
    expect(deviceIdProblem('Controller')).toMatch(/is reserved/);
    expect(deviceIdProblem('admin-controller-abc123', { operators: ['ops'] })).toMatch(/falls in operator "admin"/);
    expect(deviceIdProblem('$SYS')).toMatch(/invalid device id/);
    expect(deviceIdProblem('../x')).toMatch(/invalid device id/);
    expect(deviceIdProblem('pi-1', { operators: ['ops'] })).toBeUndefined();
  });
});
