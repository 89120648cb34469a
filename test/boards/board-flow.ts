/**
 * The flow every emulated board goes through (boards-arm64.test.ts, boards-armv7.test.ts): the real
 * bundle for its architecture, installed with its install.sh inside a Debian root of that
 * architecture (chroot under qemu-user, no systemd), started the way install.sh says, connected to a
 * real controller on this machine; provision → deploy → infer → swap → rollback, with every output
 * compared to a native x86_64 agent's in the same fleet; then stop and uninstall.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { extract } from 'tar';
import { buildAgentBundle } from '@edgefleet/agent-bundle';
import type { AgentBundle } from '@edgefleet/agent-bundle';
import { cleanupAgents, spawnAgent } from '../support/agent-process.js';
import type { AgentProcess } from '../support/agent-process.js';
import { boardRoot, checkEmulation, killBoardProcess, runInBoard, spawnInBoard } from '../support/boards.js';
import type { BoardArch, BoardRoot } from '../support/boards.js';
import { api, eventually, runCli, startManager } from '../support/manager-process.js';
import type { ManagerProcess } from '../support/manager-process.js';
import { encodeModel, floatTensor, node, seededRandom, unknownOperatorModel, valueInfo } from '../support/onnx-models.js';

/** float32 outputs of the emulated board and of x86_64 agree to this (absolute, per element). */
export const BOARD_TOLERANCE = 1e-5;

const BUNDLE_SCRIPTS = fileURLToPath(new URL('../../device-agent/bundle/', import.meta.url));

/** A small MLP, 16 → 32 (tanh) → 8 (softmax): enough arithmetic for rounding to show between builds. */
export function mlpModel(seed: number): Buffer {
  const rnd = seededRandom(seed);
  const w = (n: number) => Array.from({ length: n }, () => rnd() * 2 - 1);
  return encodeModel({
    name: 'mlp',
    inputs: [valueInfo('x', 'float32', ['batch', 16])],
    outputs: [valueInfo('p', 'float32', ['batch', 8])],
    nodes: [node('MatMul', ['x', 'W1'], ['h0']), node('Add', ['h0', 'b1'], ['h1']), node('Tanh', ['h1'], ['h']), node('MatMul', ['h', 'W2'], ['z0']), node('Add', ['z0', 'b2'], ['z']), node('Softmax', ['z'], ['p'])],
    initializers: [floatTensor('W1', [16, 32], w(512)), floatTensor('b1', [32], w(32)), floatTensor('W2', [32, 8], w(256)), floatTensor('b2', [8], w(8))],
  });
}

/** The request body `hostManager infer --input` takes (a device's inference API body, tensor-map form). */
const INPUT = { inputs: { x: { dtype: 'float32', shape: [2, 16], data: Array.from({ length: 32 }, (_, i) => Math.sin(i * 0.7) * 1.5) } } };

interface Inference {
  version: number;
  outputs: { p: { data: number[] } };
}

