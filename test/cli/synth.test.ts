// `floe synth` as a subprocess on floe-brown: SIGKILL mid-run then rerun gives the uninterrupted run's file (no torn line);
// --endpoint against `floe serve` gives what the in-process engine gives; `floe finetune` trains on the output.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { loadBrown } from '../../src/train/corpus.js';
import { runEach } from './run-each.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const ROOT = repoPath('');
const BIN = join(ROOT, 'bin', 'floe.js');
const BROWN = join(ROOT, 'models', 'floe-brown');
const dir = mkdtempSync(join(tmpdir(), 'synth-cli-'));

function floe(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const lines = (f: string) => readFileSync(f, 'utf8').split('\n').filter(Boolean);
/** unit id → 'kept' | reason, from the progress log */
const outcomes = (f: string) => Object.fromEntries(lines(f + '.synth-progress').slice(1).flatMap((l) => Object.entries(JSON.parse(l).units as Record<string, string>)).sort());
const seed = String(Math.floor(Math.random() * 1000)); // fresh each run: the comparisons hold for any seed
const common = ['--method', 'self-instruct', '--num', '16', '--seed', seed, '--max-tokens', '80', '--threads', '1', '--concurrency', '4', '--json'];

test('killed with SIGKILL mid-run and rerun: the same lines as an uninterrupted run, whole lines only', async () => {
  const whole = join(dir, 'whole.jsonl');
  const a = floe('synth', ...common, '--out', whole);
  assert.equal(a.code, 0, a.err);
  const sa = JSON.parse(a.out);
  assert.equal(sa.units, 16);
  assert.equal(sa.resumed_units, 0);

  const cut = join(dir, 'cut.jsonl');
  const child = spawn(process.execPath, [BIN, 'synth', ...common, '--out', cut], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_c, sig) => r(sig)));
  // wait for two committed batches, then kill without warning
  for (const t0 = Date.now(); ;) {
    const p = cut + '.synth-progress';
    if (existsSync(p) && lines(p).length >= 3) break;
    if (Date.now() - t0 > 90_000 || child.exitCode !== null) assert.fail('the run ended or stalled before two batches were committed');
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  assert.equal(await exited, 'SIGKILL');
  const progress = lines(cut + '.synth-progress').slice(1).map((l) => { try { return JSON.parse(l); } catch { return null; } }).filter(Boolean);
  const doneBefore = progress.reduce((n, b) => n + Object.keys(b.units).length, 0);
  assert.ok(doneBefore < 16, `${doneBefore} units were done before the kill`);
  // a write cut off mid-line, as a crash inside write() leaves it
  appendFileSync(cut, '{"messages":[{"role":"user","content":"torn');

  const b = floe('synth', ...common, '--out', cut);
  assert.equal(b.code, 0, b.err);
  const sb = JSON.parse(b.out);
  assert.ok(sb.resumed_units >= doneBefore && sb.resumed_units < 16, JSON.stringify(sb));
  assert.equal(sb.kept, sa.kept);
  assert.deepEqual(sb.rejected, sa.rejected);
  assert.ok(sa.kept >= 1, JSON.stringify(sa));
  assert.ok(readFileSync(cut, 'utf8').endsWith('\n'));
  for (const l of lines(cut)) JSON.parse(l);
  assert.deepEqual(lines(cut), lines(whole));
  assert.deepEqual(outcomes(cut), outcomes(whole)); // every unit, kept or rejected, ended the same way

  // a rerun of a finished run does nothing
  const c = floe('synth', ...common, '--out', cut);
  assert.equal(c.code, 0, c.err);
  assert.equal(JSON.parse(c.out).resumed_units, 16);
  assert.deepEqual(lines(cut), lines(whole));
  // another method or seed does not silently mix into the file
  const d = floe('synth', ...common.map((x) => (x === seed ? String(Number(seed) + 1) : x)), '--out', cut);
  assert.equal(d.code, 1);
  assert.match(d.out, /made by another synth run/);

  // floe finetune reads the output as it is
  const ft = floe('finetune', '--data', whole, '--out', join(dir, 'ft'), '--max-steps', '2', '--threads', '1', '--json');
  assert.equal(ft.code, 0, ft.err);
  assert.equal(JSON.parse(ft.out).steps, 2);
});

