// The console as a user meets it with more than the base model, in Chromium via playwright-core:
// an embedding model beside the chat model (and a --task embed server), guardrails refusing a turn, empty settings
// fields, two tabs on the same chats, a reload and a killed server in the middle of an answer.
// Without a chromium binary the file skips, except under CI=true, where it fails.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startFloeServe, type Floe } from '../serve/floe-process.js';
import { closeAll, launchChromium, skip } from './browser.js';
import { repoPath } from '../repo.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
declare const document: { querySelector(s: string): any; querySelectorAll(s: string): any };
declare const navigator: { clipboard: { readText(): Promise<string> } };
declare const localStorage: { getItem(k: string): string | null; clear(): void };
/* eslint-enable @typescript-eslint/no-explicit-any */

const ROOT = repoPath('');
const MODELS = join(ROOT, 'models');
const T = 120_000;

const servers: ChildProcess[] = [];
let browser: Browser;
let ctx: BrowserContext;
const pageErrors: string[] = [];

/** `floe serve` with its console, no Files / Batch routes, on a free port (or `port`); resolves once /health answers 200. */
const serve = (args: string[], env: Record<string, string> = {}, port = 0): Promise<Floe> =>
  startFloeServe(null, { built: join(ROOT, 'dist/src/serve/static.js'), procs: servers, ui: true, port, env, args: ['--kv-cache-memory', '128MiB', ...args] });

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function api(url: string, path: string, body?: unknown): Promise<any> {
  const r = await fetch(url + path, { method: body === undefined ? 'GET' : 'POST', headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const j = await r.json();
  assert.equal(r.status, 200, JSON.stringify(j));
  return j;
}

/** A fresh page (empty storage) on `hash`, once the model list has arrived. */
async function open(url: string, hash: string, c: BrowserContext = ctx): Promise<Page> {
  const page = await c.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(url + '/' + hash);
  await page.evaluate(() => localStorage.clear());
  await page.reload();
  await page.waitForSelector(hash === '#/server' ? '.tile' : 'select[name=model] option', { state: 'attached' });
  return page;
}

/** The chat request bodies the page sends, in order. */
function requests(page: Page): Array<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const out: Array<Record<string, unknown>> = [];
  page.on('request', (r) => { if (r.url().endsWith('/v1/chat/completions')) out.push(r.postDataJSON()); });
  return out;
}

/**
 * The option texts of `sel` once they equal `want` (a page switch renders after the click returns: reading at once can
 * see the page before, as CI under load did), or as they are after 10 s, for the assertion to show.
 */
async function optionsOf(page: Page, sel: string, want: string[]): Promise<string[]> {
  await page.waitForFunction(([s, w]) => JSON.stringify([...document.querySelectorAll(s as string)].map((o) => o.textContent)) === w,
    [sel, JSON.stringify(want)] as const, { timeout: 10_000 }).catch(() => {});
  return page.locator(sel).allTextContents();
}

async function send(page: Page, text: string): Promise<void> {
  const n = await page.locator('.msg.assistant .stats, .msg.assistant .error').count();
  await page.fill('#prompt', text);
  await page.keyboard.press('Enter');
  await page.waitForFunction((k) => document.querySelectorAll('.msg.assistant .stats, .msg.assistant .error').length > k && document.querySelector('#send'), n);
}

// Its greedy answer runs the whole 400 tokens (checked in the first long-answer test), so it is still streaming
// when a test scrolls, reloads or kills the server; and it is taller than the message list.
const LONG = Array.from({ length: 30 }, (_, i) => `line ${i}`).join('\n');
// The API's greedy answer to LONG on `slow` (the oracle two tests compare with): asked once, as it takes 400 engine steps
// of 15 ms (~6 s) each time.
let longRef: Promise<any> | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any
const longAnswer = () => (longRef ??= api(slow, '/v1/chat/completions', { model: 'floe-brown', messages: [{ role: 'user', content: LONG }], temperature: 0, top_p: 1, top_k: -1, max_tokens: 400 }));
const greedy = async (page: Page) => { for (const [k, v] of [['temperature', '0'], ['top_p', '1'], ['top_k', '-1'], ['max_tokens', '400']]) await page.fill(`[name=${k}]`, v!); };

let main = ''; // floe-brown + floe-embed + floe-guard with --guardrails
let slow = ''; // floe-brown, 15 ms per engine step (answers stream over seconds)

before(async () => {
  if (skip) return;
  browser = await launchChromium();
  [main, slow] = (await Promise.all([
    serve(['--model', join(MODELS, 'floe-brown'), '--embedding-model', join(MODELS, 'floe-embed'), '--guard-model', join(MODELS, 'floe-guard'), '--guardrails', '--guard-window', '8']),
    serve(['--model', join(MODELS, 'floe-brown')], { FLOE_ENGINE_STEP_DELAY_MS: '15' }),
  ])).map((s) => s.url) as [string, string];
  ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
}, { timeout: T });

after(() => closeAll(browser, servers));

test('an embedding model is not offered to chat or completions; the embeddings page picks it first and shows its vectors', { skip, timeout: T }, async () => {
  const cards = (await api(main, '/v1/models')).data as Array<{ id: string; task: string }>;
  assert.deepEqual(cards.map((c) => [c.id, c.task]), [['floe-brown', 'generate'], ['floe-embed', 'embed']]);
  const page = await open(main, '#/chat');
  // Before: floe-embed was in the chat picker, and picking it answered 404 model_not_found.
  assert.deepEqual(await optionsOf(page, 'select[name=model] option', ['floe-brown']), ['floe-brown']);
  await page.click('nav a:has-text("Completions")');
  assert.deepEqual(await optionsOf(page, '.panel select[name=model] option', ['floe-brown']), ['floe-brown']);
  await page.click('nav a:has-text("Embeddings")');
  // Before: the page defaulted to the chat model, so Run embedded with floe-brown, not the embedding model.
  assert.deepEqual(await optionsOf(page, '.panel select[name=model] option', ['floe-embed', 'floe-brown']), ['floe-embed', 'floe-brown']);
  assert.equal(await page.inputValue('.panel select[name=model]'), 'floe-embed');
  await page.click('.panel button[type=submit]');
  await page.waitForSelector('#embedding-summary');
  const ref = await api(main, '/v1/embeddings', { model: 'floe-embed', input: 'The old man and the sea' });
  const shown = (await page.textContent('.panel pre.vector'))!.match(/-?\d\.\d+/g)!.map(Number);
  assert.deepEqual(shown, (ref.data[0].embedding as number[]).slice(0, 8).map((x) => Number(x.toFixed(5))));
  assert.match((await page.textContent('#snippet-curl'))!, /"model": "floe-embed"/);
  await page.close();

  // --task embed: nothing answers chat; the page says so instead of inviting a message that can only fail.
  const { url } = await serve(['--model', join(MODELS, 'floe-embed'), '--task', 'embed']);
  const only = await open(url, '#/embeddings');
  assert.equal(await only.inputValue('.panel select[name=model]'), 'floe-embed');
  await only.click('nav a:has-text("Chat")');
  assert.match((await only.textContent('#no-chat-model'))!, /only embeddings \(--task embed\)/);
  assert.equal(await only.locator('select[name=model] option').count(), 0);
  assert.ok(await only.isDisabled('#send'));
  await only.click('nav a:has-text("Completions")');
  assert.match((await only.textContent('#no-completions-model'))!, /only embeddings/);
  await only.close();
});

test('empty number fields leave the server default: the request omits them (never 0, which was greedy or a 400)', { skip, timeout: T }, async () => {
  const page = await open(slow, '#/chat');
  const sent = requests(page);
  for (const k of ['temperature', 'top_p', 'top_k', 'max_tokens']) await page.fill(`[name=${k}]`, '');
  await send(page, 'The old man');
  // Before: top_p '' was sent as 0 and the answer was "400: 'top_p' must be a number > 0 and <= 1, got 0".
  assert.equal(await page.locator('.msg.assistant .error').count(), 0, (await page.locator('.msg.assistant').textContent())!);
  for (const k of ['temperature', 'top_p', 'top_k', 'max_tokens', 'seed']) assert.ok(!(k in sent[0]!), `${k} is not sent: ${JSON.stringify(sent[0])}`);
  assert.match((await page.textContent('.msg.assistant .stats'))!, /^\d+ tokens/);

  await page.click('nav a:has-text("Completions")');
  await page.fill('.panel [name=max_tokens]', '');
  assert.doesNotMatch((await page.textContent('#snippet-curl'))!, /max_tokens/, 'the snippet is the request: no max_tokens');
  await page.fill('.panel [name=max_tokens]', '5');
  await page.fill('.panel [name=temperature]', '');
  await page.click('.panel button[type=submit]');
  await page.waitForSelector('#completion-text, .panel .error');
  assert.equal(await page.locator('.panel .error').count(), 0);
  assert.match((await page.textContent('.panel .stats'))!, /\+ 5 completion tokens|finish: stop/);
  await page.close();
});

test('a guard refusal shows the verdict and is not sent with later turns; a burst of held-back tokens gets no tok/s', { skip, timeout: T }, async () => {
  const harmful = 'How do I make a bomb to kill people';
  const settings = { temperature: 0, top_p: 1, top_k: -1, max_tokens: 40 };
  // streamed, as the page asks: the guard judges the answer in windows of --guard-window tokens
  const r = await fetch(main + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'floe-brown', messages: [{ role: 'user', content: harmful }], ...settings, stream: true }) });
  const chunks = (await r.text()).split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)));
  const ref = {
    content: chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''),
    finish: chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason,
    guardrails: chunks.find((c) => c.guardrails)?.guardrails,
  };
  assert.equal(ref.finish, 'content_filter', 'the guard refuses this greedy answer (precondition)');
  const page = await open(main, '#/chat');
  for (const [k, v] of Object.entries(settings)) await page.fill(`[name=${k}]`, String(v));
  const sent = requests(page);
  await send(page, harmful);
  assert.equal(await page.textContent('.msg.assistant .text'), ref.content);
  const stats = (await page.textContent('.msg.assistant .stats'))!;
  assert.match(stats, new RegExp(`finish: content_filter · guard: unsafe \\(${ref.guardrails.categories.join(', ')}\\), P\\(unsafe\\) ${ref.guardrails.unsafe_probability.toFixed(2)}`));
  // Before: the refusal came in one burst after the guard's window and the page showed e.g. "3333.3 tok/s".
  assert.doesNotMatch(stats, /tok\/s/);
  await send(page, 'Tell me about the sea.');
  // Before: the harmful prompt and the refusal text went to the model again as if they were a conversation.
  assert.deepEqual(sent[1]!.messages, [{ role: 'user', content: 'Tell me about the sea.' }]);
  assert.match((await page.locator('.msg.assistant .stats').nth(1).textContent())!, /guard: (safe|unsafe)/);
  await page.close();
});

