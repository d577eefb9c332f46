// FP8 accuracy: held-out perplexity of floe's default model with bf16 vs FP8 weights (block 128, per-row) and bf16 vs FP8 KV cache.
//
// Usage: node --import tsx bench/fp8-accuracy.ts [--model DIR] [--data FILE.jsonl] [--max-seq-len 256] [--max-tokens N]
//                                                 [--backend native|reference] [--json OUT]
// Defaults: models/floe-brown (else the newest checkpoint of its pre-training run) on data/brown/heldout.jsonl.
// Targets (issue #5): FP8 weights within 1% relative perplexity of bf16; FP8 KV within a further 1%.

import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { KvDType } from '../src/backend/backend.js';
import { selectBackend, type BackendName } from '../src/backend/select.js';
import { quantizeModelDir, type Fp8Scheme } from '../src/formats/fp8-export.js';
import { loadModel } from '../src/formats/load.js';
import { loadTokenizer } from '../src/formats/tokenizer.js';
import { LlamaModel } from '../src/model/llama.js';
import { dequantizeRow } from '../src/tensor/codecs.js';
import { quantizeTensor } from '../src/tensor/quantize.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { evalPerplexity, readEvalTexts, type EvalResult } from '../src/train/eval.js';

const ROOT = new URL('..', import.meta.url).pathname;
const { values: a } = parseArgs({
  options: {
    model: { type: 'string' }, data: { type: 'string' }, 'max-seq-len': { type: 'string' }, 'max-tokens': { type: 'string' },
    backend: { type: 'string' }, json: { type: 'string' },
  },
});

/** models/floe-brown, else a temporary HF dir around the newest pre-training checkpoint (init's config and tokenizer). */
function defaultModel(tmp: string): { dir: string; label: string } {
  const final = join(ROOT, 'models', 'floe-brown');
  if (existsSync(join(final, 'model.safetensors'))) return { dir: final, label: 'models/floe-brown' };
  const work = join(ROOT, 'data', 'work', 'floe-brown');
  const run = join(work, 'pretrain');
  const ckpts = existsSync(run) ? readdirSync(run).filter((d) => /^checkpoint-\d+$/.test(d) && existsSync(join(run, d, 'model.safetensors'))).sort() : [];
  if (ckpts.length === 0) throw new Error('no models/floe-brown and no pre-training checkpoint: run scripts/make-default-model.ts, or pass --model');
  const dir = join(tmp, 'model');
  mkdirSync(dir);
  symlinkSync(join(run, ckpts.at(-1)!, 'model.safetensors'), join(dir, 'model.safetensors'));
  for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) {
    if (existsSync(join(work, 'init', f))) symlinkSync(join(work, 'init', f), join(dir, f));
  }
  return { dir, label: `data/work/floe-brown/pretrain/${ckpts.at(-1)} (models/floe-brown not exported yet)` };
}

function toBf16(t: Tensor): Tensor {
  if (t.dtype === 'bf16' || t.dtype === 'i32') return t;
  const v = new Float32Array(t.numel);
  for (let r = 0; r < t.rows; r++) dequantizeRow(t, r, v.subarray(r * t.cols, (r + 1) * t.cols));
  return quantizeTensor(v, t.shape, 'bf16');
}

