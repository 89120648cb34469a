/**
 * A new operator's first hour with the CLI, over real processes (controller, agents started
 * from the printed command lines through bash, the CLI as a process): what the first start
 * says to do next, start commands safe to paste twice on one machine, errors in the user's
 * terms, labels and selectors with devices that join a running rollout, a maintenance window
 * that holds a rollout, live `devices watch` / `rollouts watch`, `logs -f`, `--wait` progress,
 * shell completion, and no npm warnings.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_BIN } from './support/agent-process.js';
import { MANAGER_BIN, api, eventually, freePort, runCli, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';
import { linearModel } from './support/onnx-models.js';
import type { DeviceView, RolloutView } from './support/views.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));


/** A long-running CLI command (watch, logs -f) whose output is read as it comes. */
function spawnCli(m: ManagerProcess, args: string[]): { child: ChildProcess; out: () => string; err: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [MANAGER_BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, EDGEFLEET_URL: m.url, EDGEFLEET_OPERATOR_TOKEN: m.token, EDGEFLEET_DATA: m.dataDir, COLUMNS: '200' },
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  return { child, out: () => out, err: () => err, exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
}

describe('the first hour with the CLI', () => {
  let m: ManagerProcess;
  let work: string;
  const shells: ChildProcess[] = [];
  const v1 = linearModel({ seed: 11 });
  const v2 = linearModel({ seed: 12 });
  const v3 = linearModel({ seed: 13 });

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'first-hour-'));
    await mkdir(join(work, 'home'));
    await writeFile(join(work, 'lin1.onnx'), v1.bytes);
    await writeFile(join(work, 'lin2.onnx'), v2.bytes);
    await writeFile(join(work, 'lin3.onnx'), v3.bytes);
    await writeFile(join(work, 'not-a-model.onnx'), 'this is a text file');
    m = await startManager();
  });

  afterAll(async () => {
    for (const s of shells) s.kill('SIGKILL');
    await m?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it('says what to do next on the first start, with the token file and the commands to paste', () => {
    const out = m.stdout();
    expect(out).toContain('Operator token (shown once');
    expect(out).toContain(`reads the operator token from ${join(m.dataDir, 'operator.token')}`);
    expect(out).toMatch(/Next, in another terminal:/);
    expect(out).toContain(`export EDGEFLEET_DATA=${m.dataDir}`);
    expect(out).toMatch(/hostManager devices add pi-1 --group lab/);
    expect(out).toMatch(/hostManager deploy demo --to group:lab --wait/);
  });

  it('prints start commands that are complete and can run side by side on one machine', async () => {
    const lines: Record<string, string> = {};
    for (const id of ['cam-1', 'cam-2']) {
      const r = await runCli(m, ['devices', 'add', id, '--group', 'lab', '--json']);
      expect(r.code).toBe(0);
      const body = r.json<{ commandInline: string; config: { dataDir: string; httpPort: number } }>();
      expect(body.commandInline).toMatch(/^EDGEFLEET_DEVICE_TOKEN=\S+ deviceAgent --broker \S+ --device /);
      expect(body.config.dataDir).toBe(`/var/lib/edgefleet-agent/${id}`);
      lines[id] = body.commandInline;
    }
    const dir = (l: string) => /--data-dir (\S+)/.exec(l)![1];
    const port = (l: string) => Number(/--http-port (\d+)/.exec(l)![1]);
    expect(dir(lines['cam-1']!)).toBe('~/.edgefleet-agent/cam-1');
    expect(dir(lines['cam-2']!)).toBe('~/.edgefleet-agent/cam-2');
    expect(port(lines['cam-1']!)).not.toBe(port(lines['cam-2']!));
    // Both pasted into bash on this machine as printed: only `deviceAgent`, the broker address (loopback),
    // HOME (so ~ is the test's) and the printed ports are swapped (the printed ones, 8470 and up, may be
    // taken by other runs on this shared machine; that they differ is asserted above).
    const ports: Record<string, number> = {};
    for (const [id, line] of Object.entries(lines)) {
      ports[id] = await freePort();
      const command = line
        .replace('deviceAgent', `'${process.execPath}' '${AGENT_BIN}' --telemetry-interval-ms 300`)
        .replace(/--broker \S+/, `--broker ${m.broker}`)
        .replace(/--http-port \d+/, `--http-port ${ports[id]}`);
      shells.push(spawn('bash', ['-c', command], { stdio: 'ignore', env: { ...process.env, HOME: join(work, 'home') } }));
    }
    for (const id of Object.keys(lines)) {
      await eventually(`${id} online`, async () => ((await api<DeviceView>(m, 'GET', `/api/devices/${id}`)).body.online ? true : undefined));
      const res = await fetch(`http://127.0.0.1:${ports[id]}/models`);
      expect(res.status).toBe(200);
    }
    // each has its own data directory under the (test's) home
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(join(work, 'home', '.edgefleet-agent'))).sort()).toEqual(['cam-1', 'cam-2']);
  });

  it("speaks the user's language when something is wrong", async () => {
    const byFlag = await runCli(m, ['devices', 'list', '--token', 'nope']);
    expect(byFlag.code).toBe(4);
    expect(byFlag.stderr).toMatch(/refused the operator token given with --token; copy it from operator\.token/);
    const fromFile = join(work, 'other');
    await mkdir(fromFile);
    await writeFile(join(fromFile, 'operator.token'), 'stale-token\n');
    const byFile = await runCli(m, ['devices', 'list', '--data-dir', fromFile], { env: { EDGEFLEET_OPERATOR_TOKEN: '' } });
    expect(byFile.code).toBe(4);
    expect(byFile.stderr).toContain(`refused the operator token in ${join(fromFile, 'operator.token')}`);
    const old = await runCli(m, ['devices', 'list'], { env: { EDGEFLEET_OPERATOR_TOKEN: '', EDGEFLEET_TOKEN: m.token } });
    expect(old.code).toBe(0);
    expect(old.stderr).toMatch(/EDGEFLEET_TOKEN is deprecated for the operator token; use EDGEFLEET_OPERATOR_TOKEN/);

    const bad = await runCli(m, ['models', 'add', join(work, 'not-a-model.onnx'), '--name', 'junk']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`"${join(work, 'not-a-model.onnx')}" is not an ONNX model`);
    expect(bad.stderr).not.toMatch(/uploads|\.edgefleet|manager-/);

    expect((await runCli(m, ['models', 'add', join(work, 'lin1.onnx'), '--name', 'lin'])).code).toBe(0);
    const lab = await runCli(m, ['deploy', 'lin', '--to', 'lab']);
    expect(lab.code).toBe(5);
    expect(lab.stderr).toMatch(/no device lab; to target the group, write group:lab/);

    // a second controller on the same HTTP port: one sentence naming the flag, no stack trace
    const port = new URL(m.url).port;
    const clash = spawnSync(process.execPath, [MANAGER_BIN, '--data-dir', join(work, 'clash'), '--http-port', port, '--mqtt-port', '0', '--mqtt-ws-port', '-1', '--log-level', 'silent'], { encoding: 'utf8', timeout: 30_000 });
    expect(clash.status).toBe(1);
    expect(clash.stderr).toMatch(new RegExp(`port ${port} is already in use, so the HTTP API and dashboard cannot listen there; .*--http-port ${Number(port) + 1}`));
    expect(clash.stderr).not.toMatch(/^\s+at /m);
  });

  it('labels devices and rolls out by selector; a device labelled during the canary joins the next wave', async () => {
    const set = await runCli(m, ['devices', 'set', 'cam-1', '--labels', 'site=plant-1,rack=3']);
    expect(set.code).toBe(0);
    expect(set.stdout).toContain('cam-1: groups lab; labels site=plant-1,rack=3');
    expect((await runCli(m, ['devices', 'set', 'cam-1', '--labels', 'arch=arm64'])).stderr).toMatch(/"arch" is a fact the device reports/);
    const watchDevices = spawnCli(m, ['devices', 'watch']);
    await eventually('devices watch prints the fleet', async () => (/cam-2\s+online/.test(watchDevices.out()) ? true : undefined));

    const started = await runCli(m, ['deploy', 'lin', '--to', 'site=plant-1,group=lab', '--canary', '1', '--soak', '4', '--json']);
    expect(started.code).toBe(0);
    const id = started.json<RolloutView>().id;
    expect(started.json<RolloutView>().waves.map((w) => [w.label, w.devices])).toEqual([['canary', ['cam-1']], ['100%', []]]);
    const watchRollout = spawnCli(m, ['rollouts', 'watch', id]);
    await eventually('the canary soaking', async () => ((await api<RolloutView>(m, 'GET', `/api/rollouts/${id}`)).body.waves[0]?.state === 'soaking' ? true : undefined), 30_000);
    expect((await runCli(m, ['devices', 'set', 'cam-2', '--labels', 'site=plant-1'])).code).toBe(0);
    // the label change comes over the live feed as a row
    await eventually('devices watch shows the new label', async () => (/cam-2\s+online\s+lab\s+site=plant-1/.test(watchDevices.out()) ? true : undefined));

    expect(await watchRollout.exited).toBe(0); // `rollouts watch ID` ends with the rollout, 0 = it succeeded
    expect(watchRollout.out()).toMatch(new RegExp(`^ID\\s+MODEL\\s+TARGET\\s+STATUS`, 'm'));
    expect(watchRollout.out()).toMatch(new RegExp(`${id}\\s+lin@1\\s+site=plant-1,group=lab\\s+succeeded`));
    const done = (await api<RolloutView>(m, 'GET', `/api/rollouts/${id}`)).body;
    expect(done.waves[1]!.devices).toEqual(['cam-2']);
    expect(done.devices).toMatchObject({ 'cam-1': { state: 'switched' }, 'cam-2': { state: 'switched' } });
    watchDevices.child.kill('SIGINT');
    expect(await watchDevices.exited).toBe(0);
  }, 60_000);

  it('follows a log with -f, and shows soak countdown and ETA while --wait follows a rollout', async () => {
    expect((await runCli(m, ['models', 'add', join(work, 'lin2.onnx'), '--name', 'lin'])).code).toBe(0);
    const logs = spawnCli(m, ['logs', 'cam-1', '-f', '--lines', '1']);
    await eventually('the first log line', async () => (logs.out().trim().length > 0 ? true : undefined));
    const wait = await runCli(m, ['deploy', 'lin@2', '--to', 'cam-1', '--soak', '3', '--wait']);
    expect(wait.code).toBe(0);
    expect(wait.stderr).toMatch(/wave 0 \(canary\) soaking, \d s left; ETA \d s/);
    expect(wait.stdout).toMatch(/\[succeeded\]/);
    // the activation was logged on the device after -f started, and arrived as a readable line
    await eventually('the activation in the followed log', async () => (/\d\d:\d\d:\d\d\.\d{3} INFO {2}model activated model=lin version=2/.test(logs.out()) ? true : undefined), 15_000);
    logs.child.kill('SIGINT');
    expect(await logs.exited).toBe(0);
  }, 60_000);

  it('holds a rollout outside its maintenance window', async () => {
    expect((await runCli(m, ['models', 'add', join(work, 'lin3.onnx'), '--name', 'lin'])).code).toBe(0);
    const now = new Date();
    const hhmm = (d: Date) => d.toISOString().slice(11, 16);
    const window = `${hhmm(new Date(now.getTime() + 2 * 3600_000))}-${hhmm(new Date(now.getTime() + 3 * 3600_000))}`;
    const r = await runCli(m, ['deploy', 'lin@3', '--to', 'group:lab', '--window', window, '--window-tz', 'UTC', '--json']);
    expect(r.code).toBe(0);
    const id = r.json<RolloutView>().id;
    const shown = await eventually('the wait for the window', async () => {
      const v = (await api<RolloutView>(m, 'GET', `/api/rollouts/${id}`)).body;
      return v.timing.windowOpensAt ? v : undefined;
    });
    expect(Date.parse(shown.timing.windowOpensAt!) - now.getTime()).toBeGreaterThan(110 * 60_000);
    expect(Object.values(shown.devices).every((d) => d.state === 'pending')).toBe(true);
    const text = await runCli(m, ['rollouts', 'show', id]);
    expect(text.stdout).toMatch(/waiting for the maintenance window \(opens in 1 h 5\d min|2 h 00 min\)/);
    expect((await runCli(m, ['rollouts', 'abort', id])).code).toBe(0);
    expect((await api<DeviceView>(m, 'GET', '/api/devices/cam-1')).body.info?.models.find((x) => x.name === 'lin')?.version).toBe(2);
  });

  it('writes a demo model that is added, rolled out and answers as printed', async () => {
    const written = await runCli(m, ['models', 'demo', '--out', work]);
    expect(written.code).toBe(0);
    expect(written.stdout).toContain('answers y = [3, 7, 7]');
    expect((await runCli(m, ['models', 'add', join(work, 'demo.onnx')])).code).toBe(0);
    expect((await runCli(m, ['deploy', 'demo', '--to', 'cam-2', '--soak', '0', '--wait'])).code).toBe(0);
    const answer = await runCli(m, ['infer', 'cam-2', 'demo', '--input', join(work, 'demo-input.json'), '--json']);
    expect(answer.json<{ outputs: { y: { data: number[] } } }>().outputs.y.data).toEqual([3, 7, 7]);
  }, 60_000);

  it('completes commands in the shell, and npm prints no warnings for this project', async () => {
    const words = await runCli(m, ['--get-yargs-completions', 'devices', '']);
    for (const w of ['list', 'add', 'set', 'watch', 'remove']) expect(words.stdout.split('\n')).toContain(w);
    const script = await runCli(m, ['completion']);
    expect(script.code).toBe(0);
    expect(script.stdout).toContain('_hostManager_yargs_completions');
    const npm = spawnSync('npm', ['config', 'get', 'save-exact'], { cwd: ROOT, encoding: 'utf8' });
    expect(npm.stdout.trim()).toBe('true');
    expect(npm.stderr).not.toMatch(/npm warn/i);
  });
});
