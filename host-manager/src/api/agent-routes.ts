/**
 * The HTTP API's agent bundle routes: the registry (a bundle streamed in as the request body). Rolling an
 * agent version out is `POST /api/rollouts` with `kind: "agent"` and `agent: {version, arches?}` (routes.ts).
 */
import { FleetError } from '@edgefleet/protocol';
import type { Operations } from './contract.js';
import { route } from './http.js';
import type { Route } from './http.js';
import { withUploadedFile } from './upload.js';

/**
 * A bundle over the upload cap (--max-agent-bundle-mb; a bundle holds Node.js and the agent's dependencies,
 * ~30–60 MB): refused with the cap, from Content-Length or at the byte that passes it.
 */
function bundleTooLarge(declared: number | undefined, maxBytes: number): FleetError {
  const what = declared === undefined ? 'the agent bundle is' : `the agent bundle of ${declared} bytes is`;
  return new FleetError(
    'too_long',
    `${what} over the controller's limit of ${(maxBytes / 1024 ** 2).toFixed(1)} MiB per bundle upload; refused before it was stored (raise it with --max-agent-bundle-mb, or check that this is a bundle \`hostManager agent bundle\` wrote)`,
  );
}

export function agentRoutes(ops: Operations, opts: { maxAgentBundleBytes: number }): Route[] {
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
      const upload = { maxBytes: opts.maxAgentBundleBytes, suffix: '.tar.gz', tooLarge: (declared: number | undefined) => bundleTooLarge(declared, opts.maxAgentBundleBytes) };
      return withUploadedFile(ops, req, upload, (file) => ops.addAgentBundle({ file, ...(healthDeadlineS !== undefined ? { healthDeadlineS } : {}), actor: c.actor }));
    }, { created: true }),
  ];
}