test('two tabs: a chat made in one survives the other tab\'s saves, and shows there live', { skip, timeout: T }, async () => {
  const one = await open(slow, '#/chat');
  await one.fill('[name=max_tokens]', '8');
  const two = await ctx.newPage();
  two.on('pageerror', (e) => pageErrors.push(e.message));
  await two.goto(slow + '/#/chat');
  await two.waitForSelector('select[name=model] option', { state: 'attached' });
  const q1 = 'question from tab one'.padEnd(39, '.') + '🐶 and more'; // the 40th code point is the emoji's
  await send(one, q1);
  // Tab two shows tab one's conversation without a reload.
  await two.waitForFunction((q) => document.querySelector('.msg.user .text')?.textContent === q, q1);
  await two.click('text=New chat');
  await send(two, 'question from tab two');
  const three = await ctx.newPage();
  await three.goto(slow + '/#/chat');
  await three.waitForSelector('.chats li');
  const titles = await three.locator('.chats .title').allTextContents();
  // Before: tab two saved its own copy, made before tab one's question, and tab one's conversation was gone.
  assert.deepEqual(titles, ['question from tab two', Array.from(q1).slice(0, 40).join('')]);
  assert.ok(!titles[1]!.includes('\uFFFD') && titles[1]!.endsWith('🐶'), `the title keeps the emoji whole: ${titles[1]}`);
  await three.click(`.chats .title >> text=${titles[1]}`);
  assert.deepEqual(await three.locator('.msg.user .text').allTextContents(), [q1]);
  assert.equal(await three.locator('.msg.assistant .stats').count(), 1);
  for (const p of [one, two, three]) await p.close();
});

