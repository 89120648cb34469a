// Embedded broker in its own process for bench/transfer.js: devices d0..d{max-1}; device di
// is in group 'upto<k>' for every fleet size k of the run with i < k; one operator. Prints {"port": N} once listening; exits on SIGTERM.
import { pino } from 'pino';
import { hashSecret } from '@edgefleet/node-io';
import { createBroker, staticCredentials } from '@edgefleet/broker';

const sizes = (process.argv[2] ?? '1,10,50').split(',').map(Number);
const count = Math.max(...sizes);
const maxPacketSize = Number(process.argv[3] ?? 8 * 1024 * 1024);
// scrypt once: every device uses the same bench token (login cost is not what is measured)
const deviceHash = hashSecret('bench-device');
const credentials = staticCredentials([
  ...Array.from({ length: count }, (_, i) => ({ role: 'device', id: `d${i}`, groups: sizes.filter((k) => i < k).map((k) => `upto${k}`), secretHash: deviceHash })),
  { role: 'operator', id: 'bench', groups: [], secretHash: hashSecret('bench-operator') },
]);
const broker = await createBroker({
  credentials,
  tcp: { host: '127.0.0.1', port: 0 },
  maxPacketSize,
  logger: pino({ level: 'warn' }, pino.destination(2)),
});
process.stdout.write(`${JSON.stringify({ port: broker.ports.tcp })}\n`);
process.on('SIGTERM', () => void broker.close().then(() => process.exit(0)));
process.stdin.on('end', () => process.exit(0)); // the bench went away
process.stdin.resume();
