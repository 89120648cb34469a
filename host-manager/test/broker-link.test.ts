import { describe, expect, it } from '@jest/globals';
import { brokerUrlOf, brokerUrlsOf } from '../src/broker-link.js';

describe('the external broker address', () => {
  it('takes an IP, host:port or URL, and several of them comma separated (a cluster)', () => {
    expect(brokerUrlOf('10.0.0.5')).toBe('mqtt://10.0.0.5:1883');
    expect(brokerUrlsOf('10.0.0.5')).toEqual(['mqtt://10.0.0.5:1883']);
    expect(brokerUrlsOf('10.0.0.5, b:1884 ,mqtts://c:8883,')).toEqual(['mqtt://10.0.0.5:1883', 'mqtt://b:1884', 'mqtts://c:8883']);
    expect(brokerUrlsOf(' , ')).toEqual([]);
  });
});