test('--endpoint against floe serve: the same samples as the in-process engine (self-instruct, and magpie with --model for the template)', async () => {
  const server = spawn(process.execPath, [BIN, 'serve', '--model', BROWN, '--port', '0', '--threads', '1', '--no-ui', '--no-batch', '--api-key', 'k1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let out = '';
    server.stdout.on('data', (b) => { out += b; });
    let url: string | undefined;
    for (const t0 = Date.now(); !(url = /listening on (http:\/\/\S+?)\s/.exec(out)?.[1]);) {
      if (Date.now() - t0 > 60_000 || server.exitCode !== null) assert.fail(`no listening line: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const t0 = Date.now(); (await fetch(`${url}/health`).catch(() => null))?.status !== 200;) {
      if (Date.now() - t0 > 60_000) assert.fail('the server never became ready');
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const [method, extra] of [['self-instruct', []], ['magpie', ['--max-tokens', '300']]] as const) {
      const args = ['synth', '--method', method, '--num', '5', '--seed', seed, '--max-tokens', '64', ...extra, '--json'];
      const local = join(dir, `local-${method}.jsonl`);
      const remote = join(dir, `remote-${method}.jsonl`);
      const l = floe(...args, '--model', BROWN, '--threads', '1', '--out', local);
      assert.equal(l.code, 0, l.err);
      const r = floe(...args, '--endpoint', url!, '--api-key', 'k1', '--model', BROWN, '--out', remote);
      assert.equal(r.code, 0, r.err);
      const strip = (f: string) => lines(f).map((x) => { const j = JSON.parse(x); return [j.messages, j.provenance.id, j.provenance.model]; });
      assert.deepEqual(JSON.parse(r.out).rejected, JSON.parse(l.out).rejected, method);
      assert.deepEqual(strip(remote), strip(local), method);
    }
    const bad = floe('synth', '--method', 'magpie', '--num', '1', '--endpoint', url!, '--api-key', 'wrong', '--model', BROWN, '--out', join(dir, 'x.jsonl'), '--json');
    assert.equal(bad.code, 1);
    assert.match(bad.out, /HTTP 401/);
  } finally {
    server.kill('SIGTERM');
  }
});

test('usage errors name the flag', () => {
  // run() calls of the built CLI in one process (run-each.ts), not a process each
  const errs = runEach([
    ['synth', '--out', join(dir, 'u.jsonl')],
    ['synth', '--method', 'magpie'],
    ['synth', '--method', 'from-documents', '--out', join(dir, 'u.jsonl')],
    ['synth', '--method', 'magpie', '--min-score', '3', '--out', join(dir, 'u.jsonl')],
    ['synth', '--method', 'magpie', '--min-support', '0.3', '--out', join(dir, 'u.jsonl')],
    ['synth', '--method', 'from-documents', '--docs', BIN, '--chunk-tokens', '32', '--chunk-overlap', '32', '--out', join(dir, 'u.jsonl')],
    ['synth', '--method', 'from-documents', '--docs', BIN, '--min-support', '2', '--out', join(dir, 'u.jsonl')],
  ]).map((r) => r.stderr);
  assert.match(errs[0]!, /--method expects one of self-instruct, evol-instruct, magpie, from-documents/);
  assert.match(errs[1]!, /--out FILE.jsonl is required/);
  assert.match(errs[2]!, /from-documents needs --docs/);
  assert.match(errs[3]!, /--min-score needs --judge/);
  assert.match(errs[4]!, /are for --method from-documents, not magpie/);
  assert.match(errs[5]!, /--chunk-overlap \(32\) must be below --chunk-tokens \(32\)/);
  assert.match(errs[6]!, /--min-support expects/);
});

test('from-documents: RAG-chunked passages with overlap, grounding scores (support and log-likelihood gain) per line', () => {
  const doc = join(dir, 'doc.txt');
  writeFileSync(doc, loadBrown()[7]!.paragraphs.slice(0, 8).map((p) => p.join(' ')).join('\n\n'));
  const out = join(dir, 'docs.jsonl');
  const r = floe('synth', '--method', 'from-documents', '--docs', doc, '--num', '4', '--chunk-tokens', '64', '--chunk-overlap', '16', '--min-support', 'off',
    '--min-ll-gain=-50', '--max-tokens', '200', '--temperature', '0.5', '--seed', seed, '--threads', '1', '--json', '--out', out);
  assert.equal(r.code, 0, r.err);
  const s = JSON.parse(r.out);
  assert.equal(s.units, 4);
  assert.equal(s.kept + Object.values(s.rejected as Record<string, number>).reduce((a, b) => a + b, 0), 4);
  assert.ok(s.kept >= 1, JSON.stringify(s)); // support off and a gain floor of -50 nats: only the length / language filters drop
  const text = readFileSync(doc, 'utf8');
  for (const l of lines(out).map((x) => JSON.parse(x))) {
    const g = l.provenance.scores.grounding;
    assert.ok(g.support >= 0 && g.support <= 1 && typeof g.ll_gain === 'number' && Math.abs(g.ll_gain - (g.ll_with - g.ll_without)) < 2e-4, JSON.stringify(g));
    assert.equal(l.provenance.params.chunk_overlap, 16);
    assert.ok(l.provenance.source.end <= text.length);
  }
});
