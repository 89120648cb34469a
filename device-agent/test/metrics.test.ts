/**
 * The agent's metrics before prom-client is loaded: chunks that arrive before the first activation,
 * inference or scrape are kept as plain numbers and appear in the first scrape.
 */
import { describe, expect, it } from '@jest/globals';
import { createAgentMetrics } from '../src/metrics.js';

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(series));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('agent metrics', () => {
  it('counts transfer chunks received before prom-client is loaded, and after', async () => {
    const metrics = createAgentMetrics('pi-1');
    metrics.chunk(100, 'device');
    metrics.chunk(50, 'device');
    metrics.chunk(7, 'group');
    const first = await (await metrics.registry()).metrics();
    expect(value(first, 'edgefleet_agent_transfer_bytes_total{via="device",device="pi-1"}')).toBe(150);
    expect(value(first, 'edgefleet_agent_transfer_chunks_total{via="device",device="pi-1"}')).toBe(2);
    expect(value(first, 'edgefleet_agent_transfer_bytes_total{via="group",device="pi-1"}')).toBe(7);
    metrics.chunk(10, 'group');
    const second = await (await metrics.registry()).metrics();
    expect(value(second, 'edgefleet_agent_transfer_bytes_total{via="group",device="pi-1"}')).toBe(17);
    expect(value(second, 'edgefleet_agent_transfer_chunks_total{via="group",device="pi-1"}')).toBe(2);
  });
});