const tmp = mkdtempSync(join(tmpdir(), 'floe-fp8-acc-'));
try {
  const { dir, label } = a.model ? { dir: a.model, label: a.model } : defaultModel(tmp);
  const data = a.data ?? join(ROOT, 'data', 'brown', 'heldout.jsonl');
  const texts = readEvalTexts(data);
  const backend = selectBackend((a.backend ?? 'native') as BackendName);
  const maxSeqLen = Number(a['max-seq-len'] ?? 256);
  const maxTokens = a['max-tokens'] === undefined ? undefined : Number(a['max-tokens']);
  const tok = await loadTokenizer(dir);
  if (!tok) throw new Error(`${dir}: no tokenizer`);
  process.stderr.write(`[fp8-accuracy] model ${label}, data ${data} (${texts.length} records), max seq len ${maxSeqLen}, backend ${backend.name}\n`);

  // weight variants: bf16 everywhere (the baseline), and the two FP8 checkpoints floe quantize writes (rest bf16)
  const src = await loadModel(dir);
  const weights: { name: string; tensors: Map<string, Tensor>; dispose: () => void }[] = [
    { name: 'f32 (as trained)', tensors: src.tensors, dispose: () => {} },
    { name: 'bf16', tensors: new Map([...src.tensors].map(([n, t]) => [n, toBf16(t)])), dispose: () => {} },
  ];
  for (const [name, scheme] of [['fp8 block 128×128', { kind: 'block', block: 128 }], ['fp8 per-row', { kind: 'per-row' }]] as [string, Fp8Scheme][]) {
    const out = join(tmp, name.replace(/\W+/g, '-'));
    await quantizeModelDir(dir, out, { scheme });
    const m = await loadModel(out);
    weights.push({ name, tensors: m.tensors, dispose: () => m.dispose() });
  }

  interface Row { weights: string; kv: KvDType; r: EvalResult }
  const rows: Row[] = [];
  for (const w of weights) {
    const model = LlamaModel.fromTensors(src.config, w.tensors, backend);
    const kvs: KvDType[] = w.name.startsWith('f32') ? ['f32'] : ['bf16', 'fp8_e4m3'];
    for (const kv of kvs) {
      const r = evalPerplexity(model, tok, texts, { maxSeqLen, maxTokens, kvDtype: kv });
      rows.push({ weights: w.name, kv, r });
      process.stderr.write(`[fp8-accuracy] ${w.name.padEnd(18)} kv ${kv.padEnd(8)} perplexity ${r.perplexity.toFixed(4)} over ${r.tokens} tokens (${r.seconds.toFixed(1)} s)\n`);
    }
  }
  const ppl = (w: string, kv: KvDType) => rows.find((x) => x.weights === w && x.kv === kv)!.r.perplexity;
  const base = ppl('bf16', 'bf16');
  const pct = (x: number, ref: number) => `${x >= ref ? '+' : ''}${((100 * (x - ref)) / ref).toFixed(3)}%`;
  const lines = [
    `| weights | KV cache | perplexity | vs bf16 / bf16 KV | fp8 KV vs same weights with bf16 KV |`,
    `|---|---|---|---|---|`,
    ...rows.map((x) => `| ${x.weights} | ${x.kv === 'fp8_e4m3' ? 'fp8 (E4M3, per-token-head scales)' : x.kv} | ${x.r.perplexity.toFixed(4)} | ${pct(x.r.perplexity, base)} | ${x.kv === 'fp8_e4m3' ? pct(x.r.perplexity, ppl(x.weights, 'bf16')) : ''} |`),
  ];
  const checks: [string, boolean][] = [];
  for (const w of ['fp8 block 128×128', 'fp8 per-row']) {
    const d = Math.abs(ppl(w, 'bf16') - base) / base;
    checks.push([`${w} weights within 1% of bf16: ${(100 * d).toFixed(3)}%`, d < 0.01]);
  }
  for (const w of ['bf16', 'fp8 block 128×128', 'fp8 per-row']) {
    const d = Math.abs(ppl(w, 'fp8_e4m3') - ppl(w, 'bf16')) / ppl(w, 'bf16');
    checks.push([`fp8 KV with ${w} weights within a further 1%: ${(100 * d).toFixed(3)}%`, d < 0.01]);
  }
  const tokens = rows[0]!.r.tokens;
  process.stdout.write(`\nModel ${label}; ${data}: ${rows[0]!.r.records} records, ${tokens} predicted tokens (BOS text EOS, cut to ${maxSeqLen}); backend ${backend.name}.\n\n`);
  process.stdout.write(lines.join('\n') + '\n\n' + checks.map(([s, ok]) => `${ok ? 'PASS' : 'FAIL'} ${s}`).join('\n') + '\n');
  if (a.json) writeFileSync(a.json, JSON.stringify({ model: label, data, maxSeqLen, tokens, rows: rows.map((x) => ({ weights: x.weights, kv: x.kv, loss: x.r.loss, perplexity: x.r.perplexity, tokens: x.r.tokens })), checks }, null, 1) + '\n');
  for (const w of weights) w.dispose();
  src.dispose();
  process.exitCode = checks.every(([, ok]) => ok) ? 0 : 1;
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
