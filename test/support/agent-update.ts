/**
 * Test fixture: delivering an agent bundle to one device through the real signed, chunked transfer
 * (transfer.offer → chunks on the device's transfer topic → transfer.status → transfer.commit), signed
 * with the controller's fleet key, with any manifest a test wants (another architecture, an old
 * version): the device's own refusals, which the controller's agent rollouts never send. Also: remaking
 * a bundle under another version, optionally broken or claiming another architecture.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { create, extract } from 'tar';
import { chunkHashes, signManifest, topics } from '@edgefleet/protocol';
import type { AgentArch, CommandResult, SignedManifest } from '@edgefleet/protocol';
import { createRequester } from '@edgefleet/host-manager';

export interface BundleDelivery {
  mqtt: MqttClient;
  privateKeyPem: string;
  device: string;
  file: string;
  /** The manifest's version (the anti-rollback counter of agent manifests). */
  manifestVersion: number;
  agent: { version: string; arch: AgentArch; healthDeadlineS?: number };
  chunkSize?: number;
  commitTimeoutMs?: number;
}

export async function deliverAgentBundle(d: BundleDelivery): Promise<CommandResult<'transfer.commit'>> {
  const bytes = await readFile(d.file);
  const chunkSize = d.chunkSize ?? 1024 * 1024;
  const now = Date.now();
  const signed = signManifest(
    {
      kind: 'agent',
      name: 'edgefleet-agent',
      version: d.manifestVersion,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      length: bytes.length,
      issuedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + 3_600_000).toISOString(),
      target: { devices: [d.device] },
      chunking: { size: chunkSize, sha256: chunkHashes(bytes, chunkSize) },
      agent: d.agent,
    },
    d.privateKeyPem,
  );
  const requester = await createRequester(d.mqtt);
  try {
    const transferId = `agent-${d.manifestVersion}-${now.toString(36)}`;
    const via = { kind: 'device' as const, name: d.device };
    let { missing } = await requester.request(d.device, 'transfer.offer', { transferId, manifest: signed, via }, 30_000);
    for (let round = 0; missing.length > 0 && round < 5; round++) {
      for (const i of missing) {
        await d.mqtt.publishAsync(topics.transferChunk(via, transferId, i), bytes.subarray(i * chunkSize, (i + 1) * chunkSize), { qos: 1 });
      }
      ({ missing } = await requester.request(d.device, 'transfer.status', { transferId }, 30_000));
    }
    return await requester.request(d.device, 'transfer.commit', { transferId, activate: true }, d.commitTimeoutMs ?? 120_000);
  } finally {
    requester.close();
  }
}

/**
 * The same bundle under another agent version (bundle.json, the agent's package.json, the top
 * directory). `broken`: its agent runs but never connects (a process that only waits), the kind of
 * release the launcher must fall back from. `claimArch`: bundle.json says another architecture (the
 * bytes stay this machine's), for a registry entry no device here can take.
 */
export async function rebrandBundle(file: string, opts: { fromName: string; version: string; arch: string; broken?: boolean; outDir: string; claimArch?: AgentArch }): Promise<string> {
  const work = await mkdtemp(join(tmpdir(), 'rebrand-'));
  try {
    await extract({ file, cwd: work });
    const name = `edgefleet-agent-${opts.version}-${opts.arch}`;
    const { rename } = await import('node:fs/promises');
    await rename(join(work, opts.fromName), join(work, name));
    const root = join(work, name);
    const bundleJson = JSON.parse(await readFile(join(root, 'bundle.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(join(root, 'bundle.json'), `${JSON.stringify({ ...bundleJson, version: opts.version, ...(opts.claimArch ? { arch: opts.claimArch } : {}) }, null, 2)}\n`);
    const pkgFile = join(root, 'app/node_modules/@edgefleet/device-agent/package.json');
    const pkg = JSON.parse(await readFile(pkgFile, 'utf8')) as Record<string, unknown>;
    await writeFile(pkgFile, `${JSON.stringify({ ...pkg, version: opts.version }, null, 2)}\n`);
    if (opts.broken) {
      await writeFile(join(root, 'app/node_modules/@edgefleet/device-agent/dist/bin/deviceAgent.js'), "// a release that starts and never connects\nsetInterval(() => {}, 1000);\n");
    }
    const out = join(opts.outDir, `${name}.tar.gz`);
    await create({ gzip: { level: 1 }, file: out, cwd: work, portable: true }, [name]);
    return out;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Puts a signed manifest someone captured back in front of a device, as a transfer offer (test-only: the replay of a rollback). */
export async function offerAgain(mqtt: MqttClient, device: string, signed: SignedManifest): Promise<CommandResult<'transfer.offer'>> {
  const requester = await createRequester(mqtt);
  try {
    return await requester.request(device, 'transfer.offer', { transferId: `replay-${Date.now().toString(36)}`, manifest: signed, via: { kind: 'device', name: device } }, 30_000);
  } finally {
    requester.close();
  }
}
