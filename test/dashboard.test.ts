/**
 * The dashboard in a real browser: headless Chromium (Debian's `chromium` package, driven by
 * playwright-core) against the real controller process and real agent processes. Asserts what a
 * person sees and does: the fleet with live telemetry (a sample on the page within a second of the
 * agent sending it), a device's charts, models and log, the models view, a rollout started from
 * the page that reaches the agents with its progress shown, abort and roll back from the page, a
 * device rolled back and relabelled from the page, an offline device that stands out, and a wrong
 * token that shows an error and no data. Every view is photographed at desktop and phone width
 * into test/artifacts/screenshots/ (kept by the run, not committed).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MqttClient } from 'mqtt';
import type { BrowserContext, Page } from 'playwright-core';
import { topics } from '@edgefleet/protocol';
import { cleanupAgents, connectOperator, spawnAgent } from './support/agent-process.js';
import { CHROMIUM, DESKTOP, openBrowser, signIn } from './support/browser.js';
import type { AgentProcess } from './support/agent-process.js';
import { api, eventually, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';
import { linearModel } from './support/onnx-models.js';
import type { DeviceView, RolloutView } from './support/views.js';

const WAIT_MS = 15_000;
const SHOTS = fileURLToPath(new URL('./artifacts/screenshots/', import.meta.url));
const PHONE = { width: 390, height: 844 };


/** The text a person reads in a device's fleet row, cell by cell (null while there is no row). */
function fleetRow(page: Page, id: string): Promise<string[] | null> {
  return page.evaluate((device) => {
    const row = document.querySelector(`#devices tr[data-device="${device}"]`);
    return row ? [...row.querySelectorAll('td')].map((td) => (td as HTMLElement).innerText.trim()) : null;
  }, id);
}

async function shoot(page: Page, name: string): Promise<void> {
  await page.setViewportSize(DESKTOP);
  await page.screenshot({ path: join(SHOTS, `${name}-desktop.png`), fullPage: true });
  await page.setViewportSize(PHONE);
  await page.screenshot({ path: join(SHOTS, `${name}-phone.png`), fullPage: true });
  await page.setViewportSize(DESKTOP);
}

/** Clicks through a confirmation dialog: checks it says what will happen, then confirms. */
async function confirm(page: Page, button: string, says: RegExp): Promise<void> {
  const dialog = page.locator('dialog[open]');
  await dialog.waitFor({ state: 'visible', timeout: WAIT_MS });
  expect(await dialog.innerText()).toMatch(says);
  await dialog.getByRole('button', { name: button }).click();
  await page.locator('dialog[open]').waitFor({ state: 'detached', timeout: WAIT_MS });
}

async function versionOn(m: ManagerProcess, id: string): Promise<number | undefined> {
  return (await api<DeviceView>(m, 'GET', `/api/devices/${id}`)).body.info?.models.find((x) => x.name === 'lin')?.version;
}

async function rolloutStatus(page: Page, id: string): Promise<string> {
  return page.locator(`[data-rollout="${id}"] [data-field=status]`).innerText();
}

