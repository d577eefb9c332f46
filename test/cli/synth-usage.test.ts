// floe synth's command line as a user mistypes it (run() calls of the built CLI): each mistake exits 2 with a message that
// names the flag and what it expects, before any model is loaded or any output is written. Before, a --prompts folder
// that does not exist, flags of another method (--rounds with magpie, --seeds with from-documents) and --api-key without
// --endpoint were silently ignored, --min-chars above --max-chars ran and rejected everything, and --out naming a
// folder, --seeds / --docs naming a folder, magpie over --endpoint without --model and an --endpoint that is no URL
// failed with exit 1 (raw EISDIR / EEXIST, "fetch failed") after the model was loaded.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runEach, type RunResult } from './run-each.js';

const dir = mkdtempSync(join(tmpdir(), 'synth-usage-'));
const doc = join(dir, 'doc.txt');
writeFileSync(doc, 'The river runs north through the valley and freezes every winter.\n');
const aFile = join(dir, 'a-file.txt');
writeFileSync(aFile, 'not a folder\n');
const folder = join(dir, 'folder');
mkdirSync(folder);


const cases: [string, string[], RegExp][] = [
  ['--out names a folder', ['--method', 'magpie', '--num', '2', '--out', folder], /--out expects a FILE\.jsonl path, got the directory .*folder/],
  ['--out under a file', ['--method', 'magpie', '--num', '2', '--out', join(aFile, 'x.jsonl')], /--out .*x\.jsonl: .*a-file\.txt is a file, not a folder/],
  ['--seeds names a folder', ['--method', 'self-instruct', '--num', '2', '--out', join(dir, 'o1.jsonl'), '--seeds', folder], /--seeds expects a file, got the directory/],
  ['--docs names a folder', ['--method', 'from-documents', '--out', join(dir, 'o2.jsonl'), '--docs', folder], /--docs expects a file, got the directory/],
  ['--prompts folder missing', ['--method', 'magpie', '--num', '2', '--out', join(dir, 'o3.jsonl'), '--prompts', join(dir, 'nope')], /--prompts expects a directory of <method>\/<name>\.txt files, got '.*nope' \(no such directory\)/],
  ['--prompts names a file', ['--method', 'magpie', '--num', '2', '--out', join(dir, 'o4.jsonl'), '--prompts', aFile], /--prompts expects a directory .* \(a file\)/],
  ['--rounds with magpie', ['--method', 'magpie', '--num', '2', '--out', join(dir, 'o5.jsonl'), '--rounds', '2'], /--rounds is for --method evol-instruct, not magpie/],
  ['--seeds with from-documents', ['--method', 'from-documents', '--docs', doc, '--out', join(dir, 'o6.jsonl'), '--seeds', doc], /--seeds is for --method self-instruct or evol-instruct, not from-documents/],
  ['--chunk-tokens with self-instruct', ['--method', 'self-instruct', '--num', '2', '--out', join(dir, 'o7.jsonl'), '--chunk-tokens', '64'], /--chunk-tokens is for --method from-documents, not self-instruct/],
  ['--questions-per-passage with evol-instruct', ['--method', 'evol-instruct', '--num', '2', '--out', join(dir, 'o8.jsonl'), '--questions-per-passage', '2'], /--questions-per-passage is for --method from-documents/],
  ['--api-key without --endpoint', ['--method', 'magpie', '--num', '2', '--out', join(dir, 'o9.jsonl'), '--api-key', 'k'], /--api-key applies to --endpoint URL, which is not given/],
  ['--endpoint-model without --endpoint', ['--method', 'magpie', '--num', '2', '--out', join(dir, 'o10.jsonl'), '--endpoint-model', 'm'], /--endpoint-model applies to --endpoint URL/],
  ['--max-retries without --endpoint', ['--method', 'magpie', '--num', '2', '--out', join(dir, 'o16.jsonl'), '--max-retries', '1'], /--max-retries applies to --endpoint URL, which is not given/],
  ['--max-retries above 20', ['--method', 'self-instruct', '--num', '2', '--out', join(dir, 'o17.jsonl'), '--endpoint', 'http://127.0.0.1:9', '--max-retries', '21'], /--max-retries/],
  ['--max-retries not an integer', ['--method', 'self-instruct', '--num', '2', '--out', join(dir, 'o18.jsonl'), '--endpoint', 'http://127.0.0.1:9', '--max-retries', '1.5'], /--max-retries/],
  ['--endpoint not a URL', ['--method', 'self-instruct', '--num', '2', '--out', join(dir, 'o11.jsonl'), '--endpoint', 'localhost:8000'], /--endpoint expects an http:\/\/ or https:\/\/ URL .*got 'localhost:8000'/],
  ['magpie over --endpoint without --model', ['--method', 'magpie', '--num', '2', '--out', join(dir, 'o12.jsonl'), '--endpoint', 'http://127.0.0.1:9'], /--method magpie with --endpoint needs --model DIR/],
  ['--docs with one file twice', ['--method', 'from-documents', '--docs', doc, doc, '--out', join(dir, 'o14.jsonl')], /--docs: .*doc\.txt is given twice/],
  ['--threads with --endpoint', ['--method', 'self-instruct', '--num', '2', '--out', join(dir, 'o15.jsonl'), '--endpoint', 'http://127.0.0.1:9', '--threads', '2', '--max-num-seqs', '4'], /--threads, --max-num-seqs configure floe's in-process engine, which --endpoint does not use/],
  ['--min-chars above --max-chars', ['--method', 'magpie', '--num', '2', '--out', join(dir, 'o13.jsonl'), '--min-chars', '100', '--max-chars', '50'], /--min-chars \(100\) must not exceed --max-chars \(50\)/],
];

// every case's floe synth, run once on first use as run() calls of the built CLI in one process (run-each.ts), not a
// bin/floe.js process each (~0.3 s apiece)
let runs: RunResult[] | undefined;
for (const [i, [name]] of cases.entries()) {
  test(`usage error exits 2: ${name}`, () => {
    runs ??= runEach(cases.map(([, args]) => ['synth', ...args]));
    const r = { code: runs[i]!.status, err: runs[i]!.stderr };
    const message = cases[i]![2];
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, message);
    assert.doesNotMatch(r.err, /using the built-in model/, 'refused before any model is opened');
  });
}

test('nothing was written by the refused commands', () => {
  assert.deepEqual(readdirSync(dir).sort(), ['a-file.txt', 'doc.txt', 'folder']);
  assert.ok(!existsSync(`${folder}.synth-progress`));
});
