/**
 * What the agent core needs from the model service (device-agent/src/models,
 * helper B2) and the transfer receiver (device-agent/src/transfer.ts, helper C),
 * as agreed in the contracts. The real implementations are loaded at start.
 */
import type { Logger } from 'pino';
import type {
  CommandResult,
  DeviceIdentity,
  FleetEvent,
  Manifest,
  ModelHealth,
  ModelState,
  ParsedParams,
  SignedManifest,
  TensorInfo,
} from '@edgefleet/protocol';

export interface ModelService {
  list(): ModelState[];
  describe(name: string, version?: number): { name: string; version: number; inputs: TensorInfo[]; outputs: TensorInfo[] };
  infer(params: ParsedParams<'infer'>): Promise<CommandResult<'infer'>>;
  install(manifest: Manifest, stagedFile: string): Promise<void>;
  activate(name: string, version: number): Promise<{ model: string; version: number; previous: number | null }>;
  rollback(name: string, signed?: SignedManifest): Promise<{ model: string; version: number; previous: number | null }>;
  remove(name: string, version: number): Promise<{ removed: boolean }>;
  highestAccepted(name: string): number;
  recordAccepted(name: string, version: number): Promise<void>;
  active(): { name: string; version: number }[];
  drainHealth(): Record<string, ModelHealth>;
  runtime(): { version: string; executionProviders: string[] };
  close(): Promise<void>;
}

export type CreateModelService = (opts: { dataDir: string; threads?: number; keepVersions?: number; logger: Logger }) => Promise<ModelService>;

export interface InferenceServer {
  port: number;
  close(): Promise<void>;
}
export type CreateInferenceServer = (models: ModelService, opts: { host?: string; port: number; logger: Logger }) => Promise<InferenceServer>;

export interface TransferReceiver {
  offer(p: ParsedParams<'transfer.offer'>): Promise<CommandResult<'transfer.offer'>>;
  status(p: ParsedParams<'transfer.status'>): Promise<CommandResult<'transfer.status'>>;
  commit(p: ParsedParams<'transfer.commit'>): Promise<CommandResult<'transfer.commit'>>;
  chunk(transferId: string, index: number, payload: Buffer): void;
  close(): Promise<void>;
}
export type CreateTransferReceiver = (opts: {
  dataDir: string;
  publicKeyPem: string;
  identity: DeviceIdentity;
  models: ModelService;
  publishEvent: (e: FleetEvent) => void;
  logger: Logger;
}) => TransferReceiver;
