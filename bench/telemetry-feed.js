/**
 * A dashboard in its own process for bench/telemetry.js: subscribes to the controller's live
 * feed (/ws, operator token in the header, as the CLI's `watch` does) and measures, for
 * every telemetry event, the time from the device's sample to its arrival here.
 *
 *   argv: <http url> ; env FEED_TOKEN
 *   → {type:'ready'} after the snapshot;  {type:'stats', reset?} → {type:'stats', latency, received}
 */
import WebSocket from 'ws';
import { Histogram } from './sim/histogram.js';

const url = process.argv[2].replace(/^http/, 'ws') + '/ws';
const ws = new WebSocket(url, { headers: { authorization: `Bearer ${process.env.FEED_TOKEN}` } });
const latency = new Histogram();
let received = 0;
let ready = false;
ws.on('message', (data) => {
  const now = Date.now();
  const text = String(data);
  if (!ready) {
    ready = true;
    process.send({ type: 'ready' });
    return;
  }
  // the cheap test first: this process must not be the bottleneck it measures
  if (!text.startsWith('{"type":"telemetry"') && !text.startsWith('{"type":"batch"')) return;
  const e = JSON.parse(text);
  for (const one of e.type === 'batch' ? e.events : [e]) {
    if (one.type !== 'telemetry') continue;
    latency.record(now - one.sample.ts);
    received++;
  }
});
ws.on('error', (error) => {
  process.stderr.write(`feed: ${error.message}\n`);
  process.exit(1);
});
ws.on('close', () => process.exit(0));
process.on('message', (msg) => {
  if (msg.type !== 'stats') return;
  process.send({ type: 'stats', latency: latency.snapshot(), received });
  if (msg.reset) latency.reset();
});
process.on('disconnect', () => process.exit(0));
