// Flag validation as a user meets it: bad values are usage errors (exit 2) that name the flag, before any work.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { num, UsageError } from '../../src/cli/args.js';
import { MAX_THREADS, selectBackend } from '../../src/backend/select.js';
import { runEach } from './run-each.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');
const FIX = repoPath('test/fixtures/models/');
const M = FIX + 'gqa_f32';

function floe(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** Each argv exits 2 naming its mistake, without a stack: run() calls of the built CLI in one process (run-each.ts). */
function refused(cases: [string[], RegExp][]): void {
  const runs = runEach(cases.map(([args]) => args));
  for (const [i, [args, re]] of cases.entries()) {
    const r = { code: runs[i]!.status, err: runs[i]!.stderr };
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}: ${r.err}`);
    assert.match(r.err, re, args.join(' '));
    assert.doesNotMatch(r.err, /^\s+at /m, 'no stack trace');
  }
}

test('integer flags take decimal integers only; number flags keep decimal and exponent forms', () => {
  for (const v of ['1e1', '0x10', '0b11', '0o7', '1.0', '', ' ']) {
    assert.throws(() => num(v, 'threads', 0, true), (e: Error) => e instanceof UsageError && /--threads expects an integer/.test(e.message), v);
  }
  assert.throws(() => num('0x10', 'lr', 0), UsageError);
  assert.equal(num('12', 'threads', 0, true), 12);
  assert.equal(num('+3', 'threads', 0, true), 3);
  assert.equal(num('1e-4', 'lr', 0), 1e-4);
  assert.equal(num('2E-3', 'lr', 0), 2e-3);
  assert.equal(num('.5', 'top-p', 0), 0.5);
  assert.equal(num('3.', 'temperature', 0), 3);
  assert.equal(num('-0.5', 'min-ll-gain', 0, false, { min: -100 }), -0.5);
});

test('empty lists, empty list entries, a zero token budget and non-decimal integers are usage errors naming the flag', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-flags-'));
  const data = join(dir, 'd.jsonl');
  writeFileSync(data, '{"text": "hello"}\n');
  refused([
    [['finetune', '--model', M, '--data', data, '--out', join(dir, 'a'), '--lora-targets', ''], /--lora-targets expects a subset of q,k,v,o,gate,up,down/],
    [['plan', '--preset', 'llama-3.2-1b', '--lora-rank', '8', '--lora-targets', ''], /--lora-targets/],
    [['rag', 'query', '--db', join(dir, 'db'), '--collection', 'c', '--weights', ',', 'q'], /--weights expects DENSE,BM25/],
    [['rag', 'query', '--db', join(dir, 'db'), '--collection', 'c', '--weights', '1,', 'q'], /--weights expects DENSE,BM25/],
    [['rag', 'query', '--db', join(dir, 'db'), '--collection', 'c', '--weights', '0x1,1', 'q'], /--weights expects DENSE,BM25/],
    [['generate', '--model', M, '--prompt-ids', '1', '--max-tokens', '0'], /--max-tokens expects an integer >= 1, got '0'/],
    [['serve', '--model', M, '--swap-space', 'lots'], /--swap-space: expected a size such as 2GiB/],
    [['serve', '--model', M, '--swap-space=-1GiB'], /--swap-space: expected a size/],
    [['generate', '--model', M, '--prompt-ids', '1', '--max-tokens', '1e1'], /--max-tokens expects an integer/],
    [['generate', '--model', M, '--prompt-ids', '1', '--threads', '0x10'], /--threads expects an integer/],
    [['generate', '--model', M, '--prompt-ids', '0x1'], /--prompt-ids: entry 0 '0x1'/],
    [['generate', '--model', M, '--prompt-ids', '1', '--num-speculative-tokens', '1e1'], /--num-speculative-tokens expects an integer/],
    [['finetune', '--model', M, '--data', data, '--out', join(dir, 'b'), '--max-steps', '1e1'], /--max-steps expects an integer/],
  ]);
});

// Before, a --guard-model path that does not exist printed 'listening' and then 'cannot load <the chat model>: ENOENT
// … stat <guard path>' (exit 1), a --rag-db that is a file served until the first RAG request failed, and
// --guard-window / --guard-kv-cache-memory without a guard were silently ignored.
test('serve: guard and RAG flags that cannot work are usage errors before listening', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-serve-flags-'));
  const file = join(dir, 'plain.txt');
  writeFileSync(file, 'not a directory\n');
  refused([
    [['serve', '--model', M, '--guard-model', join(dir, 'no-guard')], /--guard-model .*no-guard: no such file or directory/],
    [['serve', '--model', M, '--guard-window', '32'], /--guard-window only matters with --guard-model/],
    [['serve', '--model', M, '--guard-kv-cache-memory', '64MiB'], /--guard-kv-cache-memory only matters with --guard-model/],
    [['serve', '--model', M, '--rag-db', file], /--rag-db .*plain\.txt is not a directory/],
  ]);
});

test('user errors exit 2 and name the flag (and the file) they come from', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-usage-'));
  const data = join(dir, 'd.jsonl');
  writeFileSync(data, '{"text": "hello"}\n');
  const doc = join(dir, 'doc.txt');
  writeFileSync(doc, 'One short paragraph about nothing much.\n');
  const line = (id: string) => JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/completions', body: { prompt: 'x' } });
  const dup = join(dir, 'dup.jsonl');
  writeFileSync(dup, `${line('a')}\n${line('a')}\n`);
  const bad = join(dir, 'bad.jsonl');
  writeFileSync(bad, `${line('a')}\n{not json\n`);
  refused([
    [['finetune', '--model', M, '--data', data, '--out', join(dir, 'a'), '--lora-targets', 'q,x'], /--lora-targets: LoRA target 'x' is not one of/],
    [['rag', 'ingest', '--db', join(dir, 'db'), '--collection', 'c', '--chunk-tokens', '8', '--overlap', '8', doc], /--overlap 8 must be below --chunk-tokens 8/],
    [['rag', 'ingest', '--db', join(dir, 'db'), '--collection', 'c', '--overlap', '300', doc], /--overlap 300 must be below --chunk-tokens/],
    [['tokenizer'], /floe tokenizer train/],
    [['tokenizer', 'frob'], /unknown tokenizer command 'frob'/],
    [['tokenizer', 'train', '--data', data, '--out', join(dir, 't'), '--vocab-size', '10'], /--vocab-size expects an integer >= \d+/],
    [['synth', '--method', 'self-instruct', '--out', join(dir, 's.jsonl'), '--seeds', join(dir, 'nonexistent.jsonl')], /--seeds: no file .*nonexistent\.jsonl/],
    [['batch', '--input', join(dir, 'missing.jsonl'), '--output', join(dir, 'o.jsonl')], /--input: no file .*missing\.jsonl/],
    [['batch', '--input', dup, '--output', join(dir, 'o.jsonl')], /--input .*dup\.jsonl: line 2: custom_id 'a' is already used on line 1/],
    [['batch', '--input', bad, '--output', join(dir, 'o.jsonl')], /--input .*bad\.jsonl: line 2: not valid JSON/],
  ]);
  // the guard's KV budget is checked before the guard model loads
  const g = floe('guard', '--text', 'hi', '--kv-cache-memory', 'abc');
  assert.equal(g.code, 2, g.err);
  assert.match(g.err, /--kv-cache-memory: expected a size/);
  assert.doesNotMatch(g.err, /using the built-in guard/);
});

test('rag ingest: an --overlap that leaves no room beside the embedder\'s special tokens names the flags', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-overlap-'));
  const doc = join(dir, 'doc.txt');
  writeFileSync(doc, 'One short paragraph about nothing much.\n');
  const r = floe('rag', 'ingest', '--db', join(dir, 'db'), '--collection', 'c', '--chunk-tokens', '8', '--overlap', '7', doc);
  if (r.code === 0) return; // an embedder that adds no special token fits overlap 7 in 8
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /--overlap 7 must be below \d: --chunk-tokens 8 less the embedder's \d special token/);
});

test('generate: an explicit --max-tokens past the context names the flag and the context length', () => {
  const context = JSON.parse(readFileSync(join(M, 'config.json'), 'utf8')).max_position_embeddings as number;
  const r = floe('generate', '--model', M, '--prompt-ids', '1,2', '--max-tokens', String(context + 100));
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, new RegExp(`--max-tokens ${context + 100}: .*exceeds the model's context of ${context}; give --max-tokens ${context - 2} or less`));
});

// Before, --lora-rank 100000 on floe-brown allocated factors and AdamW state for hours (~45 GB asked on a 5.5 M model),
// and --max-seq-len past the context said "max seq len N exceeds the model's context" (exit 1) without the flag.
test('finetune: a --lora-rank above the hidden size and a --max-seq-len past the context are usage errors, before training', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-rank-'));
  const data = join(dir, 'd.jsonl');
  writeFileSync(data, '{"text": "hello"}\n');
  const brown = repoPath('models/floe-brown'); // hidden 256, context 1024
  refused([
    // (257, not 100000: without the check this one trains a step and fails fast, instead of filling the memory)
    [['finetune', '--model', brown, '--data', data, '--out', join(dir, 'b'), '--lora-rank', '257', '--max-steps', '1'],
      /--lora-rank 257 is above the hidden size of .*floe-brown \(256\).*give at most 256/],
    [['finetune', '--model', brown, '--data', data, '--out', join(dir, 'c'), '--max-seq-len', '1025'],
      /--max-seq-len 1025 exceeds the context of .*floe-brown \(1024 tokens\); give at most 1024/],
  ]);
  for (const out of ['b', 'c']) assert.ok(!existsSync(join(dir, out, 'metrics.jsonl')), `${out}: no run started`);
});

