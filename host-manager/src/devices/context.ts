/** What the device operations work with. */
import type { BrokerClient } from '../broker-client.js';
import type { FleetKeys } from '../access/fleet-keys.js';
import type { Metrics } from '../api/metrics.js';
import type { BrokerAccounts } from '../broker-setup/dynsec.js';
import type { RecordAudit } from '../state/audit.js';
import type { FleetRepository } from '../state/repository.js';
import type { Fleet } from './presence.js';
import type { Requester } from './requester.js';

export interface DeviceContext {
  state: FleetRepository;
  fleet: Fleet;
  requester: Requester;
  client: BrokerClient;
  keys: FleetKeys;
  audit: RecordAudit;
  /** Closes a removed device's connection on the embedded broker. */
  disconnect(id: string): void;
  legacyTopic: string;
  advertised: string;
  timeoutMs: number;
  enrolmentOn: boolean;
  metrics?: Metrics;
  /** Mosquitto's dynamic security, when the controller manages the devices' accounts on an external broker. */
  brokerAccounts?: BrokerAccounts;
  /** The embedded broker (null: an external one). */
  broker: unknown;
}
