/**
 * Test fixture: a real embedded broker on 127.0.0.1, ephemeral port, with the given
 * device and operator credentials (tokens hashed exactly as in production).
 */
import { pino } from 'pino';
import { hashSecret } from '@edgefleet/node-io';
import { createBroker, staticCredentials, type BrokerOptions, type Credential, type RunningBroker } from '@edgefleet/broker';

export interface TestBrokerOptions extends Omit<Partial<BrokerOptions>, 'credentials'> {
  devices?: { id: string; token: string; groups?: string[] }[];
  operators?: { id: string; token: string }[];
}

/** Logs are silent unless TEST_LOG_LEVEL is set (e.g. TEST_LOG_LEVEL=debug). */
export function testLogger(name = 'broker') {
  return pino({ name, level: process.env.TEST_LOG_LEVEL ?? 'silent' }, pino.destination(2));
}

export async function startTestBroker(opts: TestBrokerOptions = {}): Promise<RunningBroker> {
  const { devices = [], operators = [], ...rest } = opts;
  const credentials: Credential[] = [
    ...devices.map((d): Credential => ({ role: 'device', id: d.id, groups: d.groups ?? [], secretHash: hashSecret(d.token) })),
    ...operators.map((o): Credential => ({ role: 'operator', id: o.id, groups: [], secretHash: hashSecret(o.token) })),
  ];
  return createBroker({
    logger: testLogger(),
    ...rest,
    credentials: staticCredentials(credentials),
    tcp: rest.tcp ?? { host: '127.0.0.1', port: 0 },
  });
}
