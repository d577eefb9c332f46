// The console's routes (fastify inject): files and content types, nothing outside web/, --no-ui, the key on the JSON only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { loadModel } from '../../src/formats/load.js';
import { createApp } from '../../src/serve/app.js';
import { serverProcs, startFloeServe } from '../serve/floe-process.js';
import { byteTokenizer, CHAT_TEMPLATE, FakeEngine, makeModelDir } from '../serve/helpers.js';
import { repoPath, repoUrl } from '../repo.js';

const ROOT = repoPath('');
const WEB = join(ROOT, 'web');
const tok = byteTokenizer();
const KEY = 'k-' + Math.random().toString(36).slice(2);
const auth = { authorization: `Bearer ${KEY}` };
const procs = serverProcs();

function setup(opts: { ui?: boolean; loading?: boolean; modelPath?: string; kvDtype?: string } = {}) {
  const engine = new FakeEngine(tok, opts.kvDtype ? { kvDtype: opts.kvDtype } : {});
  const s = createApp({ modelName: 'tiny', apiKey: KEY, ui: opts.ui, modelPath: opts.modelPath });
  if (!opts.loading) s.ready({ engine, tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE) });
  const get = (url: string, headers: Record<string, string> = {}) => s.app.inject({ method: 'GET', url, headers });
  return { ...s, engine, get };
}

const TYPES: Record<string, RegExp> = { '.html': /^text\/html/, '.js': /^text\/javascript/, '.mjs': /^text\/javascript/, '.css': /^text\/css/, '.svg': /^image\/svg\+xml/ };

test('the page and every web/ file load without a key, byte for byte, with their content type', async () => {
  const { get } = setup();
  const index = await get('/');
  assert.equal(index.statusCode, 200);
  assert.match(String(index.headers['content-type']), /^text\/html; charset=utf-8/);
  assert.deepEqual(index.rawPayload, readFileSync(join(WEB, 'index.html')));
  const files = readdirSync(WEB);
  assert.ok(files.length >= 8, `web/ has ${files.length} files`);
  for (const f of files) {
    const r = await get(`/ui/${f}`);
    assert.equal(r.statusCode, 200, f);
    assert.match(String(r.headers['content-type']), TYPES[extname(f)]!, f);
    assert.deepEqual(r.rawPayload, readFileSync(join(WEB, f)), f);
  }
});