// Before, --stop '' failed in the library as "StopStringMatcher: stop string 0 is empty or not a string" and a top-K
// past the vocabulary as "logprobs must be …", both exit 1.
test('generate: an empty --stop and a --logprobs / --prompt-logprobs above the vocabulary are usage errors naming the flag', () => {
  const vocab = JSON.parse(readFileSync(join(M, 'config.json'), 'utf8')).vocab_size as number;
  refused([
    [['generate', '--model', M, '--prompt-ids', '1', '--stop', 'a', '--stop', ''], /--stop expects a non-empty stop string, got '' \(--stop number 2\)/],
    [['generate', '--model', M, '--prompt-ids', '1', '--max-tokens', '1', '--logprobs', String(vocab + 1)],
      new RegExp(`--logprobs expects an integer from 0 to the vocabulary size ${vocab}, got '${vocab + 1}'`)],
    [['generate', '--model', M, '--prompt-ids', '1', '--max-tokens', '1', '--prompt-logprobs', String(vocab + 1)], /--prompt-logprobs expects an integer from 0 to the vocabulary size/],
  ]);
});

// Before, --threads 100000 aborted the process while the pool started its threads ("terminate called after throwing an
// instance of 'std::system_error' … Resource temporarily unavailable", exit 134).
test('--threads and --jobs-threads above MAX_THREADS are usage errors; the library refuses such a pool too', () => {
  const over = String(MAX_THREADS + 1);
  refused([
    [['generate', '--model', M, '--prompt-ids', '1', '--max-tokens', '1', '--threads', '100000'], /--threads expects an integer >= 1 and <= 1024, got '100000'/],
    [['finetune', '--model', M, '--data', 'd.jsonl', '--out', 'o', '--threads', over], /--threads expects an integer >= 1 and <= 1024/],
    [['serve', '--model', M, '--threads', over], /--threads expects an integer >= 1 and <= 1024/],
    [['serve', '--model', M, '--jobs-threads', over], /--jobs-threads expects an integer >= 1 and <= 1024/],
    [['embed', '--model', M, '--text', 'a', '--threads', over], /--threads expects/],
  ]);
  assert.throws(() => selectBackend('native', MAX_THREADS + 1), /threads must be an integer from 1 to 1024, got 1025/);
});

