export { createBroker, BrokerConfigError, type BrokerOptions, type RunningBroker } from './broker.js';
export {
  assertCredential,
  staticCredentials,
  type Credential,
  type CredentialStore,
} from './credentials.js';
export { PacketGuard, guardStream, Violation, DEFAULT_LIMITS, MAX_CONTROL_PACKET, type GuardLimits } from './guard.js';
export { parseBrokerArgs, loadCredentialsFile, brokerCli, type BrokerCliConfig } from './cli.js';
