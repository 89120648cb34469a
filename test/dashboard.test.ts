/**
 * The dashboard in a real browser: headless Chromium (Debian's `chromium` package, driven by
 * playwright-core) against the real controller process and a real agent process. Asserts what a
 * person sees: the token form, the device appearing online, the device going offline live (no
 * reload) when its agent stops, and a wrong token showing an error and no fleet data.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import type { BrowserContext, Page } from 'playwright-core';
import { cleanupAgents, spawnAgent } from './support/agent-process.js';
import type { AgentProcess } from './support/agent-process.js';
import { api, startManager } from './support/manager-process.js';
import type { ManagerProcess } from './support/manager-process.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const WAIT_MS = 8_000;

/** The text a person reads in the device's row, cell by cell, or null while there is no such row. */
async function deviceRow(page: Page, id: string): Promise<string[] | null> {
  return page.evaluate((device) => {
    const row = [...document.querySelectorAll('#devices tr')].find((tr) => tr.querySelector('td')?.textContent === device);
    return row ? [...row.querySelectorAll('td')].map((td) => (td as HTMLElement).innerText.trim()) : null;
  }, id);
}

/** Waits until the device's state cell reads `state` (polls the page's own DOM, with a deadline). */
async function waitForState(page: Page, id: string, state: 'online' | 'offline'): Promise<void> {
  await page.waitForFunction(
    ([device, want]) => {
      const row = [...document.querySelectorAll('#devices tr')].find((tr) => tr.querySelector('td')?.textContent === device);
      const cell = row?.querySelectorAll('td')[1] as HTMLElement | undefined;
      return cell !== undefined && cell.innerText.trim() === want && cell.checkVisibility();
    },
    [id, state] as const,
    { timeout: WAIT_MS, polling: 50 },
  );
}

/** Opens the dashboard in a fresh tab and signs in through its own form, as a person would. */
async function signIn(context: BrowserContext, url: string, token: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(url);
  const input = page.getByLabel('Operator token');
  await input.waitFor({ state: 'visible', timeout: WAIT_MS });
  await input.fill(token);
  await page.getByRole('button', { name: 'Connect' }).click();
  return page;
}

describe('dashboard in headless Chromium', () => {
  let m: ManagerProcess;
  let agent: AgentProcess | undefined;
  let context: BrowserContext | undefined;
  let work: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)`);
    work = await mkdtemp(join(tmpdir(), 'dashboard-'));
    m = await startManager();
    context = await chromium.launchPersistentContext(join(work, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1100, height: 520 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
      timeout: 15_000,
    });
    context.on('weberror', (e) => pageErrors.push(String(e.error())));
  }, 25_000);

  afterAll(async () => {
    await context?.close().catch(() => undefined);
    await cleanupAgents(agent);
    await m?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('signs in with the form, shows a new device online, then offline live when its agent stops', async () => {
    const page = await signIn(context!, m.url, m.token);
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'live', null, { timeout: WAIT_MS, polling: 50 });
    expect(await page.locator('#login').isVisible()).toBe(false);
    expect(await page.locator('#count').innerText()).toBe('0 (0 online)');
    // The token is kept for the tab, never put in the address bar.
    expect(page.url()).not.toContain(m.token);

    // Provisioned and started after the page went live: it must arrive over the feed.
    const added = await api<{ token: string }>(m, 'POST', '/api/devices', { id: 'cam-7', groups: ['lab'] });
    expect(added.status).toBe(201);
    agent = await spawnAgent({ broker: m.broker, id: 'cam-7', token: added.body.token, groups: ['lab'], telemetryIntervalMs: 200 });
    await waitForState(page, 'cam-7', 'online');
    // Telemetry shows up too (cpu and memory cells filled from the live samples).
    await page.waitForFunction(
      () => {
        const cells = document.querySelector('#devices tr[data-device="cam-7"]')?.querySelectorAll('td');
        return cells !== undefined && /^\d+%$/.test((cells[4] as HTMLElement).innerText) && /^\d+%$/.test((cells[5] as HTMLElement).innerText);
      },
      null,
      { timeout: WAIT_MS, polling: 50 },
    );
    const row = await deviceRow(page, 'cam-7');
    expect(row?.[0]).toBe('cam-7');
    expect(row?.[1]).toBe('online');
    expect(row?.[2]).toBe('lab');
    expect(await page.locator('#count').innerText()).toBe('1 (1 online)');
    await page.screenshot({ path: join(work, 'dashboard.png'), fullPage: true });
    if (process.env.DASHBOARD_SCREENSHOT) await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT, fullPage: true });

    // Count navigations: the offline state must come over the open socket, not by reloading.
    let navigations = 0;
    page.on('framenavigated', () => navigations++);
    const exit = await agent.kill('SIGTERM');
    expect(exit.code).toBe(0);
    await waitForState(page, 'cam-7', 'offline');
    expect(await page.locator('#count').innerText()).toBe('1 (0 online)');
    expect(await page.locator('#status').innerText()).toBe('live');
    expect(navigations).toBe(0);
    expect(pageErrors).toEqual([]);
    await page.close();
  });

  it('a wrong token shows an error and no fleet data', async () => {
    const page = await signIn(context!, m.url, 'not-the-operator-token');
    const status = page.locator('#status');
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'wrong token', null, { timeout: WAIT_MS, polling: 50 });
    expect(await status.isVisible()).toBe(true);
    // A sentence that says what went wrong and what to do, announced to screen readers.
    const error = page.getByRole('alert');
    expect(await error.isVisible()).toBe(true);
    expect(await error.innerText()).toMatch(/^Wrong operator token: .*operator\.token/);
    if (process.env.DASHBOARD_SCREENSHOT) await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT.replace(/\.png$/, '-wrong.png') });
    // The form is back for another try, and nothing of the fleet reached the page.
    expect(await page.getByLabel('Operator token').isVisible()).toBe(true);
    expect(await page.locator('#devices tr').count()).toBe(0);
    expect(await page.locator('#count').innerText()).toBe('');
    expect(await page.locator('body').innerText()).not.toContain('cam-7');
    expect(await page.evaluate(() => sessionStorage.getItem('edgefleet-token'))).toBeNull();
    expect(pageErrors).toEqual([]);
    await page.close();
  });
});