// Before, `floe batch --input X --output X` ran the batch and wrote the results over the requests (exit 0).
test('batch: an --output that is the --input file (by any name) is a usage error; the input is kept', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-batch-same-'));
  const input = join(dir, 'requests.jsonl');
  const body = JSON.stringify({ custom_id: 'a', method: 'POST', url: '/v1/completions', body: { prompt: 'x', max_tokens: 1 } }) + '\n';
  writeFileSync(input, body);
  const link = join(dir, 'link.jsonl');
  symlinkSync(input, link);
  refused([
    [['batch', '--model', M, '--input', input, '--output', input], /--output .*requests\.jsonl is the --input file .*: the results would replace the requests/],
    [['batch', '--model', M, '--input', input, '--output', join(dir, '.', 'link.jsonl')], /is the --input file/],
  ]);
  assert.equal(readFileSync(input, 'utf8'), body, 'the requests are kept');
  assert.ok(!existsSync(`${input}.floe-batch`), 'no state made');
});

// Before, these printed "listening on …" and then "cannot load <the chat model>: … draft model …" (exit 1), and a
// missing --embedding-model was reported as "--model /nonexistent: no such file or directory".
test('serve: a --speculative draft or module that cannot load is a usage error before listening; --embedding-model is named', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-serve-spec-'));
  const text = join(dir, 'notes.txt');
  writeFileSync(text, 'not a model\n');
  refused([
    [['serve', '--model', M, '--port', '0', '--no-batch', '--speculative', 'module:' + join(dir, 'none.mjs')], /--speculative module:.*none\.mjs: no such file .*none\.mjs/],
    [['serve', '--model', M, '--port', '0', '--no-batch', '--speculative', text], /--speculative .*notes\.txt: a file that is not GGUF/],
    [['serve', '--model', M, '--port', '0', '--no-batch', '--speculative', 'ngrams'], /--speculative ngrams: no such file or directory; expected ngram, suffix, module:PATH or a draft model/],
  ]);
  const [r] = runEach([['serve', '--model', M, '--port', '0', '--no-batch', '--embedding-model', join(dir, 'no-embedder')]]);
  assert.notEqual(r!.status, 0);
  assert.match(r!.stderr, /--embedding-model .*no-embedder: no such file or directory/);
  assert.doesNotMatch(r!.stdout + r!.stderr, /listening/);
});

