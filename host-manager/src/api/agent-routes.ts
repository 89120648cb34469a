/**
 * The HTTP API's agent bundle routes: the registry (a bundle streamed in as the request body). Rolling an
 * agent version out is `POST /api/rollouts` with `kind: "agent"` and `agent: {version, arches?}` (routes.ts).
 */
import { FleetError } from '@edgefleet/protocol';
import type { Operations } from './contract.js';
import { route } from './http.js';
import type { Route } from './http.js';
import { withUploadedFile } from './upload.js';

/** A bundle holds Node.js and the agent's dependencies (~30–60 MB); past this the body is refused, not stored. */
export const AGENT_UPLOAD_LIMIT = 1024 ** 3;

/** A bundle over the upload cap: refused with the cap (from Content-Length, or at the byte that passes it). */
function bundleTooLarge(declared: number | undefined): FleetError {
  const what = declared === undefined ? 'the agent bundle is' : `the agent bundle of ${declared} bytes is`;
  return new FleetError('too_long', `${what} over the controller's limit of ${AGENT_UPLOAD_LIMIT / 1024 ** 2} MiB per bundle upload; refused before it was stored (build it again with \`hostManager agent bundle\`: a bundle is ~30–60 MB)`);
}

export function agentRoutes(ops: Operations): Route[] {
  return [
    route('GET', '/api/agent/bundles', () => ops.listAgentBundles()),
    route('POST', '/api/agent/bundles', async (req, _p, c) => {
      if (!(req.headers['content-type'] ?? '').includes('application/octet-stream')) {
        throw new FleetError('unsupported_media_type', 'send the bundle (.tar.gz) as the body with Content-Type: application/octet-stream');
      }
      const deadline = c.url.searchParams.get('healthDeadlineS');
      const healthDeadlineS = deadline === null ? undefined : Number(deadline);
      if (healthDeadlineS !== undefined && !Number.isInteger(healthDeadlineS)) throw new FleetError('invalid_params', `healthDeadlineS must be whole seconds, not "${deadline}"`);
      // streamed to disk under the cap (upload.ts), never held in memory; the registry takes the file over
      const upload = { maxBytes: AGENT_UPLOAD_LIMIT, suffix: '.tar.gz', tooLarge: bundleTooLarge };
      return withUploadedFile(ops, req, upload, (file) => ops.addAgentBundle({ file, ...(healthDeadlineS !== undefined ? { healthDeadlineS } : {}), actor: c.actor }));
    }, { created: true }),
  ];
}