describe('dashboard in headless Chromium', () => {
  let m: ManagerProcess;
  const agents: AgentProcess[] = [];
  let context: BrowserContext | undefined;
  let operator: MqttClient | undefined;
  let page: Page;
  let work: string;
  const pageErrors: string[] = [];
  let traffic: ReturnType<typeof setInterval> | undefined;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)`);
    work = await mkdtemp(join(tmpdir(), 'dashboard-'));
    await mkdir(SHOTS, { recursive: true });
    m = await startManager();
    for (const [seed, file] of [[1, 'lin1.onnx'], [2, 'lin2.onnx'], [3, 'lin3.onnx']] as const) {
      await writeFile(join(work, file), linearModel({ seed }).bytes);
      expect((await api(m, 'POST', '/api/models', { path: join(work, file), name: 'lin', ...(seed === 1 ? { lineage: { dataset: 'demo-v1', notes: 'first' } } : {}) })).status).toBe(201);
    }
    for (const id of ['cam-1', 'cam-2']) {
      const added = await api<{ token: string }>(m, 'POST', '/api/devices', { id, groups: ['lab'] });
      agents.push(await spawnAgent({ broker: m.broker, id, token: added.body.token, groups: ['lab'], telemetryIntervalMs: 300, args: ['--fleet-public-key', m.publicKeyFile] }));
    }
    await eventually('agents online', async () => ((await api<DeviceView[]>(m, 'GET', '/api/devices')).body.every((d) => d.online) ? true : undefined));
    const first = await api<{ id: string }>(m, 'POST', '/api/rollouts', { model: 'lin', version: 1, to: 'group:lab', policy: { soakS: 0 } });
    await eventually('lin@1 everywhere', async () => ((await api<RolloutView>(m, 'GET', `/api/rollouts/${first.body.id}`)).body.status === 'succeeded' ? true : undefined), 30_000);
    operator = await connectOperator(m.broker, { id: 'admin', token: m.token });
    // real inference traffic through the controller, so rates, p95 and the gates have numbers
    const x = { x: { dtype: 'float32', shape: [1, 4], data: [0.5, -1, 2, 0.25] } };
    traffic = setInterval(() => {
      for (const id of ['cam-1', 'cam-2']) void api(m, 'POST', `/api/devices/${id}/infer`, { model: 'lin', inputs: x }).catch(() => undefined); // a device mid-switch may refuse one; the next goes on
    }, 100);
    context = await openBrowser(join(work, 'profile'));
    context.on('weberror', (e) => pageErrors.push(String(e.error())));
  }, 90_000);

  afterAll(async () => {
    clearInterval(traffic);
    await operator?.endAsync().catch(() => undefined);
    await context?.close().catch(() => undefined);
    await cleanupAgents(...agents);
    await m?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('signs in with the form and shows the fleet with its facts and health', async () => {
    page = await signIn(context!, m.url, m.token);
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'live', null, { timeout: WAIT_MS, polling: 50 });
    expect(await page.locator('#login').isVisible()).toBe(false);
    expect(page.url()).not.toContain(m.token); // kept for the tab, never in the address
    await page.waitForFunction(() => document.querySelectorAll('#devices tr').length === 2, null, { timeout: WAIT_MS });
    const row = await fleetRow(page, 'cam-1');
    expect(row?.slice(0, 2)).toEqual(['online', 'cam-1']);
    expect(row?.[2]).toBe('lab');
    expect(row?.[4]).toBe(process.arch);
    expect(row?.[5]).toMatch(/^onnxruntime \d/);
    expect(row?.[6]).toBe('lin@1');
    expect(row?.[7]).toMatch(/^\d+%$/);
    expect(await page.locator('#count').innerText()).toBe('2 devices, 2 online');
    // filter and sort, as a person uses them
    await page.locator('#filter').fill('cam-2');
    expect(await page.locator('#devices tr').count()).toBe(1);
    await page.locator('#filter').fill('');
    await page.locator('th[data-sort=id]').click(); // descending
    expect(await page.locator('#devices tr').first().getAttribute('data-device')).toBe('cam-2');
    await page.locator('th[data-sort=id]').click();
    await shoot(page, 'fleet');
  });

  it('shows a telemetry sample within a second of the agent sending it', async () => {
    const sample = await new Promise<{ ts: number }>((resolve) => {
      const onMessage = (topic: string, payload: Buffer): void => {
        if (topic !== topics.device('cam-1', 'telemetry')) return;
        operator!.off('message', onMessage);
        resolve((JSON.parse(payload.toString()) as { sample: { ts: number } }).sample);
      };
      operator!.on('message', onMessage);
      void operator!.subscribeAsync(topics.device('cam-1', 'telemetry'), { qos: 0 });
    });
    // the test's own subscriber got it as the controller did: the page shows that very sample within 1 s
    await page.waitForFunction((ts) => document.querySelector('#devices tr[data-device="cam-1"]')?.getAttribute('data-ts') === String(ts), sample.ts, { timeout: 1000, polling: 20 });
  });

  it("shows a device: charts from its recent telemetry, its models, events and log", async () => {
    await page.locator('#devices tr[data-device="cam-1"] a').click();
    await page.waitForFunction(() => location.hash === '#/device/cam-1');
    await page.locator('#chart-cpu canvas').waitFor({ state: 'attached', timeout: WAIT_MS });
    await page.locator('#chart-mem canvas').waitFor({ state: 'attached', timeout: WAIT_MS });
    expect(await page.locator('#device-models').innerText()).toMatch(/lin\s+1/);
    // the agent's own log lines, made readable (time, level, message)
    await page.waitForFunction(() => /^\d{1,2}:\d\d:\d\d.* (INFO|DEBUG) /m.test(document.getElementById('log')?.textContent ?? ''), null, { timeout: WAIT_MS });
    expect(await page.locator('#device-events').innerText()).toMatch(/device\.add cam-1/);
    expect(await page.locator('#device-containers').innerText()).toMatch(/No containers/);
    await shoot(page, 'device');
  });

  it('shows the models with lineage, inputs and outputs, and where each version runs', async () => {
    await page.getByRole('link', { name: 'Models' }).click();
    const v1 = page.locator('tr[data-model="lin"][data-version="1"]');
    await v1.waitFor({ timeout: WAIT_MS });
    const text = await v1.innerText();
    expect(text).toMatch(/dataset demo-v1/);
    expect(text).toMatch(/x\s+float32\[batch, 4\]/);
    expect(text).toMatch(/cam-1\s*cam-2/);
    expect(await page.locator('tr[data-model="lin"][data-version="3"]').innerText()).toMatch(/nowhere/);
    await shoot(page, 'models');
  });

  it('starts a rollout from the page; it reaches the agents and its progress is shown', async () => {
    await page.locator('tr[data-model="lin"][data-version="2"] button[data-act=deploy]').click();
    const form = page.locator('dialog[open] form');
    await form.waitFor({ timeout: WAIT_MS });
    await form.getByLabel('Target').fill('group:lab');
    await form.getByLabel('Canary devices').fill('1');
    await form.getByLabel('Soak (s)').fill('3');
    await form.getByRole('button', { name: 'Review' }).click();
    await confirm(page, 'Start rollout', /lin@2[\s\S]*group:lab[\s\S]*soakS\s*3/);
    await page.waitForFunction(() => location.hash.startsWith('#/rollouts/r-'), null, { timeout: WAIT_MS });
    const id = decodeURIComponent((await page.evaluate(() => location.hash)).slice('#/rollouts/'.length));
    const card = page.locator(`[data-rollout="${id}"]`);
    // the canary's soak counting down, on the page
    await card.locator('.wave .pill.soaking').first().waitFor({ timeout: 30_000 });
    expect(await card.locator('.wave .pill.soaking').first().innerText()).toMatch(/^soaking, left \d+ s$/);
    await shoot(page, 'rollout-running');
    await page.waitForFunction((r) => document.querySelector(`[data-rollout="${r}"] [data-field=status]`)?.textContent === 'succeeded', id, { timeout: 40_000 });
    for (const d of ['cam-1', 'cam-2']) {
      expect(await card.locator(`table.devices tr[data-device="${d}"] .pill`).innerText()).toBe('switched');
      expect(await versionOn(m, d)).toBe(2);
    }
    // the gate's numbers, before and after the switch, from the traffic the test keeps sending
    const gate = await card.locator('.gate').first().innerText();
    expect(gate).toMatch(/gate passed/);
    expect(gate).toMatch(/before\s+\d+\s+0[\s\S]*after\s+[1-9]\d*\s+0/i);
  }, 90_000);

  it('aborts a rollout and rolls it back from the page', async () => {
    await page.getByRole('button', { name: 'New rollout' }).click();
    const form = page.locator('dialog[open] form');
    await form.waitFor({ timeout: WAIT_MS });
    await form.getByLabel('Model').selectOption('lin');
    await form.getByLabel('Version').fill('3');
    await form.getByLabel('Target').fill('group:lab');
    await form.getByLabel('Soak (s)').fill('600');
    await form.getByRole('button', { name: 'Review' }).click();
    await confirm(page, 'Start rollout', /lin@3/);
    await page.waitForFunction(() => location.hash.startsWith('#/rollouts/r-'), null, { timeout: WAIT_MS });
    const id = decodeURIComponent((await page.evaluate(() => location.hash)).slice('#/rollouts/'.length));
    const card = page.locator(`[data-rollout="${id}"]`);
    await card.locator('.wave .pill.soaking').first().waitFor({ timeout: 30_000 });
    const canary = (await card.locator('.wave').first().locator('table.devices tr').first().getAttribute('data-device'))!;
    await card.getByRole('button', { name: 'Abort' }).click();
    await confirm(page, 'Abort rollout', /stops where it is/);
    await eventually('aborted', async () => ((await rolloutStatus(page, id)) === 'aborted' ? true : undefined));
    expect((await api<RolloutView>(m, 'GET', `/api/rollouts/${id}`)).body.status).toBe('aborted');
    expect(await versionOn(m, canary)).toBe(3);
    await card.getByRole('button', { name: 'Roll back' }).click();
    await confirm(page, 'Roll back', /switches the 1 device\(s\) it switched back/);
    await eventually('rolled back', async () => ((await rolloutStatus(page, id)) === 'rolled-back' ? true : undefined));
    expect((await api<RolloutView>(m, 'GET', `/api/rollouts/${id}`)).body.devices[canary]!.state).toBe('rolled-back');
    await eventually(`${canary} back on lin@2`, async () => ((await versionOn(m, canary)) === 2 ? true : undefined));
    await shoot(page, 'rollouts');
  }, 90_000);

  it('rolls a device back and edits its labels from the device view', async () => {
    await page.goto(`${m.url}/#/device/cam-2`);
    await page.locator('#device-models button[data-act=rollback]').waitFor({ timeout: WAIT_MS });
    await page.locator('#device-models button[data-act=rollback]').click();
    await confirm(page, 'Roll back device', /cam-2 switches back/);
    await eventually('cam-2 back on lin@1', async () => ((await versionOn(m, 'cam-2')) === 1 ? true : undefined));
    await page.getByRole('button', { name: 'Edit groups and labels' }).click();
    const form = page.locator('dialog[open] form');
    await form.getByLabel('Labels').fill('site=plant-1\nrack=3');
    await form.getByRole('button', { name: 'Review' }).click();
    await confirm(page, 'Save', /site=plant-1, rack=3/);
    await eventually('labels stored', async () => ((await api<DeviceView>(m, 'GET', '/api/devices/cam-2')).body.labels?.['site'] === 'plant-1' ? true : undefined));
    await page.waitForFunction(() => /site=plant-1/.test(document.getElementById('device-head')?.textContent ?? ''), null, { timeout: WAIT_MS });
  }, 60_000);

  it('an offline device stands out in the fleet, live (no reload)', async () => {
    await page.goto(`${m.url}/#/fleet`);
    await page.waitForFunction(() => document.querySelectorAll('#devices tr').length === 2, null, { timeout: WAIT_MS });
    let navigations = 0;
    page.on('framenavigated', () => navigations++);
    expect((await agents[1]!.kill('SIGTERM')).code).toBe(0);
    await page.waitForFunction(() => document.querySelector('#devices tr[data-device="cam-2"]')?.classList.contains('offline'), null, { timeout: WAIT_MS });
    expect((await fleetRow(page, 'cam-2'))?.[0]).toBe('offline');
    expect(await page.locator('#count').innerText()).toBe('2 devices, 1 online');
    expect(navigations).toBe(0);
    await shoot(page, 'fleet-offline');
    expect(pageErrors).toEqual([]);
    await page.close();
  });

  it('a wrong token shows an error and no fleet data', async () => {
    const wrong = await signIn(context!, m.url, 'not-the-operator-token');
    await wrong.waitForFunction(() => document.getElementById('status')?.textContent === 'wrong token', null, { timeout: WAIT_MS, polling: 50 });
    const error = wrong.getByRole('alert').first();
    expect(await error.isVisible()).toBe(true);
    expect(await error.innerText()).toMatch(/^Wrong operator token: .*operator\.token/);
    expect(await wrong.getByLabel('Operator token').isVisible()).toBe(true);
    expect(await wrong.locator('#devices tr').count()).toBe(0);
    expect(await wrong.locator('body').innerText()).not.toContain('cam-1');
    expect(await wrong.evaluate(() => sessionStorage.getItem('edgefleet-token'))).toBeNull();
    await shoot(wrong, 'wrong-token');
    expect(pageErrors).toEqual([]);
    await wrong.close();
  });
});
