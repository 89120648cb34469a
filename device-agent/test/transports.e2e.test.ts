/**
 * The agent over every broker transport it accepts: mqtts:// with a CA file and a
 * client certificate (broker requires client certs), and ws://.
 */
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import type { RunningBroker } from '@edgefleet/broker';
import { createRequester } from '@edgefleet/host-manager';
import { startTestBroker } from '../../test/support/broker.js';
import { cleanupAgents, connectOperator, spawnAgent, startAgent, watchStatus } from '../../test/support/agent-process.js';
import type { AgentProcess, StatusWatcher } from '../../test/support/agent-process.js';

const OPERATOR = { id: 'op', token: 'operator-token-x' };
const DEVICE = { id: 'pi-tls', token: 'device-token-tls' };

function makePki(dir: string): void {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=agent-test-ca', '-days', '1');
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const name of ['server', 'client']) {
    ssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1',
      ...(name === 'server' ? ['-extfile', 'server.ext'] : []));
  }
}

let dir: string;
let broker: RunningBroker;
let operator: MqttClient;
let watcher: StatusWatcher;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'agent-pki-'));
  makePki(dir);
  broker = await startTestBroker({
    devices: [DEVICE],
    operators: [OPERATOR],
    tls: { host: '127.0.0.1', port: 0, key: join(dir, 'server.key'), cert: join(dir, 'server.crt'), ca: join(dir, 'ca.crt'), requestCert: true },
    ws: { host: '127.0.0.1', port: 0 },
  });
  operator = await connectOperator(broker.url, OPERATOR);
  watcher = await watchStatus(operator);
});

afterAll(async () => {
  await cleanupAgents(...agents);
  await operator?.endAsync();
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('broker transports', () => {
  it('mqtts:// with a CA file and a client certificate', async () => {
    const a = await startAgent(
      {
        broker: `mqtts://127.0.0.1:${broker.ports.tls}`,
        ...DEVICE,
        args: ['--ca-file', join(dir, 'ca.crt'), '--cert-file', join(dir, 'client.crt'), '--key-file', join(dir, 'client.key')],
      },
      watcher,
    );
    agents.push(a);
    const requester = await createRequester(operator);
    expect((await requester.request(DEVICE.id, 'ping', {})).pong).toBe(true);
    requester.close();
    expect((await a.kill('SIGTERM')).code).toBe(0);
  });

  it('mqtts:// without the CA file is refused (the broker certificate is not trusted) and retried with backoff', async () => {
    const a = await spawnAgent({ broker: `mqtts://127.0.0.1:${broker.ports.tls}`, ...DEVICE, args: ['--cert-file', join(dir, 'client.crt'), '--key-file', join(dir, 'client.key')] });
    agents.push(a);
    const error = await a.waitForLog((l) => l.msg === 'MQTT error');
    expect(JSON.stringify(error)).toMatch(/certificate/i);
    await a.waitForLog((l) => l.msg === 'reconnecting after backoff' && Number(l.attempt) >= 2);
  });

  it('ws://', async () => {
    const seen = watcher.history.get(DEVICE.id)?.length ?? 0;
    const a = await spawnAgent({ broker: `ws://127.0.0.1:${broker.ports.ws}`, ...DEVICE });
    agents.push(a);
    await watcher.waitFor(DEVICE.id, true, 10_000, seen);
    const requester = await createRequester(operator);
    expect((await requester.request(DEVICE.id, 'info', {})).platform).toBe(process.platform);
    requester.close();
  });
});
