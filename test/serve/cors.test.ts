// CORS (--allowed-origins), as a browser meets it over HTTP: the preflight, the allowed and the refused origin, the
// API key still guarding the real request, streams carrying the headers; the flag's checks as a CLI user meets them.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { createApp, type AppOptions } from '../../src/serve/app.js';
import { byteTokenizer, CHAT_TEMPLATE, FakeEngine } from './helpers.js';
import { serverProcs, startFloeServe } from './floe-process.js';
import { repoPath } from '../repo.js';

const tok = byteTokenizer();
const APP = 'http://app.example:3000';
const OTHER = 'https://evil.example';
const closers: Array<() => Promise<unknown>> = [];
after(async () => { for (const c of closers) await c(); });

async function serve(opts: Partial<AppOptions>): Promise<string> {
  const s = createApp({ modelName: 'tiny', ...opts });
  s.ready({ engine: new FakeEngine(tok), tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE) });
  await s.app.listen({ host: '127.0.0.1', port: 0 });
  closers.push(() => s.app.close());
  const a = s.app.server.address();
  return `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
}

// what a browser sends before the openai client's POST from a page on `origin`
const preflight = (url: string, origin: string) => fetch(url, {
  method: 'OPTIONS',
  headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type,openai-organization,x-stainless-lang' },
});
const chat = (url: string, origin: string, key: string | null, stream = false) => fetch(`${url}/v1/chat/completions`, {
  method: 'POST',
  headers: { origin, 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
  body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, stream }),
});

test('without --allowed-origins nothing changes: a preflight is a 404 and answers carry no Access-Control-Allow-Origin', async () => {
  const url = await serve({});
  const p = await preflight(`${url}/v1/chat/completions`, APP);
  assert.equal(p.status, 404);
  assert.equal(p.headers.get('access-control-allow-origin'), null);
  const r = await chat(url, APP, null);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('access-control-allow-origin'), null);
});

test('an allowed origin: the preflight passes without the API key, echoes the origin, methods and the asked headers; the real request still needs the key', async () => {
  const url = await serve({ apiKey: 'k1', allowedOrigins: [APP, 'http://localhost:5173'] });
  for (const path of ['/v1/chat/completions', '/v1/models/tiny', '/v1/responses']) {
    const p = await preflight(url + path, APP);
    assert.equal(p.status, 204, `${path}: ${await p.text()}`);
    assert.equal(p.headers.get('access-control-allow-origin'), APP, path);
    const methods = p.headers.get('access-control-allow-methods')!.split(/,\s*/);
    for (const m of ['GET', 'POST', 'DELETE']) assert.ok(methods.includes(m), `${path}: ${m} in ${methods}`);
    assert.equal(p.headers.get('access-control-allow-headers'), 'authorization,content-type,openai-organization,x-stainless-lang', path);
    assert.match(p.headers.get('vary') ?? '', /origin/i, 'caches keep answers per origin');
  }
  const no = await chat(url, APP, null);
  assert.equal(no.status, 401, 'the key still guards the request itself');
  assert.equal(no.headers.get('access-control-allow-origin'), APP, 'the page can read why it was refused');
  const ok = await chat(url, APP, 'k1');
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('access-control-allow-origin'), APP);
  assert.match(ok.headers.get('access-control-expose-headers') ?? '', /x-request-id/, 'the SDK reads the request id');
  assert.equal((await ok.json() as { object: string }).object, 'chat.completion');
  // streams hijack the reply and write their own head: the headers must go out with it
  const s = await chat(url, APP, 'k1', true);
  assert.equal(s.status, 200);
  assert.match(s.headers.get('content-type')!, /text\/event-stream/);
  assert.equal(s.headers.get('access-control-allow-origin'), APP, 'a streamed chat answer');
  assert.match(await s.text(), /data: \[DONE\]/);
  const rs = await fetch(`${url}/v1/responses`, {
    method: 'POST', headers: { origin: APP, 'content-type': 'application/json', authorization: 'Bearer k1' },
    body: JSON.stringify({ model: 'tiny', input: 'hi', max_output_tokens: 2, stream: true }),
  });
  assert.equal(rs.status, 200, await rs.clone().text());
  assert.equal(rs.headers.get('access-control-allow-origin'), APP, 'a streamed Responses answer');
  await rs.text();
});

test('a disallowed origin gets no Access-Control-Allow-Origin (its browser keeps the answer from the page)', async () => {
  const url = await serve({ allowedOrigins: [APP] });
  const p = await preflight(`${url}/v1/chat/completions`, OTHER);
  assert.equal(p.headers.get('access-control-allow-origin'), null);
  const r = await chat(url, OTHER, null);
  assert.equal(r.headers.get('access-control-allow-origin'), null);
  // a prefix or a different port of an allowed origin is another origin
  for (const o of ['http://app.example:3001', 'http://app.example', `${APP}.evil.example`]) {
    assert.equal((await preflight(`${url}/v1/models`, o)).headers.get('access-control-allow-origin'), null, o);
  }
});

test("'*' allows every origin", async () => {
  const url = await serve({ allowedOrigins: ['*'] });
  const p = await preflight(`${url}/v1/chat/completions`, OTHER);
  assert.equal(p.status, 204);
  assert.equal(p.headers.get('access-control-allow-origin'), '*');
  assert.equal((await chat(url, OTHER, null)).headers.get('access-control-allow-origin'), '*');
});

test('createApp refuses an allowedOrigins entry that is not an origin, naming it', () => {
  const bad: Array<[string[], RegExp]> = [
    [[''], /empty entry/],
    [['app.example'], /'app\.example' is not an origin: expected scheme:\/\/host\[:port\]/],
    [['http://app.example/'], /a browser's Origin has no path: 'http:\/\/app\.example'/],
    [['http://app.example/api'], /'http:\/\/app\.example\/api' is not an origin/],
    [['http://App.Example'], /in lowercase: 'http:\/\/app\.example'/],
    [['*', APP], /'\*' allows every origin; give it alone/],
  ];
  for (const [origins, re] of bad) assert.throws(() => createApp({ modelName: 'tiny', allowedOrigins: origins }), (e: Error) => e instanceof TypeError && /^createApp: allowedOrigins: /.test(e.message) && re.test(e.message), origins.join(','));
  for (const ok of [[APP], ['https://x.example', 'http://localhost:5173', 'http://[::1]:8080', 'chrome-extension://abcdef'], ['*'], []]) createApp({ modelName: 'tiny', allowedOrigins: ok });
});

const BIN = repoPath('bin/floe.js');
const BUILT = repoPath('dist/src/serve/cors.js');
const BROWN = repoPath('models/floe-brown');
const procs = serverProcs();

test('floe serve --allowed-origins: a bad entry is a usage error (exit 2) before loading; a good list answers preflights', { timeout: 120_000 }, async () => {
  for (const [v, re] of [[`${APP},`, /--allowed-origins: an empty entry/], ['localhost:3000', /--allowed-origins: 'localhost:3000' is not an origin/], [`${APP}/`, /has no path/]] as const) {
    const r = spawnSync(process.execPath, [BIN, 'serve', '--model', '/nonexistent/model', '--allowed-origins', v], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 2, `${v}: exit ${r.status}: ${r.stderr}`);
    assert.match(r.stderr, re, v);
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  }
  const f = await startFloeServe(null, { built: BUILT, procs, args: ['--model', BROWN, '--api-key', 'k1', '--allowed-origins', ` ${APP}, http://localhost:5173`] });
  const p = await preflight(`${f.url}/v1/chat/completions`, 'http://localhost:5173');
  assert.equal(p.status, 204);
  assert.equal(p.headers.get('access-control-allow-origin'), 'http://localhost:5173');
  assert.equal((await preflight(`${f.url}/v1/chat/completions`, OTHER)).headers.get('access-control-allow-origin'), null);
  const models = await fetch(`${f.url}/v1/models`, { headers: { origin: APP, authorization: 'Bearer k1' } });
  assert.equal(models.status, 200);
  assert.equal(models.headers.get('access-control-allow-origin'), APP);
  f.proc.kill('SIGTERM');
  await f.exit;
});
