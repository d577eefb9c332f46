// `floe quantize` and `floe eval` as a user runs them (subprocesses), against in-process references.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { referenceBackend } from '../../src/backend/reference.js';
import { loadModel } from '../../src/formats/load.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { KvCache } from '../../src/model/kv-cache.js';
import { LlamaModel } from '../../src/model/llama.js';
import { readEvalTexts } from '../../src/train/eval.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const FIX = repoPath('test/fixtures/');

/** bin/floe.js as a subprocess. */
function floe(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
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
  // a directory without config.json: refused, named (the model is wrong, not the command line: exit 1)
  const empty = join(dir, 'empty-model');
  mkdirSync(empty, { recursive: true });
  const noCfg = floe('quantize', '--model', empty, '--out', join(dir, 'y'), '--fp8');
  assert.equal(noCfg.code, 1);
  assert.match(noCfg.err, /empty-model: no config\.json; quantize reads an HF model directory/);
  const kv = await floeInProcess('eval', '--model', SRC, '--data', DATA, '--kv-cache-dtype', 'int4');
  assert.equal(kv.code, 2, 'a usage error');
  assert.match(kv.err, /--kv-cache-dtype expects auto, f32, bf16 or fp8, got 'int4'/);
  assert.match((await floeInProcess('generate', '--model', SRC, '--prompt', 'x', '--dtype', 'fp16')).err, /--dtype expects fp8/);
});

test('floe quantize --out: a file, a path under a file, the input, a non-empty or unwritable directory are usage errors (exit 2) naming --out, before the model loads', async () => {
  const usage = async (out: string, want: RegExp, model = SRC) => {
    const r = await floeInProcess('quantize', '--model', model, '--out', out, '--fp8');
    assert.equal(r.code, 2, `--out ${out}: a usage error, got ${r.code}: ${r.err}`);
    assert.match(r.err, want);
  };
  const file = join(dir, 'a-file');
  writeFileSync(file, 'x');
  await usage(file, /^floe quantize: --out .*a-file: .*a-file is a file, not a directory; give a directory for the FP8 model\n$/);
  await usage(join(file, 'sub'), /^floe quantize: --out .*a-file\/sub: .*a-file is a file, not a directory/);
  const link = join(dir, 'src-link');
  symlinkSync(SRC, link);
  await usage(link, /^floe quantize: --out .*src-link is the input directory \(--model .*\); give another directory for the FP8 model\n$/);
  assert.ok(existsSync(join(SRC, 'model.safetensors')), 'the input weights are still there');
  // a directory holding other files (an earlier export's model*.safetensors were deleted before: a user's file of that name too)
  const busy = join(dir, 'busy');
  mkdirSync(busy);
  writeFileSync(join(busy, 'notes.txt'), 'mine');
  writeFileSync(join(busy, 'model-mine.safetensors'), 'mine too');
  await usage(busy, /^floe quantize: --out .*busy is not empty \(it holds model-mine\.safetensors, notes\.txt\); give a new or empty directory for the FP8 model\n$/);
  assert.deepEqual(readdirSync(busy).sort(), ['model-mine.safetensors', 'notes.txt'], 'nothing in it was touched');
  // checked before the model is read: a missing --model does not come first
  await usage(busy, /--out .*busy is not empty/, join(dir, 'no-such-model'));
});

// /proc/sys refuses writes to root too (the kernel's sysctl permission check ignores capabilities), so this runs where
// CI does, as root; a read-only directory (root writes there anyway) is checked as well when not root. A subprocess:
// past the check, Node's recursive mkdirSync loops forever on /proc/sys's ENOENT, and floe()'s timeout ends that.
test('floe quantize --out in a directory it cannot write: a usage error naming it, before the model loads; nothing is left there', { skip: existsSync('/proc/sys') ? false : 'no /proc/sys (not Linux)' }, () => {
  const cases: Array<[parent: string, out: string]> = [['/proc/sys', join('/proc/sys', 'floe-quantize-test', 'fp8')]];
  const ro = join(dir, 'read-only');
  if (process.getuid?.() !== 0) {
    mkdirSync(ro);
    chmodSync(ro, 0o555);
    cases.push([ro, join(ro, 'fp8', 'x')]);
  }
  try {
    for (const [parent, out] of cases) {
      const before = readdirSync(parent).sort();
      // a missing --model shows the check comes before the model is read
      for (const model of [SRC, join(dir, 'no-such-model')]) {
        const r = floe('quantize', '--model', model, '--out', out, '--fp8');
        assert.equal(r.code, 2, `--out ${out}, --model ${model}: a usage error, got ${r.code}: ${r.err}`);
        assert.equal(r.err, `floe quantize: --out ${out}: ${parent} is not writable; give a directory you can write for the FP8 model\n`);
      }
      assert.deepEqual(readdirSync(parent).sort(), before, `nothing was made in ${parent}`);
    }
  } finally {
    if (existsSync(ro)) chmodSync(ro, 0o755);
  }
});

test('floe quantize that fails while writing leaves no --out behind (a new one stays missing, an empty one empty); a later run writes it', () => {
  // the input's chat_template.jinja is a directory: reading it fails after the weights, config.json and tokenizer are written
  const bad = join(dir, 'bad-src');
  mkdirSync(bad);
  for (const f of readdirSync(SRC)) copyFileSync(join(SRC, f), join(bad, f));
  mkdirSync(join(bad, 'chat_template.jinja'));
  const fresh = join(dir, 'fresh', 'fp8');
  const empty = join(dir, 'empty-out');
  mkdirSync(empty);
  for (const out of [fresh, empty]) {
    const r = floe('quantize', '--model', bad, '--out', out, '--fp8');
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, /EISDIR/);
    if (out === fresh) assert.equal(existsSync(out), false, `${out} was not created`);
    else assert.deepEqual(readdirSync(out), [], `${out} is still empty`);
    assert.deepEqual(readdirSync(dirname(out)).filter((n) => n.includes('partial')), [], 'no partial output is left beside it');
  }
  // the same --out after the cause is gone: written in full
  rmSync(join(bad, 'chat_template.jinja'), { recursive: true });
  for (const out of [fresh, empty]) {
    const r = floe('quantize', '--model', bad, '--out', out, '--fp8', '--json');
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(readdirSync(out).sort(), ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    assert.deepEqual(JSON.parse(r.out).files, [join(out, 'model.safetensors')]);
  }
});

test('readEvalTexts: JSONL records, plain-text paragraphs, errors with file:line', () => {
  const txt = join(dir, 'plain.txt');
  writeFileSync(txt, 'First paragraph\nstill first.\n\n  \nSecond one.\n');
  assert.deepEqual(readEvalTexts(txt), ['First paragraph\nstill first.', 'Second one.']);
  const bad = join(dir, 'bad.jsonl');
  writeFileSync(bad, '{"text": "ok"}\n{"txt": 1}\n');
  assert.throws(() => readEvalTexts(bad), /bad\.jsonl:2: expected "text", "prompt"\+"completion" or "messages", got keys \[txt\]/);
  const pc = join(dir, 'pc.jsonl');
  writeFileSync(pc, '{"text": "ok"}\n{"prompt": "a", "completion": "b"}\n');
  assert.throws(() => readEvalTexts(pc), /pc\.jsonl:2: expected an object with a string "text" field/);
});
