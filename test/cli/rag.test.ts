// `floe rag` as a subprocess with real embedders (the built-in models/floe-embed; floe-brown pooled) and the built-in chat model: ingest →
// query → ask with citations; re-ingest skips; errors; killed mid-ingest (-9) it leaves whole documents only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RagStore } from '../../src/platform/rag/store.js';
import { randomText, rng } from '../platform/rag-helpers.js';
import { runEach } from './run-each.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');
const BUILT = repoPath('dist/src/cli/rag.js');
const EMB = repoPath('models/floe-brown');
const EMBED = repoPath('models/floe-embed');
const T = 180_000;

interface Run { code: number | null; stdout: string; stderr: string }
function floe(args: string[], opts: { killWhen?: (stderr: string) => boolean; env?: Record<string, string> } = {}): Promise<Run> {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run \`npm run build\` first (npm test does)`);
  const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  let stdout = '', stderr = '';
  p.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  p.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const timer = opts.killWhen ? setInterval(() => { if (p.exitCode === null && opts.killWhen!(stderr)) p.kill('SIGKILL'); }, 5) : null;
  return new Promise((ok) => p.once('exit', (code) => { if (timer) clearInterval(timer); ok({ code, stdout, stderr }); }));
}
const json = (r: Run) => {
  assert.equal(r.code, 0, r.stderr + r.stdout);
  return JSON.parse(r.stdout) as Record<string, any>;
};
/** Every key of a --json object (nested too) is snake_case, as `floe generate --json` and the HTTP API name them. */
function snakeCase(v: unknown, at: string): void {
  if (Array.isArray(v)) v.forEach((x, i) => snakeCase(x, `${at}[${i}]`));
  else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      assert.match(k, /^[a-z][a-z0-9]*(_[a-z0-9]+)*$/, `${at}.${k} is not snake_case`);
      snakeCase(x, `${at}.${k}`);
    }
  }
}

