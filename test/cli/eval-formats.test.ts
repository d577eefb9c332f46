// `floe eval` on the trainer's data formats: {"prompt","completion"} and {"messages"} records are read as finetune reads
// them and scored on the tokens training scores (completion / assistant tokens; every token with --train-on-prompt).
// Expectations: the eval loss finetune itself reports on the same file before its first step (its training forward),
// and a hand-computed NLL from full-sequence logits on the completion positions.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { referenceBackend } from '../../src/backend/reference.js';
import { loadModel } from '../../src/formats/load.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { KvCache } from '../../src/model/kv-cache.js';
import { LlamaModel } from '../../src/model/llama.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const FIX = repoPath('test/fixtures/');

function floe(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

// gqa_f32 with the test tokenizer, whose chat template is `{{bos}}[role]content{{eos after assistant}}\n ...`
const dir = mkdtempSync(join(tmpdir(), 'floe-eval-formats-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const SRC = join(dir, 'model');
mkdirSync(SRC);
for (const [from, f] of [['models/gqa_f32', 'config.json'], ['models/gqa_f32', 'model.safetensors'], ['train/tokenizer', 'tokenizer.json'], ['train/tokenizer', 'tokenizer_config.json']]) {
  copyFileSync(join(FIX, from!, f!), join(SRC, f!));
}
const PROMPT = 'the cat sat on';
const COMPLETION = ' the mat and then ran far away';
const RECORDS = [
  { prompt: PROMPT, completion: COMPLETION },
  { text: 'a dog ran far away from home' },
  { messages: [{ role: 'system', content: 'be short' }, { role: 'user', content: 'hello there' }, { role: 'assistant', content: 'hello world, this is floe' }] },
  // a turn with weight 0 is context only, as OpenAI's fine-tuning format has it
  { messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'the cat', weight: 0 }, { role: 'user', content: 'and?' }, { role: 'assistant', content: 'sat on the mat' }] },
];
const DATA = join(dir, 'data.jsonl');
writeFileSync(DATA, RECORDS.map((r) => JSON.stringify(r)).join('\n') + '\n');

interface EvalJson { records: number; tokens: number; loss: number; formats: Record<string, number>; train_on_prompt: boolean }
const evalJson = (...a: string[]): EvalJson => {
  const r = floe('eval', '--model', SRC, '--backend', 'reference', '--kv-cache-dtype', 'f32', '--json', ...a);
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out) as EvalJson;
};

/** finetune's own eval of `file` at step 0 (the base model, its training forward): loss and scored tokens. */
function trainerEval(file: string, ...a: string[]): { eval_loss: number; eval_tokens: number } {
  const out = mkdtempSync(join(dir, 'run-'));
  const r = floe('finetune', '--model', SRC, '--data', file, '--eval', file, '--max-steps', '1', '--backend', 'reference', '--quiet', '--json', '--out', out, ...a);
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out).initialEval;
}

/** NLL of ids[j] given ids[0..j) for each j in `at`, from one full-sequence forward (reference backend, f32 KV). */
async function nllAt(ids: number[], at: number[]): Promise<number[]> {
  const m = await loadModel(SRC);
  const model = LlamaModel.fromTensors(m.config, m.tensors, referenceBackend);
  const V = m.config.vocabSize, T = ids.length;
  const kv = new KvCache(m.config.numLayers, Math.ceil(T / 16), 16, m.config.numKvHeads, m.config.headDim, 'f32');
  const pos = Int32Array.from({ length: T }, (_, i) => i);
  const logits = model.forward({ tokens: Int32Array.from(ids), positions: pos, slots: pos, attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(T), blockTables: Int32Array.from({ length: kv.numBlocks }, (_, i) => i), maxBlocks: kv.numBlocks }, logitRows: pos }, kv);
  const out = at.map((j) => {
    const row = logits.subarray((j - 1) * V, j * V);
    let mx = -Infinity;
    for (const x of row) mx = Math.max(mx, x);
    let s = 0;
    for (const x of row) s += Math.exp(x - mx);
    return mx + Math.log(s) - row[ids[j]!]!;
  });
  m.dispose();
  return out;
}

