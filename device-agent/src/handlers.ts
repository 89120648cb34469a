/** The agent's command handlers: one per command of the protocol, each a call into the part that does it. */
import { FleetError } from '@edgefleet/protocol';
import type { CommandName, DeviceInfo } from '@edgefleet/protocol';
import { BinaryReply } from './commands.js';
import type { HandlerTable } from './commands.js';
import type { AgentConfig } from './config.js';
import type { LegacyChannel } from './legacy.js';
import { logPath, tailFile } from './logs.js';
import type { ModelService } from './models/index.js';
import type { TransferReceiver } from './transfer/index.js';
import { containerHandlers } from './containers/index.js';
import type { ContainerService } from './containers/index.js';
import { appFor } from './inference-target.js';

/** Commands after whose success the device republishes its status (its models, containers or programs changed). */
export const STATUS_CHANGING: ReadonlySet<CommandName> = new Set([
  'models.activate',
  'models.rollback',
  'models.remove',
  'transfer.commit',
  'legacy',
  'containers.stop',
  'containers.start',
  'containers.rollback',
  'containers.deploy',
  'containers.remove',
]);

const STARTED = Date.now();

/** The parts the handlers call; each may be absent (not configured, or not started yet). */
export interface HandlerParts {
  config: AgentConfig;
  info(): Promise<DeviceInfo>;
  models(): ModelService | undefined;
  transfer(): TransferReceiver | undefined;
  legacy(): LegacyChannel | undefined;
  containers(): ContainerService | undefined;
}

export function createHandlers(parts: HandlerParts): HandlerTable {
  const { config } = parts;
  const models = (): ModelService => {
    const m = parts.models();
    if (!m) throw new FleetError('unavailable', 'the model service is not running on this device');
    return m;
  };
  const transfer = (): TransferReceiver => {
    const t = parts.transfer();
    if (!t) {
      throw new FleetError(
        'unavailable',
        config.fleetPublicKeyPem ? 'model transfer is not running' : 'model transfer is off: configure fleetPublicKey (the fleet public key) on this device',
      );
    }
    return t;
  };
  return {
    ping: async () => ({ pong: true, uptimeS: Math.round((Date.now() - STARTED) / 1000) }),
    info: async () => parts.info(),
    infer: async (params, ctx) => {
      const service = appFor(params.model, parts.models(), parts.containers()) ?? models();
      return BinaryReply.of(await service.answer(params, ctx.request.binary));
    },
    'models.list': async () => ({ models: models().list() }),
    'models.activate': async (p) => models().activate(p.model, p.version),
    'models.rollback': async (p) => models().rollback(p.model, p.manifest),
    'models.remove': async (p) => models().remove(p.model, p.version),
    'models.sample': async (p, ctx) => models().receiveSample(p.model, p.version, p.offset, ctx.request.binary),
    logs: async (p) => ({ lines: tailFile(logPath(config.dataDir), p.lines) }),
    'transfer.offer': async (p) => transfer().offer(p),
    'transfer.status': async (p) => transfer().status(p),
    'transfer.commit': async (p) => transfer().commit(p),
    ...containerHandlers(parts.containers),
    legacy: async (p) => {
      const legacy = parts.legacy();
      if (!legacy) throw new FleetError('unavailable', 'the legacy channel is not set up');
      return { message: await legacy.run(p.command) };
    },
  };
}
