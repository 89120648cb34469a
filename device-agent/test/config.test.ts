import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateFleetKeys } from '@edgefleet/protocol';
import { CONFIG_KEYS, ConfigError, envName, flagName, loadConfig, redactConfig, splitCommandLine } from '../src/config.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cfg-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function configError(sources: Parameters<typeof loadConfig>[0]): Promise<ConfigError> {
  try {
    await loadConfig(sources);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration', () => {
  it('derives env names and flags from the same keys', () => {
    expect(envName('telemetryIntervalMs')).toBe('EDGEFLEET_TELEMETRY_INTERVAL_MS');
    expect(flagName('telemetryIntervalMs')).toBe('telemetry-interval-ms');
    expect(Object.keys(CONFIG_KEYS)).toContain('fleetPublicKey');
  });

  it('the HTTP body limit: a flag or EDGEFLEET_HTTP_MAX_BODY_MB, positive', async () => {
    const env = { EDGEFLEET_TOKEN: 't', EDGEFLEET_DEVICE: 'd' };
    expect((await loadConfig({ argv: ['--http-max-body-mb', '0.5'], env })).config.httpMaxBodyMb).toBe(0.5);
    expect((await loadConfig({ env: { ...env, EDGEFLEET_HTTP_MAX_BODY_MB: '256' } })).config.httpMaxBodyMb).toBe(256);
    expect((await configError({ argv: ['--http-max-body-mb', '0'], env })).message).toMatch(/httpMaxBodyMb \(flag --http-max-body-mb, env EDGEFLEET_HTTP_MAX_BODY_MB/);
  });

  it('merges file < env < flags and applies defaults', async () => {
    const file = join(dir, 'agent.json');
    await writeFile(file, JSON.stringify({ device: 'from-file', groups: ['a'], telemetryIntervalMs: 5000, httpPort: 9000 }));
    const { config, origin } = await loadConfig({
      argv: ['--config', file, '--http-port', '9100', '--groups', 'x,y'],
      env: { EDGEFLEET_DEVICE_TOKEN: 's3cret', EDGEFLEET_TELEMETRY_INTERVAL_MS: '2500', EDGEFLEET_DEVICE: 'from-env' },
      cwd: dir,
    });
    expect(config.device).toBe('from-env');
    expect(config.telemetryIntervalMs).toBe(2500);
    expect(config.httpPort).toBe(9100);
    expect(config.groups).toEqual(['x', 'y']);
    expect(config.broker).toEqual(['mqtt://127.0.0.1:1883']);
    expect(config.httpHost).toBe('127.0.0.1');
    expect(config.httpMaxBodyMb).toBe(64);
    expect(config.token).toBe('s3cret');
    expect(origin).toMatchObject({ device: 'env', httpPort: 'flag', groups: 'flag', telemetryIntervalMs: 'env' });
  });

  it('takes one broker or a list of them (a cluster) from a flag, the environment or the file', async () => {
    const env = { EDGEFLEET_DEVICE_TOKEN: 't', EDGEFLEET_DEVICE: 'd' };
    expect((await loadConfig({ argv: ['--broker', 'mqtt://a:1883'], env })).config.broker).toEqual(['mqtt://a:1883']);
    expect((await loadConfig({ argv: ['--broker', 'mqtt://a:1883, mqtt://b:1884'], env })).config.broker).toEqual(['mqtt://a:1883', 'mqtt://b:1884']);
    expect((await loadConfig({ env: { ...env, EDGEFLEET_BROKER: 'mqtts://a:8883,mqtts://b:8883' } })).config.broker).toEqual(['mqtts://a:8883', 'mqtts://b:8883']);
    for (const [name, broker] of [['string', 'ws://a:8080,ws://b:8080'], ['array', ['ws://a:8080', 'ws://b:8080']]] as const) {
      const file = join(dir, `brokers-${name}.json`);
      await writeFile(file, JSON.stringify({ broker }));
      expect((await loadConfig({ argv: ['--config', file], env, cwd: dir })).config.broker).toEqual(['ws://a:8080', 'ws://b:8080']);
    }
    // one bad URL in the list names the key; a list cannot carry paths (one URL can)
    expect((await configError({ argv: ['--broker', 'mqtt://a:1883,http://b'], env })).message).toMatch(/broker .*expected a URL starting with mqtt:\/\//);
    expect((await configError({ argv: ['--broker', 'ws://a:8080/mqtt,ws://b:8080/mqtt'], env })).message).toMatch(/broker .*cannot carry paths/);
    expect((await loadConfig({ argv: ['--broker', 'ws://a:8080/mqtt'], env })).config.broker).toEqual(['ws://a:8080/mqtt']);
    expect((await configError({ argv: ['--broker', ' , '], env })).message).toMatch(/broker .*at least one broker URL/);
  });

  it('reads the device token from EDGEFLEET_DEVICE_TOKEN, and from the old EDGEFLEET_TOKEN with a warning', async () => {
    expect(envName('token')).toBe('EDGEFLEET_DEVICE_TOKEN');
    const current = await loadConfig({ argv: ['--device', 'd1'], env: { EDGEFLEET_DEVICE_TOKEN: 'new', EDGEFLEET_TOKEN: 'old' } });
    expect(current.config.token).toBe('new');
    expect(current.warnings.join('\n')).not.toMatch(/deprecated/);
    const old = await loadConfig({ argv: ['--device', 'd1'], env: { EDGEFLEET_TOKEN: 'old' } });
    expect(old.config.token).toBe('old');
    expect(old.warnings.join('\n')).toMatch(/EDGEFLEET_TOKEN is deprecated .*use EDGEFLEET_DEVICE_TOKEN/);
    expect(old.warnings.join('\n')).not.toContain('old');
  });

  it('names the bad key, where it came from and what is expected', async () => {
    const error = await configError({
      argv: ['--device', 'bad/id', '--broker', 'http://x', '--http-port', '70000'],
      env: { EDGEFLEET_DEVICE_TOKEN: 't', EDGEFLEET_TELEMETRY_INTERVAL_MS: 'soon' },
    });
    expect(error.exitCode).toBe(2);
    expect(error.message).toMatch(/device \(flag --device, env EDGEFLEET_DEVICE; given by flag\): use 1-64 letters/);
    expect(error.message).toMatch(/broker .*mqtt:\/\/, mqtts:\/\/, ws:\/\//);
    expect(error.message).toMatch(/httpPort .*<=65535/);
    expect(error.message).toMatch(/telemetryIntervalMs .*given by env.*"soon"/);
  });

  it('requires a device and a token, and never echoes the token', async () => {
    const missing = await configError({ argv: [], env: {} });
    expect(missing.message).toMatch(/device .*required/);
    expect(missing.message).toMatch(/token .*expected a device token/);
    const bad = await configError({ argv: ['--device', 'd1'], env: { EDGEFLEET_DEVICE_TOKEN: 'x'.repeat(10), EDGEFLEET_LOG_LEVEL: 'loud' } });
    expect(bad.message).toMatch(/logLevel/);
    expect(bad.message).not.toContain('xxxxxxxxxx');
  });

  it('rejects unknown keys in the file and unknown flags', async () => {
    const file = join(dir, 'typo.json');
    await writeFile(file, JSON.stringify({ device: 'd1', token: 't', telemetryInterval: 5 }));
    expect((await configError({ argv: ['--config', file], env: {} })).message).toMatch(/unknown key\(s\) telemetryInterval/);
    expect((await configError({ argv: ['--device', 'd1', '--bogus', '1'], env: { EDGEFLEET_DEVICE_TOKEN: 't' } })).message).toMatch(/Unknown argument.*bogus/);
    await writeFile(file, '{not json');
    expect((await configError({ argv: ['--config', file], env: {} })).message).toMatch(/not valid JSON/);
  });

  it('reads the token file, the fleet key file or inline PEM, and redacts secrets', async () => {
    const keys = generateFleetKeys();
    await writeFile(join(dir, 'token'), 'file-token\n');
    await writeFile(join(dir, 'fleet.pub'), keys.publicKeyPem);
    const { config } = await loadConfig({
      argv: ['--device', 'd1', '--token-file', 'token', '--fleet-public-key', 'fleet.pub', '--legacy-program', 'python3 "my infer.py" -v'],
      env: {},
      cwd: dir,
    });
    expect(config.token).toBe('file-token');
    expect(config.fleetPublicKeyPem).toBe(keys.publicKeyPem);
    expect(config.legacyProgram).toEqual(['python3', 'my infer.py', '-v']);
    const inline = await loadConfig({ argv: ['--device', 'd1'], env: { EDGEFLEET_DEVICE_TOKEN: 't', EDGEFLEET_FLEET_PUBLIC_KEY: keys.publicKeyPem } });
    expect(inline.config.fleetPublicKeyPem).toBe(keys.publicKeyPem);
    expect(JSON.stringify(redactConfig(config))).not.toContain('file-token');
    const notPem = await configError({ argv: ['--device', 'd1', '--fleet-public-key', 'token'], env: { EDGEFLEET_DEVICE_TOKEN: 't' }, cwd: dir });
    expect(notPem.message).toMatch(/fleetPublicKey: expected a PEM public key/);
    const noFile = await configError({ argv: ['--device', 'd1', '--ca-file', 'nope.pem'], env: { EDGEFLEET_DEVICE_TOKEN: 't' }, cwd: dir });
    expect(noFile.message).toMatch(/caFile: cannot read CA file/);
  });

  it('checks relations between keys', async () => {
    const error = await configError({ argv: ['--device', 'd1', '--reconnect-min-ms', '5000', '--reconnect-max-ms', '1000'], env: { EDGEFLEET_DEVICE_TOKEN: 't' } });
    expect(error.message).toMatch(/reconnectMaxMs.*at least reconnectMinMs/);
  });

  it('splits command lines with quotes', () => {
    expect(splitCommandLine(`sh -c 'echo "hi there"'`)).toEqual(['sh', '-c', 'echo "hi there"']);
    expect(splitCommandLine('a  b\tc')).toEqual(['a', 'b', 'c']);
  });
});
