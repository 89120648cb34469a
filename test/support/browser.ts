/**
 * Headless Chromium (Debian's `chromium`, driven by playwright-core) for the dashboard tests, and the
 * sign-in a person does through the dashboard's own form.
 */
import { chromium } from 'playwright-core';
import type { BrowserContext, Page } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const DESKTOP = { width: 1280, height: 860 };
const WAIT_MS = 15_000;

/** A browser with its own profile folder (removed with the test's work folder). */
export function openBrowser(profileDir: string): Promise<BrowserContext> {
  return chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: DESKTOP,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
    timeout: 15_000,
  });
}

/** Opens the dashboard in a fresh tab and signs in through its own form, as a person would. */
export async function signIn(context: BrowserContext, url: string, token: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(url);
  const input = page.getByLabel('Operator token');
  await input.waitFor({ state: 'visible', timeout: WAIT_MS });
  await input.fill(token);
  await page.getByRole('button', { name: 'Connect' }).click();
  return page;
}