/** distill of floe-brown into floe-brown-draft on one line of text, one step; the data file is written in `dir`. */
function distillArgs(dir: string): string[] {
  const data = join(dir, 'd.jsonl');
  writeFileSync(data, '{"text": "The old man and the sea."}\n');
  return ['--teacher', repoPath('models/floe-brown'), '--student', repoPath('models/floe-brown-draft'), '--data', data, '--max-steps', '1'];
}

// Before, distill ran its whole teacher pass (hours on a real data set) and only then had finetune() refuse these.
test('distill: a --lora-rank above the student\'s hidden size or a --max-seq-len past its context is refused before the teacher pass', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-distill-fit-'));
  const pair = distillArgs(dir);
  refused([
    [['distill', ...pair, '--out', join(dir, 'a'), '--lora-rank', '129'], /--lora-rank 129 is above the hidden size of .*floe-brown-draft \(128\)/],
    [['distill', ...pair, '--out', join(dir, 'b'), '--max-seq-len', '1025'], /--max-seq-len 1025 exceeds the context of .*floe-brown-draft \(1024 tokens\)/],
  ]);
  for (const out of ['a', 'b']) assert.ok(!existsSync(join(dir, `${out}.teacher-cache`)), `${out}: no teacher pass ran`);
});

// Before: "ENOTDIR: not a directory, mkdir '<state>/files'" (exit 1), no flag named.
test('batch: a --state (or its default OUTPUT.floe-batch) that is a file is a usage error naming it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-batch-state-'));
  const input = join(dir, 'requests.jsonl');
  writeFileSync(input, JSON.stringify({ custom_id: 'a', method: 'POST', url: '/v1/completions', body: { prompt: 'x', max_tokens: 1 } }) + '\n');
  const file = join(dir, 'state.txt');
  writeFileSync(file, 'mine\n');
  writeFileSync(join(dir, 'out.jsonl.floe-batch'), 'mine too\n');
  refused([
    [['batch', '--model', M, '--input', input, '--output', join(dir, 'o.jsonl'), '--state', file], /--state .*state\.txt is a file; expected a directory/],
    [['batch', '--model', M, '--input', input, '--output', join(dir, 'out.jsonl')], /the resume state .*out\.jsonl\.floe-batch \(--state, default OUTPUT\.floe-batch\) is a file/],
  ]);
  assert.equal(readFileSync(file, 'utf8'), 'mine\n');
});

// Before, the teacher pass ran and wrote the cache there, and then the trainer refused --out as non-empty (teacher.cache),
// which --overwrite cannot clear either (not a run's file).
test('distill: a --teacher-cache inside --out (or --out itself) is refused before the teacher pass', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-distill-cache-'));
  const pair = distillArgs(dir);
  refused([
    [['distill', ...pair, '--out', join(dir, 'a'), '--teacher-cache', join(dir, 'a', 'teacher.cache')], /--teacher-cache .*teacher\.cache is inside --out .*; give a path outside it/],
    [['distill', ...pair, '--out', join(dir, 'b') + '/', '--teacher-cache', join(dir, 'b')], /--teacher-cache .*b is --out itself/],
  ]);
  assert.ok(!existsSync(join(dir, 'a')) && !existsSync(join(dir, 'b')), 'no teacher pass ran, nothing written');
});
