/** The `containers.*` commands, as entries for the agent's dispatch table. */
import { FleetError } from '@edgefleet/protocol';
import type { HandlerTable } from '../commands.js';
import type { ContainerService } from './service.js';

export function containerHandlers(containers: () => ContainerService | undefined): HandlerTable {
  const require = (): ContainerService => {
    const c = containers();
    if (!c) throw new FleetError('unavailable', 'the containers service is not running on this device');
    return c;
  };
  return {
    'containers.list': async () => require().list(),
    'containers.logs': async (p) => require().logs(p.app, p.lines),
    'containers.stop': async (p) => require().stop(p.app),
    'containers.start': async (p) => require().startApp(p.app),
    'containers.deploy': async (p) => require().deploy(p.app, p.version),
    'containers.remove': async (p) => require().removeApp(p.app),
    'containers.rollback': async (p) => {
      const r = await require().rollback(p.app);
      return { app: r.app, version: r.version, previous: r.previous };
    },
  };
}