test('the vendored modules are the installed npm files, and every import of the page resolves on this server (no CDN)', async () => {
  const { get } = setup();
  const vendor: Record<string, string> = {
    '/ui/vendor/preact.mjs': 'node_modules/preact/dist/preact.mjs',
    '/ui/vendor/preact-hooks.mjs': 'node_modules/preact/hooks/dist/hooks.mjs',
    '/ui/vendor/htm.mjs': 'node_modules/htm/dist/htm.mjs',
    '/ui/vendor/uPlot.esm.js': 'node_modules/uplot/dist/uPlot.esm.js',
    '/ui/vendor/uPlot.min.css': 'node_modules/uplot/dist/uPlot.min.css',
    '/ui/vendor/eventsource-parser.js': 'node_modules/eventsource-parser/dist/index.js',
  };
  for (const [url, file] of Object.entries(vendor)) {
    const r = await get(url);
    assert.equal(r.statusCode, 200, url);
    assert.deepEqual(r.rawPayload, readFileSync(join(ROOT, file)), url);
  }
  const html = readFileSync(join(WEB, 'index.html'), 'utf8');
  const importMap = JSON.parse(/<script type="importmap">([\s\S]*?)<\/script>/.exec(html)![1]!) as { imports: Record<string, string> };
  const urls = new Set([...html.matchAll(/(?:href|src)="([^"]+)"/g)].map((m) => m[1]!));
  for (const f of readdirSync(WEB).filter((n) => n.endsWith('.js'))) {
    const src = readFileSync(join(WEB, f), 'utf8');
    assert.doesNotMatch(src, /https?:\/\/|\/\/cdn/i, `${f} loads nothing from another host`);
    for (const m of src.matchAll(/^\s*import\s+(?:[^'"]*\s+from\s+)?['"]([^'"]+)['"]/gm)) {
      const spec = m[1]!;
      if (spec.startsWith('./')) urls.add(`/ui/${spec.slice(2)}`);
      else {
        assert.ok(importMap.imports[spec], `${f} imports '${spec}', which the import map lacks`);
        urls.add(importMap.imports[spec]!);
      }
    }
  }
  assert.ok(urls.size >= 12, [...urls].join(' '));
  for (const u of urls) assert.equal((await get(u)).statusCode, 200, u);
});

test('paths outside the served files are refused', async () => {
  const { get } = setup();
  const pkg = readFileSync(join(ROOT, 'package.json'), 'utf8');
  for (const url of [
    '/ui/../package.json', '/ui/%2e%2e/package.json', '/ui/..%2fpackage.json', '/ui/%2e%2e%2fpackage.json', '/ui/vendor/../../package.json',
    '/ui/vendor/preact/package.json', '/ui//etc/passwd', '/ui/%2Fetc%2Fpasswd', '/ui/index.html%00.js', '/ui/', '/ui', '/ui/nope.js',
    '/index.html', '/web/index.html', '/ui/vendor/', '/package.json', '/ui/app.js/..', '/ui/.%2e/.%2e/package.json',
  ]) {
    const r = await get(url);
    assert.notEqual(r.statusCode, 200, url);
    assert.ok(!r.body.includes(pkg.slice(0, 60)) && !r.body.includes('root:x:0'), url);
  }
  const r = await get('/ui/nope.js');
  assert.equal(r.statusCode, 404);
  assert.match(r.json().error.message, /no route for GET \/ui\/nope\.js/);
  // Files of types the console does not serve stay hidden even inside web/.
  assert.ok(readdirSync(WEB).every((f) => TYPES[extname(f)]), 'web/ holds only servable types');
});

test('ui: false (--no-ui) removes the page; the API and its JSON routes stay', async () => {
  const { get } = setup({ ui: false });
  for (const url of ['/', '/ui/index.html', '/ui/app.js', '/ui/vendor/preact.mjs']) assert.equal((await get(url)).statusCode, 404, url);
  assert.equal((await get('/v1/models', auth)).statusCode, 200);
  assert.equal((await get('/v1/floe/stats', auth)).statusCode, 200);
});

test('the JSON routes need the key, answer 503 while loading, and carry the same registry as /metrics', async () => {
  const loading = setup({ loading: true });
  assert.equal((await loading.get('/')).statusCode, 200, 'the page loads while the model loads');
  assert.equal((await loading.get('/v1/floe/stats', auth)).statusCode, 503);

  const { get, engine } = setup();
  for (const url of ['/v1/floe/stats', '/v1/floe/info']) {
    const none = await get(url);
    assert.equal(none.statusCode, 401, url);
    assert.match(none.json().error.message, /missing API key/);
    assert.equal((await get(url, { authorization: 'Bearer wrong' })).statusCode, 401, url);
    assert.equal((await get(url, auth)).statusCode, 200, url);
  }
  // Fresh engine numbers: each must show up in the JSON as in the Prometheus text of the same scrape state.
  const kvUsed = 1 + Math.floor(Math.random() * 60);
  const running = 1 + Math.floor(Math.random() * 9);
  engine.stats = async () => ({
    running, waiting: 3, kvBlocksTotal: 64, kvBlocksUsed: kvUsed, kvBlocksCached: 5, blockSize: 16,
    prefixQueriedTokens: 40, prefixHitTokens: 10, preemptions: 2, promptTokens: 40, generatedTokens: 77, steps: 9,
  });
  const j = (await get('/v1/floe/stats', auth)).json() as { time: number; metrics: Array<{ name: string; values: Array<{ value: number }> }> };
  assert.ok(Math.abs(j.time - Date.now() / 1000) < 5);
  const text = (await get('/metrics')).body;
  for (const [name, want] of [['floe_kv_blocks_used', kvUsed], ['floe_num_requests_running', running], ['floe_num_preemptions_total', 2], ['floe_engine_generation_tokens_total', 77], ['floe_prefix_cache_hit_rate', 0.25]] as const) {
    const got = j.metrics.find((m) => m.name === name)?.values[0]?.value;
    assert.equal(got, want, name);
    assert.equal(Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]), want, `${name} in /metrics`);
  }
});

test('/v1/floe/info: the model facts floe info reports, from the headers only', async () => {
  const dir = makeModelDir('gqa_f32');
  const { get } = setup({ modelPath: dir });
  const r = await get('/v1/floe/info', auth);
  assert.equal(r.statusCode, 200, r.body);
  const j = r.json();
  const m = await loadModel(dir);
  let params = 0;
  let bytes = 0;
  for (const t of m.tensors.values()) { params += t.numel; bytes += t.data.byteLength; }
  const c = m.config;
  m.dispose();
  assert.equal(j.model.parameters, params);
  assert.equal(j.model.weight_bytes, bytes);
  assert.deepEqual(j.model.dtypes, { F32: params });
  assert.deepEqual([j.model.config.layers, j.model.config.hidden_size, j.model.config.kv_heads, j.model.config.head_dim], [c.numLayers, c.hiddenSize, c.numKvHeads, c.headDim]);
  assert.equal(j.kv_cache.bytes_per_token, 2 * c.numLayers * c.numKvHeads * c.headDim * 4); // K and V, f32
  assert.equal(j.engine.kvBlocks, 64);
  assert.ok(j.memory.rss_bytes > 0 && j.memory.system_total_bytes >= j.memory.system_free_bytes);
  assert.equal(j.kv_cache.dtype, 'f32');
  // an fp8 cache is named as --kv-cache-dtype names it, one byte a value plus a scale per (token, KV head) and K / V
  const fp8 = await setup({ modelPath: dir, kvDtype: 'fp8_e4m3' }).get('/v1/floe/info', auth);
  assert.equal(fp8.json().kv_cache.dtype, 'fp8');
  assert.equal(fp8.json().kv_cache.bytes_per_token, 2 * c.numLayers * c.numKvHeads * (c.headDim + 4));
});

test('floe serve --no-ui: no page; without the flag the page is there', { timeout: 60_000 }, async () => {
  const dir = makeModelDir('gqa_f32');
  for (const noUi of [true, false]) {
    // no data dir (--no-batch): the page is all this looks at
    const floe = await startFloeServe(null, { built: join(ROOT, 'dist/src/serve/static.js'), procs, ui: !noUi, args: ['--model', dir] });
    const page = await fetch(floe.url + '/');
    assert.equal(page.status, noUi ? 404 : 200);
    if (!noUi) assert.match(await page.text(), /<title>floe console<\/title>/);
    floe.proc.kill('SIGTERM');
    await floe.exit;
  }
});

test('histogram quantiles: inside the bucket that holds the true sample quantile, over the window only', async () => {
  const { quantile, buckets } = await import(repoUrl('web/metrics.js').href) as {
    quantile: (q: number, now: Array<{ le: number; count: number }>, before?: Array<{ le: number; count: number }>) => number | null;
    buckets: (m: unknown[], name: string) => Array<{ le: number; count: number }>;
  };
  const { Histogram, Registry } = await import('prom-client');
  const bounds = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1];
  const reg = new Registry();
  const h = new Histogram({ name: 'x_seconds', help: 'x', buckets: bounds, registers: [reg] });
  for (let i = 0; i < 500; i++) h.observe(Math.random() * 2); // before the window
  const before = buckets(await reg.getMetricsAsJSON(), 'x_seconds');
  const window: number[] = [];
  for (let i = 0; i < 1000; i++) {
    const v = Math.exp(-7 + 6 * Math.random()); // 0.0009 .. 0.37 s
    window.push(v);
    h.observe(v);
  }
  const now = buckets(await reg.getMetricsAsJSON(), 'x_seconds');
  assert.equal(now.at(-1)!.le, Infinity);
  window.sort((a, b) => a - b);
  for (const q of [0.5, 0.9, 0.99]) {
    const exact = window[Math.ceil(q * window.length) - 1]!;
    const got = quantile(q, now, before)!;
    const hi = bounds.find((b) => b >= exact)!;
    const lo = [0, ...bounds].filter((b) => b < exact).at(-1)!;
    assert.ok(got >= lo && got <= hi, `q${q}: ${got} outside the bucket (${lo}, ${hi}] of the exact ${exact}`);
  }
  assert.equal(quantile(0.5, now, now), null, 'no observations in the window');
  // histogram_quantile's definition: linear inside the bucket; the +Inf bucket answers its lower bound.
  const b = (counts: number[]) => [1, 2, 4, Infinity].map((le, i) => ({ le, count: counts[i]! }));
  assert.equal(quantile(0.5, b([0, 10, 10, 10])), 1.5); // rank 5 of the 10 in (1, 2]
  assert.equal(quantile(0.75, b([4, 4, 8, 8])), 3); // rank 6: 2 of the 4 in (2, 4]
  assert.equal(quantile(0.25, b([4, 4, 8, 8])), 0.5); // rank 2 of the 4 in (0, 1]
  assert.equal(quantile(0.9, b([0, 0, 1, 10])), 4);
  assert.equal(quantile(0.5, b([5, 10, 20, 20]), b([5, 10, 10, 10])), 3, 'only the window: 10 new, all in (2, 4]');
});