test('floe rag: ingest → query → ask with citations; re-ingest skips unchanged files; clear errors', { timeout: T }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-rag-cli-'));
  const db = join(dir, 'db');
  const r = rng((Date.now() ^ 0x77) >>> 0);
  const a = join(dir, 'a.txt'), b = join(dir, 'b.md'), c = join(dir, 'c.html');
  writeFileSync(a, `${randomText(r, 4)}\n\nThe zyxoquartz crystal glows green in the dark mine.\n\n${randomText(r, 4)}`);
  writeFileSync(b, `# Boats\n\n${randomText(r, 3)}\n\nThe boat was small and the river was cold.\n`);
  writeFileSync(c, `<p>${randomText(r, 3).replaceAll('\n', ' ')}</p><p>Cats &amp; dogs sleep by the fire.</p>`);
  // no --embedding-model: ingest uses the built-in models/floe-embed, and query / ask the collection's recorded one
  const common = ['--db', db, '--collection', 'docs', '--threads', '1'];
  const first = await floe(['rag', 'ingest', ...common, '--chunk-tokens', '64', '--json', a, b, c]);
  assert.match(first.stderr, /no --embedding-model given, using the built-in embedder .*models\/floe-embed/);
  const ing = json(first);
  assert.deepEqual([ing.added, ing.skipped, ing.dim, ing.embedder], [[a, b, c], [], 256, EMBED]);
  assert.ok(ing.chunks >= 3);

  const q = json(await floe(['rag', 'query', ...common, '--mode', 'bm25', '--k', '3', '--json', 'zyxoquartz']));
  assert.equal(q.passages[0].source, a);
  assert.match(q.passages[0].text, /zyxoquartz/);
  assert.equal(readFileSync(a, 'utf8').slice(q.passages[0].start, q.passages[0].end), q.passages[0].text);
  const h = json(await floe(['rag', 'query', ...common, '--k', '4', '--json', '--where', JSON.stringify({ field: 'source', op: '=', value: b }), '--weights', '2,1', 'the small boat']));
  assert.ok(h.passages.length > 0 && h.passages.every((p: { source: string }) => p.source === b));
  snakeCase(h, 'rag query --json');
  // hybrid: each passage came from the dense list, the BM25 list or both, and says its rank there
  for (const p of h.passages) assert.ok(Number.isInteger(p.vector_rank) || Number.isInteger(p.bm25_rank), JSON.stringify(p));
  const sql = await floe(['rag', 'query', ...common, '--where', `source = '${b}'`, 'the small boat']);
  assert.notEqual(sql.code, 0);
  assert.match(sql.stderr, /--where expects a JSON filter .*raw SQL is not accepted/);

  // ask: the prompt holds what fits of k passages; citations name them (id, source, offsets), in rank order
  const ret = json(await floe(['rag', 'query', ...common, '--k', '6', '--json', 'what glows in the mine?']));
  const ans = json(await floe(['rag', 'ask', ...common, '--k', '6', '--max-tokens', '16', '--json', 'what glows in the mine?']));
  assert.equal(typeof ans.answer, 'string');
  snakeCase(ans, 'rag ask --json');
  assert.deepEqual(Object.keys(ans).sort(), ['answer', 'citations', 'collection', 'dropped', 'finish_reason', 'question', 'usage']);
  const u = ans.usage;
  assert.ok(u.completion_tokens >= 1 && u.completion_tokens <= 16 && u.prompt_tokens >= 1, JSON.stringify(u));
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
  assert.ok(ans.finish_reason === 'stop' || (ans.finish_reason === 'length' && u.completion_tokens === 16), JSON.stringify(ans));
  const cited = [...ans.citations.map((x: { id: string }) => x.id), ...ans.dropped.map((x: { id: string }) => x.id)];
  assert.deepEqual(cited, ret.passages.map((p: { id: string }) => p.id));
  ans.citations.forEach((x: { index: number; source: string; start: number; end: number }, i: number) => {
    assert.equal(x.index, i + 1);
    assert.equal(x.source, ret.passages[i].source);
    assert.deepEqual([x.start, x.end], [ret.passages[i].start, ret.passages[i].end]);
  });
  // a big answer budget: lower-ranked passages are dropped, and the plain output says so (reranked first)
  const tight = await floe(['rag', 'ask', ...common, '--k', '6', '--rerank', '--max-tokens', '900', 'what glows in the mine?']);
  assert.equal(tight.code, 0, tight.stderr);
  assert.match(tight.stdout, /Sources:/);
  assert.match(tight.stdout, /lower-ranked passages? left out: the context window is full/);

  const again = json(await floe(['rag', 'ingest', ...common, '--chunk-tokens', '64', '--json', a, b, c])); // the same chunking: skipped
  assert.deepEqual([again.added, again.replaced, again.skipped, again.chunks], [[], [], [a, b, c], 0]);

  // a --collection, --db, file or question that names nothing is the command line's mistake: exit 2, as other usage errors
  const miss = await floe(['rag', 'query', '--db', db, '--collection', 'nope', '--json', 'x']);
  assert.equal(miss.code, 2);
  assert.match(JSON.parse(miss.stdout).error.message, /collection 'nope' does not exist in .* \(it has 'docs'\)/);
  const pdf = join(dir, 'x.pdf');
  writeFileSync(pdf, '%PDF');
  const subdir = join(dir, 'sub.md');
  mkdirSync(subdir);
  const empty = join(dir, 'empty.txt');
  writeFileSync(empty, '  \n');
  // the other mistakes as run() calls of the built CLI in one process (./run-each.ts), not a process each (~0.5 s of
  // start-up apiece); `miss` above and `usage` below stay processes of bin/floe.js
  const mistakes: Array<[string[], RegExp]> = [
    [['ingest', '--db', db, '--collection', 'other', a, join(dir, 'missing.md')], /missing\.md: no such file/],
    // was "unsupported file type '(none)'": a directory is named as one
    [['ingest', '--db', db, '--collection', 'other', a, dir], /is a directory; give the files in it/],
    [['ingest', '--db', db, '--collection', 'other', a, subdir], /sub\.md is a directory; give the files in it/],
    [['ingest', '--db', db, '--collection', 'bad name', a], /invalid collection name "bad name"/],
    [['query', '--db', db, '--collection', 'docs', '  '], /the question is empty/],
    [['query', '--db', join(dir, 'no-db'), '--collection', 'docs', 'x'], /RAG database .*no-db does not exist/],
    [['list', '--db', join(dir, 'no-db')], /RAG database .*no-db does not exist/],
    [['delete', '--db', db, '--collection', 'nope'], /collection 'nope' does not exist/],
    [['delete', '--db', db, '--collection', 'docs', '--source', 'never.md'], /has no document with source "never.md"/],
  ];
  const ingestOther = ['rag', 'ingest', '--db', db, '--collection', 'other', '--embedding-model', EMB, '--json', a];
  const [bad, emp, ...rest] = runEach([[...ingestOther, pdf], [...ingestOther, empty], ...mistakes.map(([args]) => ['rag', ...args])]);
  assert.equal(bad!.status, 2);
  assert.match(JSON.parse(bad!.stdout).error.message, /x.pdf: unsupported file type '.pdf'/);
  assert.match(JSON.parse(emp!.stdout).error.message, /empty.txt: the document is empty/);
  mistakes.forEach(([args, re], i) => {
    assert.equal(rest[i]!.status, 2, `${args.join(' ')}: exit ${rest[i]!.status}: ${rest[i]!.stderr}`);
    assert.match(rest[i]!.stderr, re);
  });
  const list = json(await floe(['rag', 'list', '--db', db, '--json']));
  assert.deepEqual(list.collections.map((x: { name: string }) => x.name), ['docs'], 'a failed first ingest leaves no collection');
  snakeCase(list, 'rag list --json');
  assert.ok('vector_index' in list.collections[0], JSON.stringify(list));
  const usage = await floe(['rag', 'query', '--db', db, '--collection', 'docs', '--mode', 'fuzzy', 'x']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--mode expects vector, bm25, hybrid/);
  // delete says what it deleted (it printed nothing without --json)
  const before = json(await floe(['rag', 'list', '--db', db, '--json'])).collections[0].chunks as number;
  const [one, all, after] = runEach([['rag', 'delete', '--db', db, '--collection', 'docs', '--source', a], ['rag', 'delete', '--db', db, '--collection', 'docs'], ['rag', 'list', '--db', db, '--json']]);
  const m = /^deleted "(.*)" from collection 'docs' \((\d+) chunks?\)\n$/.exec(one!.stdout);
  assert.ok(m && m[1] === a && Number(m[2]) > 0 && Number(m[2]) < before, one!.stdout + one!.stderr);
  assert.equal(all!.stdout, "deleted collection 'docs'\n");
  assert.deepEqual(JSON.parse(after!.stdout).collections, []);
});

