export { createBroker, BrokerConfigError, type BrokerOptions, type BrokerStats, type RunningBroker } from './broker.js';
export { DEFAULT_OUTBOUND_LIMITS, type OutboundLimits } from './outbound.js';
export { DEFAULT_ADMISSION_LIMITS, addressKey, type AdmissionLimits } from './admission.js';
export {
  assertCredential,
  staticCredentials,
  type Credential,
  type CredentialStore,
} from './credentials.js';
export { PacketGuard, guardStream, Violation, DEFAULT_LIMITS, MAX_CONTROL_PACKET, type GuardLimits } from './guard.js';
export { parseBrokerArgs, loadCredentialsFile, brokerCli, type BrokerCliConfig } from './cli.js';
