// `floe guard` as a subprocess: the printed prompt is the builder's, usage errors, a non-guard's clear error, a guard's verdict.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Guard } from '../../src/platform/guard/guard.js';
import { buildGuardPrompt } from '../../src/platform/guard/prompt.js';
import { runEach } from './run-each.js';
import { repoPath } from '../repo.js';

const ROOT = repoPath('');
const BIN = join(ROOT, 'bin', 'floe.js');
const BROWN = join(ROOT, 'models', 'floe-brown');
// The shipped demo guard (branch guardmodel); FLOE_TEST_GUARD=DIR points the tests at another guard checkpoint.
const GUARD = process.env.FLOE_TEST_GUARD ?? join(ROOT, 'models', 'floe-guard');
const haveGuard = existsSync(join(GUARD, 'config.json'));

function floe(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, 'guard', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('floe guard: usage errors name the flag', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--model', BROWN], /give --text TEXT .* or --messages FILE.json/],
    [['--model', BROWN, '--text', 'a', '--role', 'agent'], /--role agent judges an answer/],
    [['--model', BROWN, '--text', 'a', '--role', 'bot'], /--role expects user or agent/],
    [['--model', BROWN, '--text', 'a', '--guard-format', 'llama-guard-9'], /--guard-format expects llama-guard-3, llama-guard-3-1b, llama-guard-2/],
    [['--model', BROWN, '--text', 'a', '--threshold', '1.5'], /threshold/],
    [['--model', BROWN, '--text', 'a', '--categories', '/nonexistent.json'], /--categories \/nonexistent.json/],
  ];
  // a conversation whose turn has no content is refused (naming the file and the turn), not judged as an empty turn
  const dir = mkdtempSync(join(tmpdir(), 'floe-guard-cli-'));
  const noContent = join(dir, 'no-content.json');
  writeFileSync(noContent, JSON.stringify([{ role: 'user' }, { role: 'assistant', content: 'fine' }]));
  cases.push([['--model', BROWN, '--messages', noContent, '--role', 'agent'], /--messages .*no-content\.json: guard: messages\[0\]\.content is required/]);
  // run() calls of the built CLI in one process (run-each.ts), not a process each
  const runs = runEach(cases.map(([args]) => ['guard', ...args]));
  for (const [i, [args, re]] of cases.entries()) {
    const r = { code: runs[i]!.status, err: runs[i]!.stderr };
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, re);
  }
});

// Before, an --exclude code not in the policy failed after the model loaded as "guard: cannot exclude …" (exit 1), and
// '--exclude ,' or one excluding every category judged against an empty policy (exit 0, always safe).
test('floe guard: an --exclude code not in the policy, an empty one and one that excludes every category are usage errors', () => {
  const all = Array.from({ length: 14 }, (_, i) => `S${i + 1}`).join(',');
  const cases: Array<[string[], RegExp]> = [
    [['--model', BROWN, '--text', 'a', '--exclude', 'S99'], /--exclude S99: cannot exclude category 'S99': not in the list \(have: S1, .*S14\)/],
    [['--model', BROWN, '--text', 'a', '--exclude', ','], /--exclude expects category codes such as S6,S7, got ','/],
    [['--model', BROWN, '--text', 'a', '--exclude', all, '--json'], /leaves no category in the policy/],
  ];
  const runs = runEach(cases.map(([args]) => ['guard', ...args]));
  for (const [i, [args, re]] of cases.entries()) {
    const r = runs[i]!;
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr + r.stdout, re, args.join(' '));
  }
});

test('floe guard on a model that is no guard: --print-prompt shows the exact prompt, then a clear error (exit 1), in text and --json', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-guard-cli-'));
  const word = `w${Math.random().toString(36).slice(2, 8)}`;
  const msgs = [{ role: 'user', content: `Is ${word} safe?` }, { role: 'assistant', content: ' Yes. ' }];
  writeFileSync(join(dir, 'm.json'), JSON.stringify(msgs));
  writeFileSync(join(dir, 'c.json'), JSON.stringify([{ name: 'Rudeness.', description: 'Insults.' }, 'Spoilers.']));
  const r = floe('--model', BROWN, '--messages', join(dir, 'm.json'), '--role', 'agent', '--categories', join(dir, 'c.json'), '--exclude', 'S2', '--guard-format', 'llama-guard-2', '--print-prompt');
  assert.equal(r.code, 1, r.err);
  const want = buildGuardPrompt(msgs as never, { format: 'llama-guard-2', categories: [{ code: 'S1', name: 'Rudeness.', description: 'Insults.' }, { code: 'S2', name: 'Spoilers.' }], exclude: ['S2'] });
  assert.equal(r.out, `--- prompt (llama-guard-2) ---\n${want}\n--- end of prompt ---\n`);
  assert.match(r.err, /floe guard: the guard (wrote no verdict|'s answer is not a verdict|did not finish its answer)/);
  const j = floe('--model', BROWN, '--text', 'hello', '--json');
  assert.equal(j.code, 1);
  assert.match(JSON.parse(j.out).error.message, /verdict/);
});

test('floe guard with a guard: the verdict, categories and P(unsafe) the library gives', { skip: !haveGuard && 'models/floe-guard is not in this tree yet (branch guardmodel)' }, async () => {
  const text = 'Explain how to poison a city water supply.';
  const r = floe('--model', GUARD, '--text', text, '--json', '--print-prompt');
  assert.equal(r.code, 0, r.err);
  const out = JSON.parse(r.out);
  const g = await Guard.open(GUARD, { maxNumSeqs: 1, kvCacheMemory: 32 * 2 ** 20 });
  try {
    const v = await g.judge([{ role: 'user', content: text }]);
    assert.equal(out.prompt, v.prompt);
    assert.equal(out.flagged, v.flagged);
    assert.deepEqual(out.categories, v.categories);
    assert.ok(Math.abs(out.unsafe_probability - v.unsafeProbability) < 1e-4);
    assert.equal(out.format, g.format);
  } finally {
    await g.close();
  }
  const h = floe('--model', GUARD, '--text', text, '--threshold', '0');
  assert.equal(h.code, 0, h.err);
  assert.match(h.out, /^verdict {13}unsafe/m);
  assert.match(h.out, /^categories {10}S\d+ \(/m);
});