test('floe rag ingest killed with -9 mid-ingest leaves whole documents only; the re-run completes the rest', { timeout: T }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-rag-kill-'));
  const db = join(dir, 'db');
  const r = rng((Date.now() ^ 0x99) >>> 0);
  const files = Array.from({ length: 16 }, (_, i) => {
    const f = join(dir, `doc${String(i).padStart(2, '0')}.txt`);
    writeFileSync(f, randomText(r, 2 + Math.floor(r() * 2))); // 2-3 paragraphs, 2-70 chunks of 48 tokens (3-6 took ~2x as long to embed)
    return f;
  });
  const common = ['--db', db, '--collection', 'k', '--embedding-model', EMB, '--threads', '1', '--chunk-tokens', '48', '--commit-chunks', '1'];
  // the reference: each file ingested alone, uninterrupted
  const ref = json(await floe(['rag', 'ingest', '--db', join(dir, 'ref'), '--collection', 'k', ...common.slice(4), '--json', ...files]));
  assert.equal(ref.added.length, files.length);
  const refStore = await RagStore.open(join(dir, 'ref'));
  const refRows = await (await refStore.collection('k')).table.query().select(['id', 'source', 'chunk']).toArray();
  // killed while stalled after its 3rd commit (a test hook), so a loaded host cannot let it finish first
  const killed = await floe(['rag', 'ingest', ...common, '--json', ...files],
    { env: { FLOE_TEST_RAG_COMMIT_PAUSE: '3:120000' }, killWhen: (err) => /rag: test pause after commit 3/.test(err) });
  assert.equal(killed.code, null, `the ingest finished before the kill: ${killed.stdout}`);
  const store = await RagStore.open(db);
  const rows = await (await store.collection('k')).table.query().select(['id', 'source', 'chunk']).toArray();
  const bySource = (rs: typeof rows) => {
    const m = new Map<string, string[]>();
    for (const x of rs) m.set(x.source, [...(m.get(x.source) ?? []), x.id].sort());
    return m;
  };
  const got = bySource(rows), want = bySource(refRows);
  assert.ok(got.size >= 1 && got.size < files.length, `${got.size} of ${files.length} documents stored`);
  for (const [src, ids] of got) assert.deepEqual(ids, want.get(src), `${src}: whole document`);
  const rerun = json(await floe(['rag', 'ingest', ...common, '--json', ...files]));
  assert.equal(rerun.skipped.length, got.size);
  assert.equal(rerun.added.length, files.length - got.size);
  const final = await (await (await RagStore.open(db)).collection('k')).table.query().select(['id', 'source', 'chunk']).toArray();
  assert.deepEqual(bySource(final), want);
});