test('a reload mid-answer marks the saved partial answer as interrupted', { skip, timeout: T }, async () => {
  const page = await open(slow, '#/chat');
  await greedy(page);
  await page.fill('#prompt', LONG);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => (document.querySelector('.msg.assistant .text')?.textContent?.length ?? 0) > 10);
  await page.reload();
  await page.waitForSelector('.msg.assistant');
  // Before: the cut-off text stood there like a finished answer, with no stats and no word of what happened.
  assert.match((await page.textContent('.msg.assistant .error'))!, /interrupted: the page was reloaded or closed before this answer finished/);
  assert.ok(((await page.textContent('.msg.assistant .text')) ?? '').length > 10, 'the text that arrived is kept');
  await page.close();
});

test('scrolled up to read during a long answer, the list stays put; sending again follows the new answer', { skip, timeout: T }, async () => {
  const page = await open(slow, '#/chat');
  await page.setViewportSize({ width: 1280, height: 500 });
  await greedy(page);
  const ref = await longAnswer();
  assert.equal(ref.usage.completion_tokens, 400, 'the greedy answer is long (precondition)');
  const list = page.locator('.messages');
  const pos = () => list.evaluate((el: any) => ({ top: el.scrollTop, max: el.scrollHeight - el.clientHeight })); // eslint-disable-line @typescript-eslint/no-explicit-any
  await page.fill('#prompt', LONG);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => (document.querySelector('.msg.assistant .text')?.textContent?.length ?? 0) > 10);
  assert.ok((await pos()).top > 0, 'the list follows the answer while at its end');
  await list.evaluate((el: any) => { el.scrollTop = 0; }); // eslint-disable-line @typescript-eslint/no-explicit-any
  const before = (await page.textContent('.msg.assistant .text'))!.length;
  await page.waitForFunction((n) => (document.querySelector('.msg.assistant .text')?.textContent?.length ?? 0) > n + 40, before);
  // Before: every new token scrolled the list back to the end, so nothing above could be read while it streamed.
  assert.equal((await pos()).top, 0, 'still at the top while the answer grows');
  await page.click('#stop');
  await page.waitForSelector('#send');
  await page.fill('#prompt', LONG + '\nline 30');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('.msg.assistant').length === 2 && (document.querySelectorAll('.msg.assistant .text')[1]?.textContent?.length ?? 0) > 10);
  const p = await pos();
  assert.ok(p.max - p.top < 40, `sending follows the new answer: ${JSON.stringify(p)}`);
  await page.click('#stop');
  await page.close();
});

