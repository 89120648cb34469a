/** What the transfer receiver needs from the rest of the agent, and what it offers it. */
import type { Logger } from 'pino';
import type { CommandResult, DeviceIdentity, FleetEvent, Manifest, ModelState, ParsedParams, SignedManifest } from '@edgefleet/protocol';

/** What the receiver needs from the model store (a subset of ModelService). */
export interface ReceiverModels {
  list(): ModelState[];
  install(manifest: Manifest, stagedFile: string): Promise<void>;
  activate(name: string, version: number): Promise<{ model: string; version: number; previous: number | null }>;
  remove?(name: string, version: number): Promise<{ removed: boolean }>;
  highestAccepted(name: string): number;
  /** The highest rollback sequence number used for the model (persisted), or 0. */
  lastRollbackSeq?(name: string): number;
  /** Activates a version below the highest accepted with its signed rollback manifest, using up its sequence number (absent: such commits are refused). */
  rollback?(name: string, signed: SignedManifest): Promise<{ model: string; version: number; previous: number | null }>;
  recordAccepted(name: string, version: number): Promise<void>;
}

/** What the receiver needs from the containers service for image manifests (a subset of ContainerService). */
export interface ReceiverImages {
  /** Refuses (throws) an image this device cannot take: wrong platform, no engine. */
  checkOffer(manifest: Manifest): Promise<void>;
  /** stop-then-download: make room before the staging is created (no-op for download-then-replace). */
  prepareDownload(manifest: Manifest): Promise<void>;
  isInstalled(app: string, version: number, image: string): boolean;
  /** `sha256Verified`: the receiver has just checked the staged archive against the manifest. */
  installImage(manifest: Manifest, archivePath: string, opts: { sha256Verified: boolean }): Promise<unknown>;
  /** Runs an installed version; publishes container.activated or container.failed itself. */
  deploy(app: string, version: number): Promise<{ previous: number | null }>;
  discard(app: string, version: number): Promise<void>;
  active(app: string): number | null;
  highestAccepted(app: string): number;
  recordAccepted(app: string, version: number): Promise<void>;
}

export interface DiskSpace {
  /** Bytes available to this process. */
  freeBytes: number;
}

export interface TransferReceiverOptions {
  dataDir: string;
  publicKeyPem: string;
  identity: DeviceIdentity;
  models: ReceiverModels;
  /** Image manifests (`kind: 'image'`) are refused without it. */
  images?: ReceiverImages;
  publishEvent: (event: FleetEvent) => void;
  logger: Logger;
  /** Free space where the staging file goes; defaults to fs.statfs (tests inject a full disk with it). */
  diskSpace?: (dir: string) => Promise<DiskSpace>;
  now?: () => Date;
  /** Least time between two transfer.progress events of one transfer. */
  progressIntervalMs?: number;
  /** Bytes kept free beyond the file itself (and beyond what the other staged transfers may still write). */
  diskReserveBytes?: number;
  /**
   * A staged transfer that was neither offered again nor sent a chunk for this long is removed, with its
   * files and file descriptors: at start (by the files' times) and every `sweepEveryMs`. Default 24 h.
   */
  expiryMs?: number;
  /** How often expired stagings are looked for; default a quarter of the expiry, between 1 s and 15 min. */
  sweepEveryMs?: number;
  /** fdatasync the staging file in the background every this many bytes received; 0 (the default) = only at commit. */
  backgroundSyncBytes?: number;
  /**
   * Always read the staged file back and hash it at commit, even when every chunk arrived in order and
   * the whole-file hash was computed from the verified chunks as they came (the default skips that
   * second pass; the model store re-verifies what it installs).
   */
  verifyFromDisk?: boolean;
}

export interface TransferReceiver {
  offer(p: ParsedParams<'transfer.offer'>): Promise<CommandResult<'transfer.offer'>>;
  status(p: ParsedParams<'transfer.status'>): Promise<CommandResult<'transfer.status'>>;
  commit(p: ParsedParams<'transfer.commit'>): Promise<CommandResult<'transfer.commit'>>;
  chunk(transferId: string, index: number, payload: Buffer): void;
  /** Removes expired stagings now (it also happens at start and periodically); returns how many. */
  reclaimExpired(): Promise<number>;
  close(): Promise<void>;
  /** Counters for tests and logs: chunks written, duplicates, rejected by reason. */
  stats(): ReceiverStats;
}

export interface ReceiverStats {
  written: number;
  duplicates: number;
  unknownTransfer: number;
  rejected: Record<string, number>;
  /** Stagings removed because they expired. */
  reclaimed: number;
}
