import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { WebSocket } from 'ws';
import { topics } from '@edgefleet/protocol';
import type { RunningBroker } from '@edgefleet/broker';
import { startTestBroker } from '../../test/support/broker.js';
import { Inbox, TOKEN, connectClient, endClient, publish, subscribe, withDeadline } from './helpers.js';
import * as p from './packets.js';

/** A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI. */
function makePki(dir: string) {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=edgefleet-test-ca', '-days', '1');
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const name of ['server', 'client']) {
    ssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1',
      ...(name === 'server' ? ['-extfile', 'server.ext'] : []));
  }
  const read = (f: string) => readFileSync(join(dir, f));
  return { dir, ca: read('ca.crt'), clientKey: read('client.key'), clientCert: read('client.crt') };
}

describe('TLS and WebSocket listeners', () => {
  let dir: string;
  let pki: ReturnType<typeof makePki>;
  let broker: RunningBroker;
  let mtls: RunningBroker;
  const devices = [{ id: 'dev1', token: TOKEN('dev1') }, { id: 'dev2', token: TOKEN('dev2') }];
  const operators = [{ id: 'ops', token: TOKEN('ops') }];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'broker-tls-'));
    pki = makePki(dir);
    const tlsFiles = { key: join(dir, 'server.key'), cert: join(dir, 'server.crt') };
    broker = await startTestBroker({
      devices,
      operators,
      tls: { host: '127.0.0.1', port: 0, ...tlsFiles },
      ws: { host: '127.0.0.1', port: 0 },
      maxPacketSize: 64 * 1024,
    });
    mtls = await startTestBroker({
      devices,
      operators,
      tcp: false,
      tls: { host: '127.0.0.1', port: 0, ...tlsFiles, ca: join(dir, 'ca.crt'), requestCert: true },
    });
  });
  afterAll(async () => {
    await Promise.all([broker?.close(), mtls?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('carries MQTT over TLS with the same authentication and ACL as TCP', async () => {
    const url = `mqtts://127.0.0.1:${broker.ports.tls}`;
    const device = await connectClient(url, { clientId: 'dev1', username: 'dev1', password: TOKEN('dev1'), ca: pki.ca });
    const op = await connectClient(broker.url, { clientId: 'ops', username: 'ops', password: TOKEN('ops') });
    const inbox = new Inbox(op);
    await subscribe(op, topics.allDevices('status'));
    expect(await subscribe(device, ['#'])).toEqual([128]);
    await publish(device, topics.device('dev1', 'status'), 'over tls');
    await inbox.waitForCount(1);
    expect(inbox.messages[0]!.payload.toString()).toBe('over tls');
    await expect(connectClient(url, { clientId: 'dev1', username: 'dev1', password: 'bad', ca: pki.ca })).rejects.toMatchObject({ code: 4 });
    // the packet guard sits in front of TLS too: a publish announcing 200 MB is refused from its header
    const raw = tlsConnect({ host: '127.0.0.1', port: broker.ports.tls!, ca: pki.ca });
    await withDeadline(new Promise((resolve, reject) => raw.once('secureConnect', resolve).once('error', reject)), 5000, 'TLS handshake');
    const rawClosed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    raw.on('error', () => {
      /* the close is what we check */
    });
    raw.write(p.connect({ clientId: 'dev2', username: 'dev2', password: TOKEN('dev2') }));
    raw.write(Buffer.concat([Buffer.from([0x30]), p.varint(200 * 1024 * 1024), p.str(topics.device('dev2', 'status'))]));
    await withDeadline(rawClosed, 5000, 'the broker to close the TLS connection');
    await publish(device, topics.device('dev1', 'status'), 'still over tls');
    await inbox.waitForCount(2);
    // a client that checks the server certificate against another CA refuses to talk
    await expect(connectClient(url, { clientId: 'dev1', username: 'dev1', password: TOKEN('dev1') })).rejects.toThrow(/certificate/);
    await Promise.all([endClient(device), endClient(op)]);
  });

  it('requires a client certificate signed by the CA when requestCert is on', async () => {
    expect(mtls.ports.tcp).toBeUndefined();
    const url = `mqtts://127.0.0.1:${mtls.ports.tls}`;
    const base = { clientId: 'dev1', username: 'dev1', password: TOKEN('dev1'), ca: pki.ca };
    const ok = await connectClient(url, { ...base, key: pki.clientKey, cert: pki.clientCert });
    expect(ok.connected).toBe(true);
    await endClient(ok);
    await expect(connectClient(url, base)).rejects.toThrow();
  });

  it('carries MQTT over WebSocket, with the guard in front', async () => {
    const wsUrl = `ws://127.0.0.1:${broker.ports.ws}`;
    const device = await connectClient(wsUrl, { clientId: 'dev2', username: 'dev2', password: TOKEN('dev2') });
    const deviceInbox = new Inbox(device);
    expect(await subscribe(device, [topics.device('dev2', 'commands'), topics.device('dev1', 'commands')])).toEqual([1, 128]);
    const op = await connectClient(wsUrl, { clientId: 'ops-ws', username: 'ops', password: TOKEN('ops') });
    await publish(op, topics.device('dev2', 'commands'), 'over ws');
    await deviceInbox.waitForCount(1);
    expect(deviceInbox.messages[0]!.payload.toString()).toBe('over ws');

    // raw WebSocket: a valid CONNECT then a QoS 3 PUBLISH gets the connection closed
    const raw = new WebSocket(wsUrl, 'mqtt');
    await withDeadline(new Promise((resolve, reject) => raw.once('open', resolve).once('error', reject)), 5000, 'ws open');
    const closedRaw = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    raw.send(p.connect({ clientId: 'dev1', username: 'dev1', password: TOKEN('dev1') }));
    raw.send(p.publish(topics.device('dev1', 'status'), 'x', { flags: 0b0110 }));
    await withDeadline(closedRaw, 5000, 'the broker to close the WebSocket');

    // one WebSocket message over the packet limit is refused by ws itself before it is buffered
    const big = new WebSocket(wsUrl, 'mqtt');
    await withDeadline(new Promise((resolve, reject) => big.once('open', resolve).once('error', reject)), 5000, 'ws open');
    const closedBig = new Promise<number>((resolve) => big.once('close', (code) => resolve(code)));
    big.on('error', () => {
      /* the close code is what we check */
    });
    big.send(Buffer.alloc(200 * 1024));
    expect(await withDeadline(closedBig, 5000, 'oversized ws message to be refused')).toBe(1009);

    // the well-behaved WebSocket clients are unaffected
    await publish(op, topics.device('dev2', 'commands'), 'still');
    await deviceInbox.waitForCount(2);
    await Promise.all([endClient(device), endClient(op)]);
  });
});