test('floe rag: another embedder than the collection records (same dimension) is refused, exit 2, unless --allow-embedder-mismatch', { timeout: T }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-rag-cli-emb-'));
  const a = join(dir, 'a.txt');
  writeFileSync(a, 'The zyxoquartz crystal glows green in the dark mine.\n\nThe boat was small and the river was cold.\n');
  const common = ['--db', join(dir, 'db'), '--collection', 'docs', '--threads', '1'];
  json(await floe(['rag', 'ingest', ...common, '--embedding-model', EMBED, '--json', a]));
  const guard = repoPath('models/floe-guard'); // a 256-dim model too, not the embedder
  const q = await floe(['rag', 'query', ...common, '--embedding-model', guard, '--mode', 'vector', '--json', 'what glows?']);
  assert.equal(q.code, 2, q.stderr + q.stdout);
  assert.match(q.stderr + q.stdout, /collection 'docs' was embedded by '.*models\/floe-embed', not by '.*models\/floe-guard'.*add --allow-embedder-mismatch/);
  const ing = await floe(['rag', 'ingest', ...common, '--embedding-model', guard, '--chunk-tokens', '32', '--json', a]);
  assert.equal(ing.code, 2, ing.stderr + ing.stdout);
  assert.match(ing.stderr + ing.stdout, /was embedded by/);
  const ok = json(await floe(['rag', 'query', ...common, '--embedding-model', guard, '--mode', 'vector', '--allow-embedder-mismatch', '--json', 'what glows?']));
  assert.equal(ok.passages.length, 1);
  // the recorded embedder through another path (a symlink) is the same embedder
  const link = join(dir, 'embed-link');
  symlinkSync(EMBED, link);
  assert.equal(json(await floe(['rag', 'query', ...common, '--embedding-model', link, '--mode', 'vector', '--json', 'what glows?'])).passages.length, 1);
  // another dimension is refused with or without --allow-embedder-mismatch, so the message does not suggest that flag
  // (before, it did, and the suggested rerun failed with the same message)
  const draft = repoPath('models/floe-brown-draft'); // hidden 128: 128-dim vectors
  for (const allow of [[], ['--allow-embedder-mismatch']]) {
    const d = await floe(['rag', 'query', ...common, '--embedding-model', draft, '--mode', 'vector', ...allow, 'what glows?']);
    assert.equal(d.code, 2, d.stderr + d.stdout);
    assert.match(d.stderr, /holds 256-dim vectors from embedder '.*models\/floe-embed', but embedder '.*models\/floe-brown-draft' makes 128-dim vectors/);
    assert.doesNotMatch(d.stderr, /allow-embedder-mismatch/);
  }
});
