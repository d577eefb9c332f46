// The console's error banners in a real browser (playwright-core driving the system's Chromium) against `floe serve`
// with an API key: an error that every route answers (a wrong key) is shown once, in the shell's banner, not again on
// the Server page; an error of the Server page's own poll still shows there.
// Without a chromium binary the file skips, except under CI=true, where it fails.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { startFloeServe } from '../serve/floe-process.js';
import { closeAll, launchChromium, skip } from './browser.js';
import { repoPath } from '../repo.js';

// Browser globals, used only inside page.evaluate callbacks (this file compiles without the DOM lib).
/* eslint-disable @typescript-eslint/no-explicit-any */
declare const document: { querySelector(s: string): any; querySelectorAll(s: string): any };
declare const localStorage: { setItem(k: string, v: string): void };
/* eslint-enable @typescript-eslint/no-explicit-any */

const ROOT = repoPath('');
const MODEL = join(ROOT, 'models', 'floe-brown');
const KEY = 'errors-' + Math.random().toString(36).slice(2);
const T = 60_000;

const servers: ChildProcess[] = [];
let url = '';
let browser: Browser;
const pageErrors: string[] = [];

before(async () => {
  if (skip) return;
  browser = await launchChromium();
  // with its console, no Files / Batch routes
  url = (await startFloeServe(null, { built: join(ROOT, 'dist/src/serve/static.js'), procs: servers, ui: true, args: ['--model', MODEL, '--api-key', KEY] })).url;
}, { timeout: T });

after(() => closeAll(browser, servers));

/** The Server page with `key` in the browser's storage. */
async function serverPage(key: string): Promise<Page> {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await ctx.addInitScript((k) => localStorage.setItem('floe.apiKey', k), key);
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  return page;
}

/** Texts of every alert on the page, after the Server page has polled /v1/floe/stats `polls` more times. */
async function alertsAfter(page: Page, polls: number): Promise<string[]> {
  for (let i = 0; i < polls; i++) await page.waitForResponse((r) => r.url().endsWith('/v1/floe/stats'), { timeout: 20_000 });
  // the poll after the one awaited has started, so the awaited one's result is rendered
  await page.waitForResponse((r) => r.url().endsWith('/v1/floe/stats'), { timeout: 20_000 });
  return page.evaluate(() => [...document.querySelectorAll('[role=alert]')].map((e: { textContent: string }) => e.textContent));
}

test('a wrong key on the Server page: the server\'s 401 is shown once (the shell\'s banner), not a second time in the page', { skip, timeout: T }, async () => {
  const r = await fetch(url + '/v1/floe/stats', { headers: { authorization: 'Bearer wrong-key' } });
  const expected = `${r.status}: ${((await r.json()) as { error: { message: string } }).error.message}`;
  assert.equal(r.status, 401);
  const page = await serverPage('wrong-key');
  await page.goto(url + '/#/server');
  await page.waitForSelector('#global-error');
  assert.deepEqual(await alertsAfter(page, 1), [expected]);
  assert.equal(await page.textContent('#global-error'), expected);
  await page.context().close();
});

test('an error of the Server page\'s own poll (its route fails, the others answer) is still shown on the page', { skip, timeout: T }, async () => {
  const page = await serverPage(KEY);
  const message = 'stats are broken (test)';
  await page.route('**/v1/floe/stats', (route) => route.fulfill({ status: 500, contentType: 'application/json', body: JSON.stringify({ error: { message, type: 'server_error', param: null, code: null } }) }));
  await page.goto(url + '/#/server');
  await page.waitForSelector('.server-page [role=alert]');
  assert.deepEqual(await alertsAfter(page, 1), [`500: ${message}`]);
  assert.equal(await page.$('#global-error'), null, '/v1/models answered: no shell banner');
  await page.context().close();
});

test('no uncaught errors in any page', { skip }, () => {
  assert.deepEqual(pageErrors, []);
});