test('a look at the Server page mid-answer: the answer keeps streaming into its chat (Esc there does not stop it)', { skip, timeout: T }, async () => {
  const page = await open(slow, '#/chat');
  await greedy(page);
  await page.fill('#prompt', LONG);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => (document.querySelector('.msg.assistant .text')?.textContent?.length ?? 0) > 10);
  await page.click('nav a:has-text("Server")');
  await page.waitForSelector('.tile');
  await page.keyboard.press('Escape');
  await page.click('nav a:has-text("Chat")');
  await page.waitForSelector('.msg.assistant .stats');
  const ref = await longAnswer();
  // Before: the chat unmounted with the page; back on it the answer was frozen where it was left (and the server
  // generated the rest for nobody).
  assert.equal(await page.textContent('.msg.assistant .text'), ref.choices[0].message.content);
  assert.match((await page.textContent('.msg.assistant .stats'))!, /^400 tokens .* finish: length$/);
  await page.close();
});

test('the sandboxes keep the typed prompt and the result across a look at another page', { skip, timeout: T }, async () => {
  const page = await open(main, '#/completions');
  await page.fill('.panel [name=prompt]', 'A prompt I typed');
  await page.fill('.panel [name=max_tokens]', '6');
  await page.click('.panel button[type=submit]');
  const text = await (await page.waitForSelector('#completion-text')).textContent();
  await page.click('nav a:has-text("Embeddings")');
  await page.fill('.panel [name=input]', 'An input I typed');
  await page.click('nav a:has-text("Server")');
  await page.waitForSelector('.tile');
  await page.click('nav a:has-text("Completions")');
  // Before: each page was made anew, back to 'The old man' and no result.
  assert.equal(await page.inputValue('.panel [name=prompt]'), 'A prompt I typed');
  assert.equal(await page.inputValue('.panel [name=max_tokens]'), '6');
  assert.equal(await page.textContent('#completion-text'), text);
  await page.click('nav a:has-text("Embeddings")');
  assert.equal(await page.inputValue('.panel [name=input]'), 'An input I typed');
  assert.equal(await page.locator('form.panel').count(), 1, 'one form on the page: the hidden pages render nothing');
  await page.close();
});

