import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { topics } from '@edgefleet/protocol';
import { BrokerConfigError, createBroker, parseBrokerArgs } from '@edgefleet/broker';
import { testLogger } from '../../test/support/broker.js';
import { TOKEN, connectClient, endClient, run, subscribe, withDeadline } from './helpers.js';

const BIN = fileURLToPath(new URL('../dist/bin/broker.js', import.meta.url));

describe('the broker bin', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'broker-cli-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const file = (name: string, content: unknown) => {
    const path = join(dir, name);
    writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
    return path;
  };

  it('hash-token reads the token from stdin and prints a hash the broker accepts', async () => {
    const hashed = await run('node', [BIN, 'hash-token'], { input: `${TOKEN('dev1')}\n` });
    expect(hashed.code).toBe(0);
    const tokenHash = hashed.stdout.trim();
    expect(tokenHash).toMatch(/^scrypt\$/);
    expect(hashed.stdout).not.toContain(TOKEN('dev1'));

    const creds = file('creds.json', { devices: [{ id: 'dev1', tokenHash, groups: ['lab'] }], operators: [] });
    const child = spawn('node', [BIN, '--credentials', creds, '--host', '127.0.0.1', '--port', '0', '--log-level', 'warn'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const line = await withDeadline(
        new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once('line', resolve)),
        10000,
        'the broker to report its port',
      );
      const { url, ports } = JSON.parse(line) as { url: string; ports: { tcp: number } };
      expect(url).toBe(`mqtt://127.0.0.1:${ports.tcp}`);
      const device = await connectClient(url, { clientId: 'dev1', username: 'dev1', password: TOKEN('dev1') });
      expect(await subscribe(device, [topics.group('lab', 'commands'), '#'])).toEqual([1, 128]);
      await endClient(device);
      await expect(connectClient(url, { clientId: 'anon' })).rejects.toMatchObject({ code: 5 });
    } finally {
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      expect(await withDeadline(exited, 5000, 'the broker to stop on SIGTERM')).toBe(0);
    }
  });

  const bad: [string, () => string[], RegExp][] = [
    ['no credentials and no anonymous switch', () => [], /give --credentials/],
    ['an unknown flag', () => ['--allow-anonymous', '--prot', '1'], /Unknown argument: prot/],
    ['a port that is not a number', () => ['--allow-anonymous', '--port', 'abc'], /--port must be a port number/],
    ['a port out of range', () => ['--allow-anonymous', '--port', '70000'], /--port must be a port number/],
    ['TLS without key and certificate', () => ['--allow-anonymous', '--tls-port', '8883'], /needs --tls-key/],
    ['a missing TLS key file', () => ['--allow-anonymous', '--port', '0', '--tls-port', '0', '--tls-key', '/nonexistent.key', '--tls-cert', '/nonexistent.crt'], /cannot read tls.key file/],
    ['a bad redis URL', () => ['--allow-anonymous', '--redis', 'localhost:6379'], /--redis must be a redis:\/\//],
    ['a packet size under 1 KiB', () => ['--allow-anonymous', '--port', '0', '--max-packet-size', '10'], /maxPacketSize must be an integer from 1024/],
    ['a missing credentials file', () => ['--credentials', '/nonexistent.json'], /cannot read credentials file/],
    ['credentials that are not JSON', () => ['--credentials', file('bad.json', '{nope')], /cannot read credentials file/],
    ['a credential with both token and tokenHash', () => ['--credentials', file('both.json', { devices: [{ id: 'd', token: TOKEN('d'), tokenHash: 'x' }] })], /exactly one of/],
    ['a tokenHash that is not a hash', () => ['--credentials', file('plain.json', { devices: [{ id: 'd', tokenHash: 'secret' }] })], /not a scrypt hash/],
    ['a device id that is not a name', () => ['--credentials', file('id.json', { devices: [{ id: '../x', token: TOKEN('x') }] })], /credential id/],
    ['an unknown key', () => ['--credentials', file('key.json', { devices: [], admins: [] })], /Unrecognized key/],
  ];
  // parsed in-process (the same function the bin calls), then started when parsing passes
  it.each(bad)('refuses %s with a clear message', async (_name, args, message) => {
    const attempt = async () => {
      const { options } = await parseBrokerArgs(args());
      const broker = await createBroker({ ...options, logger: testLogger() });
      await broker.close(); // not reached when the configuration is refused
    };
    await expect(attempt()).rejects.toThrow(message);
    await expect(attempt()).rejects.toBeInstanceOf(BrokerConfigError);
  });

  it('exits 2 from the bin on a bad option, both while parsing and while starting', async () => {
    for (const args of [['--allow-anonymous', '--prot', '1'], ['--allow-anonymous', '--port', '0', '--tls-port', '0', '--tls-key', '/nonexistent.key', '--tls-cert', '/x.crt']]) {
      const r = await run('node', [BIN, ...args]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^broker: (Unknown argument: prot|cannot read tls.key file)/m);
    }
  });
});