test('floe eval reads prompt/completion and messages records and scores the tokens finetune scores (its own eval loss on the file)', () => {
  const e = evalJson('--data', DATA);
  assert.deepEqual(e.formats, { text: 1, prompt_completion: 1, messages: 2 });
  assert.equal(e.records, 4);
  const t = trainerEval(DATA);
  assert.equal(e.tokens, t.eval_tokens, 'the same tokens scored');
  assert.ok(Math.abs(e.loss - t.eval_loss) < 1e-4, `eval ${e.loss}, finetune's eval ${t.eval_loss}`);
  // --train-on-prompt scores what a run with it trained on: more tokens, finetune's eval with it again
  const all = evalJson('--data', DATA, '--train-on-prompt');
  assert.equal(all.train_on_prompt, true);
  const tAll = trainerEval(DATA, '--train-on-prompt');
  assert.ok(all.tokens > e.tokens, `${all.tokens} tokens with prompts vs ${e.tokens}`);
  assert.equal(all.tokens, tAll.eval_tokens);
  assert.ok(Math.abs(all.loss - tAll.eval_loss) < 1e-4, `eval --train-on-prompt ${all.loss}, finetune's ${tAll.eval_loss}`);
  // the text report names what it scored
  const text = floe('eval', '--model', SRC, '--data', DATA, '--backend', 'reference');
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, /in 4 records; scored: 1 text \(every token\), 1 prompt\/completion \(the completion and EOS\), 2 chat \(the assistant turns, through the chat template\);/);
});

test('floe eval of a prompt/completion record: the NLL of the completion and EOS given the prompt, by hand; --max-tokens stops after that many of them', async () => {
  const tok = (await loadTokenizer(SRC))!;
  const p = tok.encode(PROMPT, { addSpecialTokens: true });
  const c = [...tok.encode(COMPLETION, { addSpecialTokens: false }), tok.eosIds[0]!];
  const ids = [...p, ...c];
  const nll = await nllAt(ids, c.map((_, i) => p.length + i));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const one = join(dir, 'one.jsonl');
  writeFileSync(one, JSON.stringify(RECORDS[0]) + '\n');
  const e = evalJson('--data', one);
  assert.equal(e.tokens, c.length, 'the completion and EOS, not the prompt');
  assert.ok(Math.abs(e.loss - mean(nll)) < 1e-4, `eval ${e.loss}, by hand ${mean(nll)}`);
  const k = 3;
  const cut = evalJson('--data', DATA, '--max-tokens', String(k)); // the prompt/completion record comes first
  assert.deepEqual([cut.records, cut.tokens, cut.formats.prompt_completion], [1, k, 1]);
  assert.ok(Math.abs(cut.loss - mean(nll.slice(0, k))) < 1e-4, `eval --max-tokens ${k}: ${cut.loss}, by hand ${mean(nll.slice(0, k))}`);
});

test('floe eval: a malformed record fails naming its line before the model loads; messages on a model without a chat template name the line', () => {
  const bad = join(dir, 'bad.jsonl');
  writeFileSync(bad, JSON.stringify(RECORDS[0]) + '\n' + JSON.stringify({ prompt: 'only a prompt' }) + '\n');
  const r = floe('eval', '--model', join(dir, 'no-such-model'), '--data', bad);
  assert.equal(r.code, 1);
  assert.match(r.err, /^floe eval: .*bad\.jsonl:2: "prompt" without "completion"\n$/);
  const plain = join(dir, 'no-template');
  mkdirSync(plain);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) copyFileSync(join(SRC, f), join(plain, f));
  const cfg = JSON.parse(readFileSync(join(SRC, 'tokenizer_config.json'), 'utf8'));
  delete cfg.chat_template;
  writeFileSync(join(plain, 'tokenizer_config.json'), JSON.stringify(cfg));
  const t = floe('eval', '--model', plain, '--data', DATA, '--backend', 'reference');
  assert.equal(t.code, 1);
  assert.match(t.err, /data\.jsonl:3: "messages" needs a chat template, and the model has none/);
});