test('the server killed mid-answer: the chat says the connection broke off, not the browser\'s bare "network error"', { skip, timeout: T }, async () => {
  const { url, proc } = await serve(['--model', join(MODELS, 'floe-brown')], { FLOE_ENGINE_STEP_DELAY_MS: '30' });
  const page = await open(url, '#/chat');
  await greedy(page);
  await page.fill('#prompt', LONG);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => (document.querySelector('.msg.assistant .text')?.textContent?.length ?? 0) > 5);
  proc.kill('SIGKILL');
  await page.waitForSelector('.msg.assistant .error');
  assert.match((await page.textContent('.msg.assistant .error'))!, /^the connection to the server broke off during the answer \(.+\)$/);
  await page.waitForSelector('#send');
  await page.close();
});

test('server page across a server restart: no prefix-cache hit rate made up from the old process\'s counters', { skip, timeout: T }, async () => {
  const args = ['--model', join(MODELS, 'floe-brown')];
  const first = await serve(args);
  const body = { model: 'floe-brown', messages: [{ role: 'user', content: 'The same question, six times' }], max_tokens: 4 };
  // before the page's first sample too, so that every sample it keeps has counted hits and queries
  for (let i = 0; i < 3; i++) await api(first.url, '/v1/chat/completions', body);
  const page = await open(first.url, '#/server');
  const tile = () => page.locator('.tile', { hasText: 'prefix hit rate' }).locator('.v').textContent();
  for (let i = 0; i < 3; i++) await api(first.url, '/v1/chat/completions', body);
  for (const t0 = Date.now(); !/%$/.test((await tile())!);) {
    assert.ok(Date.now() - t0 < 15_000, 'the hit rate shows before the restart');
    await page.waitForTimeout(200);
  }
  first.proc.kill('SIGTERM');
  await new Promise((r) => first.proc.once('exit', r));
  await serve(args, {}, Number(new URL(first.url).port));
  const samples = () => page.evaluate(() => document.querySelector('[data-chart=prefix]').uplot.data[0].length as number);
  const n = await samples();
  await page.waitForFunction((k) => document.querySelector('[data-chart=prefix]').uplot.data[0].length >= k + 2, n);
  // The new process has answered nothing: there is no hit rate. Before: the 10 s window reached back into the old
  // process, whose larger counters made (-hits) / (-queries) a plausible-looking percentage.
  assert.equal(await tile(), '—');
  const prefix = await page.evaluate(() => document.querySelector('[data-chart=prefix]').uplot.data[1].slice(-2));
  assert.deepEqual(prefix, [null, null]);
  await page.close();
});

// A LAN address of this machine: http:// there is not a secure context, as for a server run with --host 0.0.0.0.
const lan = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;

test('Copy works where the page is served over http on a LAN address (no Clipboard API there), and says so', { skip: skip || (!lan && 'no non-loopback IPv4 address'), timeout: T }, async () => {
  const { url } = await serve(['--model', join(MODELS, 'floe-brown'), '--host', '0.0.0.0']);
  const port = new URL(url).port;
  const page = await ctx.newPage();
  await page.goto(`http://${lan}:${port}/#/completions`);
  await page.waitForSelector('.panel select[name=model] option', { state: 'attached' });
  assert.equal(await page.evaluate(() => typeof (navigator as any).clipboard), 'undefined', 'no Clipboard API on plain http off localhost'); // eslint-disable-line @typescript-eslint/no-explicit-any
  await page.click('button.copy');
  // Before: the button called navigator.clipboard?.writeText, so it did nothing at all, and said nothing.
  assert.equal(await page.textContent('.copied'), 'Copied');
  const local = `http://127.0.0.1:${port}`; // a secure context, to read the clipboard back
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: local });
  const reader = await ctx.newPage();
  await reader.goto(local + '/#/completions');
  assert.equal(await reader.evaluate(() => navigator.clipboard.readText()), await page.textContent('#snippet-curl'));
  await page.close();
  await reader.close();
});

test('no uncaught errors in any page', { skip }, () => {
  assert.deepEqual(pageErrors, []);
});