export function describeBoard(arch: BoardArch): void {
  const other: BoardArch = arch === 'arm64' ? 'armv7' : 'arm64';
  const device = `board-${arch}`;
  const reference = `ref-x64-${arch}`;
  const group = `boards-${arch}`;
  const expectedRuntime = arch === 'arm64' ? { name: 'onnxruntime-node', backend: 'cpu' } : { name: 'onnxruntime-web', backend: 'wasm' };
  let m: ManagerProcess;
  let root: BoardRoot;
  let work: string;
  let bundle: AgentBundle;
  let boardAgent: ChildProcess | undefined;
  let boardLog = '';
  let ref: AgentProcess | undefined;
  let rolloutId = '';

  const infer = async (id: string): Promise<Inference> => {
    const r = await runCli(m, ['infer', id, 'mlp', '--input', join(work, 'input.json'), '--json']);
    if (r.code !== 0) throw new Error(`infer on ${id} failed: ${r.stdout} ${r.stderr}; board: ${boardLog.slice(-2000)}`);
    return r.json<Inference>();
  };
  const deviceView = async (id: string) => (await api<{ online: boolean; info: Record<string, unknown> | null }>(m, 'GET', `/api/devices/${id}`)).body;
  /** Board and x86_64 answer with the same version and outputs within BOARD_TOLERANCE. */
  const bothAnswer = async (version: number): Promise<void> => {
    const [onBoard, onX64] = [await infer(device), await infer(reference)];
    expect([onBoard.version, onX64.version]).toEqual([version, version]);
    const worst = Math.max(...onX64.outputs.p.data.map((v, i) => Math.abs(v - onBoard.outputs.p.data[i]!)));
    expect(onBoard.outputs.p.data).toHaveLength(16);
    expect(worst).toBeLessThanOrEqual(BOARD_TOLERANCE);
  };

  describe(`emulated ${arch} board`, () => {
    beforeAll(async () => {
      checkEmulation(arch);
      work = await mkdtemp(join(tmpdir(), `board-${arch}-`));
      await writeFile(join(work, 'input.json'), JSON.stringify(INPUT));
      m = await startManager({ requestTimeoutMs: 60_000 });
      root = await boardRoot(arch);
      bundle = await buildAgentBundle({ arch, outDir: work, compression: 1 });
      // unpacked as a user would after copying it to the board (tar on the host: the same bytes, faster than emulated gzip)
      await mkdir(join(root.dir, 'tmp', 'bundle'), { recursive: true });
      await extract({ file: bundle.file, cwd: join(root.dir, 'tmp', 'bundle') });
      // the other architecture's bundle, as far as install.sh reads it before refusing
      const wrong = join(root.dir, 'tmp', 'wrong');
      await mkdir(wrong, { recursive: true });
      await copyFile(join(BUNDLE_SCRIPTS, 'install.sh'), join(wrong, 'install.sh'));
      await writeFile(join(wrong, 'bundle.json'), JSON.stringify({ format: 1, name: 'edgefleet-agent', version: bundle.version, arch: other }, null, 2));
    }, 900_000);

    afterAll(async () => {
      if (boardAgent) killBoardProcess(boardAgent, 'SIGKILL');
      await cleanupAgents(ref);
      await m?.cleanup();
      await root?.cleanup();
      if (work) await rm(work, { recursive: true, force: true });
    });

    it(`refuses a bundle for ${other}, naming both architectures`, async () => {
      const r = await runInBoard(root, ['sh', '/tmp/wrong/install.sh', '--config', '/tmp/none.json']);
      expect(r.code).toBe(1);
      const machine = arch === 'arm64' ? 'aarch64' : 'armv7l';
      expect(r.stderr.trim()).toBe(`install.sh: this bundle is for ${other}, but this machine is ${arch} (uname -m: ${machine}); install the ${arch} bundle (hostManager agent bundle --arch ${arch})`);
      expect(existsSync(join(root.dir, 'opt', 'edgefleet'))).toBe(false);
    }, 120_000);

    it('installs from its bundle with one command: user, directories and modes, config from the provisioning output, unit', async () => {
      const added = await runCli(m, ['devices', 'add', device, '--group', group, '--json']);
      expect(added.code).toBe(0);
      const provisioning = added.json<{ config: Record<string, unknown> }>();
      provisioning.config.httpPort = 0; // the board shares this machine's loopback with other tests
      await writeFile(join(root.dir, 'tmp', `${device}.json`), JSON.stringify(provisioning));
      const r = await runInBoard(root, [`/tmp/bundle/${bundle.name}/install.sh`, '--config', `/tmp/${device}.json`], { timeoutMs: 600_000 });
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      expect(r.stdout).toContain('created system user edgefleet');
      expect(r.stdout).toContain('systemd is not running here, so the agent was not started');
      expect(r.stdout).toContain('  runuser -u edgefleet -- /opt/edgefleet/agent/launcher --config /etc/edgefleet/agent.json');
      const passwd = readFileSync(join(root.dir, 'etc', 'passwd'), 'utf8').split('\n').find((l) => l.startsWith('edgefleet:'))!.split(':');
      const [uid, gid] = [Number(passwd[2]), Number(passwd[3])];
      const mode = (p: string) => statSync(join(root.dir, p)).mode & 0o777;
      const owner = (p: string) => [statSync(join(root.dir, p)).uid, statSync(join(root.dir, p)).gid];
      expect([mode('etc/edgefleet/token'), owner('etc/edgefleet/token')]).toEqual([0o640, [0, gid]]);
      expect([mode('etc/edgefleet/agent.json'), owner('etc/edgefleet/agent.json')]).toEqual([0o640, [0, gid]]);
      expect([mode('var/lib/edgefleet-agent'), owner('var/lib/edgefleet-agent')]).toEqual([0o750, [uid, gid]]);
      expect([mode('opt/edgefleet/agent/state'), owner('opt/edgefleet/agent/state')]).toEqual([0o700, [uid, gid]]);
      expect(readlinkSync(join(root.dir, 'opt/edgefleet/agent/current'))).toBe(`versions/${bundle.version}`);
      const config = JSON.parse(readFileSync(join(root.dir, 'etc/edgefleet/agent.json'), 'utf8')) as Record<string, unknown>;
      expect(config).toMatchObject({ device, groups: [group], tokenFile: '/etc/edgefleet/token', fleetPublicKey: '/etc/edgefleet/fleet.pub', dataDir: '/var/lib/edgefleet-agent' });
      expect(config).not.toHaveProperty('token');
      const unit = readFileSync(join(root.dir, 'etc/systemd/system/deviceAgent.service'), 'utf8');
      expect(unit).toContain('ExecStart=/opt/edgefleet/agent/launcher --config /etc/edgefleet/agent.json');
      expect(unit).toContain('User=edgefleet');
      expect(unit).not.toMatch(/@[A-Z]+@/);
    }, 600_000);

    it(`starts as install.sh says, under emulation, and comes online reporting ${expectedRuntime.name}`, async () => {
      boardAgent = spawnInBoard(root, ['runuser', '-u', 'edgefleet', '--', '/opt/edgefleet/agent/launcher', '--config', '/etc/edgefleet/agent.json'], { detached: true });
      boardAgent.stderr!.setEncoding('utf8').on('data', (d: string) => (boardLog += d));
      boardAgent.stdout!.setEncoding('utf8').on('data', (d: string) => (boardLog += d));
      const seen = await eventually(`${device} online`, async () => {
        const v = await deviceView(device);
        return v.online && v.info ? v.info : undefined;
      }, 240_000, 500);
      expect(seen).toMatchObject({ agentVersion: bundle.version, arch: arch === 'arm64' ? 'arm64' : 'arm', runtime: { ...expectedRuntime, version: '1.30.0' } });
      // the x86_64 agent that every answer is compared with
      const added = (await runCli(m, ['devices', 'add', reference, '--group', group, '--json'])).json<{ token: string }>();
      ref = await spawnAgent({ broker: m.broker, id: reference, token: added.token, groups: [group], args: ['--fleet-public-key', m.publicKeyFile, '--inference-threads', '1'] });
      await eventually(`${reference} online`, async () => ((await deviceView(reference)).online ? true : undefined), 30_000);
    }, 300_000);

    it(`deploy → infer → swap → rollback through the controller; outputs equal x86_64's within ${BOARD_TOLERANCE}`, async () => {
      await writeFile(join(work, 'mlp-v1.onnx'), mlpModel(1));
      await writeFile(join(work, 'mlp-v2.onnx'), mlpModel(2));
      for (const v of [1, 2]) expect((await runCli(m, ['models', 'add', join(work, `mlp-v${v}.onnx`), '--name', 'mlp'])).code).toBe(0);
      const deploy = async (version: number) => {
        const r = await runCli(m, ['deploy', `mlp@${version}`, '--to', `group:${group}`, '--soak', '0', '--wait', '--json'], { timeoutMs: 600_000 });
        expect({ code: r.code, status: r.json<{ status: string }>().status }).toEqual({ code: 0, status: 'succeeded' });
        return r.json<{ id: string }>().id;
      };
      await deploy(1);
      await bothAnswer(1);
      rolloutId = await deploy(2);
      await bothAnswer(2);
      const back = await runCli(m, ['rollback', rolloutId, '--json'], { timeoutMs: 600_000 });
      expect(back.json<{ status: string }>().status).toBe('rolled-back');
      await bothAnswer(1);
    }, 900_000);

    if (arch === 'armv7') {
      it('a model the WebAssembly runtime cannot load is refused at activation with its reason; the old version keeps serving', async () => {
        await writeFile(join(work, 'mlp-bad.onnx'), unknownOperatorModel(16, 'p'));
        expect((await runCli(m, ['models', 'add', join(work, 'mlp-bad.onnx'), '--name', 'mlp'])).code).toBe(0);
        const r = await runCli(m, ['deploy', 'mlp@3', '--to', device, '--soak', '0', '--wait', '--json'], { timeoutMs: 600_000 });
        const rollout = r.json<{ status: string; devices: Record<string, { state: string; error?: { code: string; message: string } }> }>();
        expect(rollout.status).not.toBe('succeeded');
        expect(rollout.devices[device]?.error).toMatchObject({ code: 'load_failed', message: expect.stringMatching(/mlp@3 does not load in onnxruntime 1\.30\.0 \(onnxruntime-web, wasm\): .*NoSuchOperator/) });
        expect((await infer(device)).version).toBe(1);
      }, 600_000);
    }

    it('stops on SIGTERM (offline) and uninstalls, keeping config and data', async () => {
      killBoardProcess(boardAgent!, 'SIGTERM');
      await eventually(`${device} offline`, async () => ((await deviceView(device)).online ? undefined : true), 120_000, 500);
      const r = await runInBoard(root, ['/opt/edgefleet/agent/current/uninstall.sh']);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      expect(existsSync(join(root.dir, 'opt/edgefleet/agent'))).toBe(false);
      expect(existsSync(join(root.dir, 'etc/systemd/system/deviceAgent.service'))).toBe(false);
      expect(existsSync(join(root.dir, 'etc/edgefleet/agent.json'))).toBe(true);
      expect(existsSync(join(root.dir, 'var/lib/edgefleet-agent/models/state.json'))).toBe(true);
    }, 300_000);
  });
}
