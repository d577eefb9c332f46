// `floe quantize` and `floe eval` as a user runs them (subprocesses), against in-process references.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { referenceBackend } from '../../src/backend/reference.js';
import { loadModel } from '../../src/formats/load.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { KvCache } from '../../src/model/kv-cache.js';
import { LlamaModel } from '../../src/model/llama.js';
import { readEvalTexts } from '../../src/train/eval.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const FIX = fileURLToPath(new URL('../fixtures/', import.meta.url));

/** The CLI from source (the same run() bin/floe.js calls), as a subprocess. */
function floe(...args: string[]) {
  const code = `const { run } = await import(${JSON.stringify(MAIN)}); process.exitCode = await run(process.argv.slice(1));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code, '--', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

// gqa_f32 (vocab 256, bos 1, eos 2) with the 105-token test tokenizer (same bos/eos ids)
const dir = mkdtempSync(join(tmpdir(), 'floe-quant-cli-'));
const SRC = join(dir, 'src');
const DATA = join(dir, 'data.jsonl');
{
  mkdirSync(SRC);
  for (const [from, f] of [['models/gqa_f32', 'config.json'], ['models/gqa_f32', 'model.safetensors'], ['train/tokenizer', 'tokenizer.json'], ['train/tokenizer', 'tokenizer_config.json']]) {
    copyFileSync(join(FIX, from!, f!), join(SRC, f!));
  }
  const texts = ['the cat sat on the mat', 'a dog ran far away from home', 'hello world, this is floe'];
  writeFileSync(DATA, texts.map((t) => JSON.stringify({ text: t })).join('\n') + '\n');
}
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

/** Token-weighted NLL of BOS text EOS records, by full-sequence forwards on the reference backend (f32 KV). */
async function directNll(modelDir: string, texts: string[], dtype?: 'fp8'): Promise<number> {
  const m = await loadModel(modelDir, dtype ? { dtype } : {});
  const tok = (await loadTokenizer(SRC))!;
  const model = LlamaModel.fromTensors(m.config, m.tensors, referenceBackend);
  const V = m.config.vocabSize;
  let nll = 0, n = 0;
  for (const t of texts) {
    const ids = [...tok.encode(t, { addSpecialTokens: true }), ...tok.eosIds.slice(0, 1)];
    const T = ids.length;
    const kv = new KvCache(m.config.numLayers, Math.ceil(T / 16), 16, m.config.numKvHeads, m.config.headDim, 'f32');
    const pos = Int32Array.from({ length: T }, (_, i) => i);
    const logits = model.forward({ tokens: Int32Array.from(ids), positions: pos, slots: pos, attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(T), blockTables: Int32Array.from({ length: kv.numBlocks }, (_, i) => i), maxBlocks: kv.numBlocks }, logitRows: pos }, kv);
    for (let i = 0; i + 1 < T; i++) {
      const row = logits.subarray(i * V, (i + 1) * V);
      let mx = -Infinity;
      for (const x of row) mx = Math.max(mx, x);
      let s = 0;
      for (const x of row) s += Math.exp(x - mx);
      nll += mx + Math.log(s) - row[ids[i + 1]!]!;
      n++;
    }
  }
  m.dispose();
  return nll / n;
}

test('floe eval --json: perplexity equals a direct full-sequence computation; --kv-cache-dtype fp8 changes it slightly', async () => {
  const texts = readEvalTexts(DATA);
  const want = await directNll(SRC, texts);
  const r = floe('eval', '--model', SRC, '--data', DATA, '--backend', 'reference', '--kv-cache-dtype', 'f32', '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.records, 3);
  assert.ok(Math.abs(j.loss - want) < 1e-4, `eval loss ${j.loss}, direct ${want}`);
  assert.ok(Math.abs(j.perplexity - Math.exp(want)) < 1e-3 * Math.exp(want));
  const f = JSON.parse(floe('eval', '--model', SRC, '--data', DATA, '--backend', 'reference', '--kv-cache-dtype', 'fp8', '--json').out);
  assert.equal(f.kv_cache_dtype, 'fp8', 'named as --kv-cache-dtype names it');
  const text = floe('eval', '--model', SRC, '--data', DATA, '--backend', 'reference', '--kv-cache-dtype', 'fp8');
  assert.match(text.out, /, kv fp8, /);
  assert.notEqual(f.loss, j.loss, 'the fp8 KV cache must be used');
  assert.ok(Math.abs(f.loss - j.loss) < 0.05 * j.loss, `fp8 KV loss ${f.loss} vs ${j.loss}`);
});

test('floe quantize --fp8 --per-row: FP8 checkpoint with tokenizer; its eval equals a direct computation on the same weights; --dtype fp8 is close', async () => {
  const out = join(dir, 'q-row');
  const r = floe('quantize', '--model', SRC, '--out', out, '--fp8', '--per-row', '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.quantized, 14);
  assert.ok(j.bytes_out < j.bytes_in / 2, `fp8 + bf16 output ${j.bytes_out} bytes vs f32 ${j.bytes_in}`);
  const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  assert.equal(cfg.quantization_config.quant_method, 'compressed-tensors');
  assert.equal(cfg.quantization_config.config_groups.group_0.weights.strategy, 'channel');
  assert.deepEqual(readFileSync(join(out, 'tokenizer.json')), readFileSync(join(SRC, 'tokenizer.json')));
  const texts = readEvalTexts(DATA);
  const want = await directNll(out, texts);
  const e = JSON.parse(floe('eval', '--model', out, '--data', DATA, '--backend', 'reference', '--kv-cache-dtype', 'f32', '--json').out);
  assert.ok(Math.abs(e.loss - want) < 1e-4, `fp8 checkpoint eval ${e.loss}, direct ${want}`);
  // on the fly: the same per-row fp8 linears, but embeddings / norms / head stay f32 instead of bf16
  const fly = JSON.parse(floe('eval', '--model', SRC, '--data', DATA, '--dtype', 'fp8', '--backend', 'reference', '--kv-cache-dtype', 'f32', '--json').out);
  const flyWant = await directNll(SRC, texts, 'fp8');
  assert.ok(Math.abs(fly.loss - flyWant) < 1e-4, `--dtype fp8 eval ${fly.loss}, direct ${flyWant}`);
  assert.ok(Math.abs(fly.loss - e.loss) < 0.01 * e.loss, `--dtype fp8 ${fly.loss} vs checkpoint ${e.loss}`);
});

test('floe quantize --block 64 writes weight_scale_inv grids; generate runs it with --kv-cache-dtype fp8', () => {
  const out = join(dir, 'q-block');
  const r = floe('quantize', '--model', FIX + 'models/gqa_f32', '--out', out, '--fp8', '--block', '64');
  assert.equal(r.code, 0, r.err);
  const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  assert.deepEqual(cfg.quantization_config, { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [64, 64] });
  const g = floe('generate', '--model', out, '--prompt-ids', '1,50,60,70', '--max-tokens', '5', '--temperature', '0', '--kv-cache-dtype', 'fp8', '--json');
  assert.equal(g.code, 0, g.err);
  assert.equal(JSON.parse(g.out).output_ids.length, 5);
});

/** run() in-process with stderr captured (argument errors return before any work). */
async function floeInProcess(...args: string[]): Promise<{ code: number; err: string }> {
  const { run } = await import('../../src/cli/main.js');
  let err = '';
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string) => { err += chunk; return true; }) as typeof process.stderr.write;
  try {
    return { code: await run(args), err };
  } finally {
    process.stderr.write = write;
  }
}

test('floe quantize / eval: bad arguments fail with a message', async () => {
  const noFmt = await floeInProcess('quantize', '--model', SRC, '--out', join(dir, 'x'));
  assert.equal(noFmt.code, 2, 'a usage error');
  assert.match(noFmt.err, /--fp8/);
  assert.match((await floeInProcess('quantize', '--model', SRC, '--out', join(dir, 'x'), '--fp8', '--per-row', '--block', '32')).err, /not both/);
  // a directory without config.json, --out an existing file, --out the input through a symlink: refused, named
  const empty = join(dir, 'empty-model');
  mkdirSync(empty, { recursive: true });
  const noCfg = floe('quantize', '--model', empty, '--out', join(dir, 'y'), '--fp8');
  assert.equal(noCfg.code, 1);
  assert.match(noCfg.err, /empty-model: no config\.json; quantize reads an HF model directory/);
  const file = join(dir, 'a-file');
  writeFileSync(file, 'x');
  const outFile = floe('quantize', '--model', SRC, '--out', file, '--fp8');
  assert.equal(outFile.code, 1);
  assert.match(outFile.err, /--out .*a-file is a file; give a directory/);
  const link = join(dir, 'src-link');
  symlinkSync(SRC, link);
  const same = floe('quantize', '--model', SRC, '--out', link, '--fp8');
  assert.equal(same.code, 1);
  assert.match(same.err, /src-link is the input directory/);
  assert.ok(existsSync(join(SRC, 'model.safetensors')), 'the input weights are still there');
  const kv = await floeInProcess('eval', '--model', SRC, '--data', DATA, '--kv-cache-dtype', 'int4');
  assert.equal(kv.code, 2, 'a usage error');
  assert.match(kv.err, /--kv-cache-dtype expects auto, f32, bf16 or fp8, got 'int4'/);
  assert.match((await floeInProcess('generate', '--model', SRC, '--prompt', 'x', '--dtype', 'fp16')).err, /--dtype expects fp8/);
});

test('readEvalTexts: JSONL records, plain-text paragraphs, errors with file:line', () => {
  const txt = join(dir, 'plain.txt');
  writeFileSync(txt, 'First paragraph\nstill first.\n\n  \nSecond one.\n');
  assert.deepEqual(readEvalTexts(txt), ['First paragraph\nstill first.', 'Second one.']);
  const bad = join(dir, 'bad.jsonl');
  writeFileSync(bad, '{"text": "ok"}\n{"txt": 1}\n');
  assert.throws(() => readEvalTexts(bad), /bad\.jsonl:2: expected an object with a string "text" field/);
});
