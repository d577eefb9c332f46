// FP8 export (floe quantize) and on-the-fly fp8 loading: tensors, file layouts against the PyTorch-made fixtures, logits.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { referenceBackend } from '../../src/backend/reference.js';
import { fp8QuantizationConfig, quantizeModelDir, type Fp8Scheme } from '../../src/formats/fp8-export.js';
import { loadModel } from '../../src/formats/load.js';
import { readSafetensorsDir, writeSafetensors, type StWriteTensor } from '../../src/formats/safetensors.js';
import { LlamaModel } from '../../src/model/llama.js';
import { generate } from '../../src/model/generate.js';
import { dequantizeRow, encodeBf16 } from '../../src/tensor/codecs.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import type { Tensor } from '../../src/tensor/tensor.js';
import { repoPath } from '../repo.js';

const FIX = repoPath('test/fixtures/models/');
const SCHEMES: [string, Fp8Scheme][] = [['block 128', { kind: 'block', block: 128 }], ['block 32', { kind: 'block', block: 32 }], ['per-row', { kind: 'per-row' }]];

function f32Of(t: Tensor): Float32Array {
  const out = new Float32Array(t.numel);
  for (let r = 0; r < t.rows; r++) dequantizeRow(t, r, out.subarray(r * t.cols, (r + 1) * t.cols));
  return out;
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'floe-fp8-'));
}

function bytesEqual(a: Uint8Array, b: Uint8Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: ${a.length} bytes, expected ${b.length}`);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) assert.fail(`${what}: byte ${i} is ${a[i]}, expected ${b[i]}`);
}

/** An f32 HF dir with fresh random weights (gqa_f32's config), so the test does not depend on one fixed draw. */
async function randomF32Model(seed: number): Promise<string> {
  const src = await loadModel(FIX + 'gqa_f32');
  const dir = tmp();
  let s = seed >>> 0;
  const rnd = (): number => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32 - 0.5; };
  const out: Record<string, StWriteTensor> = {};
  for (const [name, t] of src.tensors) {
    const v = Float32Array.from({ length: t.numel }, () => (name.endsWith('norm.weight') ? 1 + 0.2 * rnd() : 0.3 * rnd()));
    // a zero row and an outlier exercise the scale edge cases
    if (name.endsWith('q_proj.weight')) { v.fill(0, 0, t.cols); v[t.cols + 3] = 7; }
    out[name] = { dtype: 'F32', shape: t.shape, data: v };
  }
  writeSafetensors(join(dir, 'model.safetensors'), out, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), readFileSync(FIX + 'gqa_f32/config.json'));
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }));
  return dir;
}

for (const [label, scheme] of SCHEMES) {
  test(`quantize (${label}) -> loadModel: fp8 tensors equal quantizeTensor of the source; the rest bf16; config and extra files`, async () => {
    const src = await randomF32Model(label.length * 7919);
    const out = tmp();
    try {
      const r = await quantizeModelDir(src, out, { scheme });
      assert.equal(r.quantized.length, 14, 'seven linears in each of two layers');
      const a = await loadModel(src);
      const b = await loadModel(out);
      assert.deepEqual([...b.tensors.keys()].sort(), [...a.tensors.keys()].sort(), 'same tensor names after loading');
      for (const [name, t] of a.tensors) {
        const got = b.tensors.get(name)!;
        if (/_proj\.weight$/.test(name)) {
          const want = quantizeTensor(t.f32(), t.shape, 'fp8_e4m3', { fp8Block: scheme.kind === 'block' ? [scheme.block, scheme.block] : [1, t.cols] });
          assert.equal(got.dtype, 'fp8_e4m3', name);
          bytesEqual(got.data, want.data, `${name} codes`);
          // a single-block grid loads as per-tensor [N, C]: same values, so compare the dequantized weights
          assert.deepEqual(f32Of(got), f32Of(want), `${name} dequantized`);
        } else {
          assert.equal(got.dtype, 'bf16', `${name} stays bf16`);
          bytesEqual(got.data, encodeBf16(t.f32()), `${name} bf16 bytes`);
        }
      }
      assert.equal(b.config.numLayers, a.config.numLayers);
      const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
      assert.deepEqual(cfg.quantization_config, fp8QuantizationConfig(scheme, ['lm_head']));
      assert.equal(cfg.torch_dtype, 'bfloat16');
      assert.ok(existsSync(join(out, 'generation_config.json')), 'generation_config.json copied');
      a.dispose();
      b.dispose();
    } finally {
      rmSync(src, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

for (const [fixture, scheme] of [['fp8_block', { kind: 'block', block: 128 }], ['fp8_channel', { kind: 'per-row' }]] as [string, Fp8Scheme][]) {
  test(`quantize writes the PyTorch-made ${fixture} layout: names, dtypes, shapes, quantization_config, codes (scales within 1 ulp)`, async () => {
    // re-quantizing the fixture's own dequantized weights must reproduce its files: each block's amax code is 448
    const fx = await loadModel(FIX + fixture);
    const src = tmp();
    const out = tmp();
    try {
      const w: Record<string, StWriteTensor> = {};
      for (const [name, t] of fx.tensors) w[name] = { dtype: 'F32', shape: t.shape, data: f32Of(t) };
      writeSafetensors(join(src, 'model.safetensors'), w, { format: 'pt' });
      const cfg = JSON.parse(readFileSync(FIX + fixture + '/config.json', 'utf8'));
      const fixtureQuant = cfg.quantization_config;
      delete cfg.quantization_config;
      writeFileSync(join(src, 'config.json'), JSON.stringify(cfg));
      await quantizeModelDir(src, out, { scheme });
      const want = await readSafetensorsDir(FIX + fixture);
      const got = await readSafetensorsDir(out);
      assert.deepEqual([...got.tensors.keys()].sort(), [...want.tensors.keys()].sort(), 'tensor names');
      assert.equal(got.metadata?.format, 'pt');
      for (const [name, t] of want.tensors) {
        const g = got.tensors.get(name)!;
        assert.equal(g.dtype, t.dtype, `${name} dtype`);
        assert.deepEqual(g.shape, t.shape, `${name} shape`);
        if (t.dtype === 'F8_E4M3' || t.dtype === 'BF16') bytesEqual(g.data, t.data, name);
        else {
          const gs = new Float32Array(g.data.slice().buffer), ws = new Float32Array(t.data.slice().buffer);
          for (let i = 0; i < ws.length; i++) assert.ok(Math.abs(gs[i]! - ws[i]!) <= ws[i]! * 2 ** -23, `${name}[${i}] = ${gs[i]}, fixture ${ws[i]}`);
        }
      }
      const gotCfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
      assert.deepEqual(gotCfg.quantization_config, fixtureQuant, 'quantization_config as the fixture has it');
      fx.dispose();
    } finally {
      rmSync(src, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test('loadModel { dtype: fp8 } quantizes the linears on the fly (per row by default, or a given block); others untouched', async () => {
  const src = await randomF32Model(4242);
  try {
    const a = await loadModel(src);
    for (const block of [undefined, [128, 128] as const]) {
      const b = await loadModel(src, { dtype: 'fp8', fp8Block: block });
      for (const [name, t] of a.tensors) {
        const got = b.tensors.get(name)!;
        if (/_proj\.weight$/.test(name)) {
          const want = quantizeTensor(t.f32(), t.shape, 'fp8_e4m3', { fp8Block: block ?? [1, t.cols] });
          bytesEqual(got.data, want.data, `${name} codes`);
          assert.deepEqual(Array.from(got.scale!), Array.from(want.scale!), `${name} scales`);
        } else {
          assert.equal(got.dtype, t.dtype, `${name} keeps its dtype`);
          bytesEqual(got.data, t.data, name);
        }
      }
      b.dispose();
    }
    await assert.rejects(loadModel(src, { dtype: 'int4' as 'fp8' }), /load dtype "int4" is not supported/);
    a.dispose();
  } finally {
    rmSync(src, { recursive: true, force: true });
  }
});

/** Per-position log-softmax rows of the prompt (reference backend, f32 KV). */
function promptLogprobs(model: LlamaModel, ids: number[]): Float32Array[] {
  const r = generate(model, ids, { maxTokens: 0, promptLogprobs: model.config.vocabSize, kvDtype: 'f32', sampling: { temperature: 0 } });
  return r.promptLogprobs!.slice(1).map((e) => {
    const row = new Float32Array(model.config.vocabSize);
    for (const [id, lp] of e!.top) row[id] = lp;
    return row;
  });
}

test('FP8 checkpoints (block and per-row) give logits close to the f32 source: mean KL < 3e-3, same greedy argmax at most positions', async () => {
  const src = await randomF32Model(99);
  const outs = [tmp(), tmp()];
  try {
    const ref = JSON.parse(readFileSync(FIX + 'gqa_f32/reference.json', 'utf8')) as { prompt_ids: number[] };
    const a = await loadModel(src);
    const base = promptLogprobs(LlamaModel.fromTensors(a.config, a.tensors, referenceBackend), ref.prompt_ids);
    for (const [i, scheme] of ([{ kind: 'block', block: 128 }, { kind: 'per-row' }] as Fp8Scheme[]).entries()) {
      await quantizeModelDir(src, outs[i]!, { scheme });
      const b = await loadModel(outs[i]!);
      const q = promptLogprobs(LlamaModel.fromTensors(b.config, b.tensors, referenceBackend), ref.prompt_ids);
      let kl = 0, same = 0, maxd = 0;
      for (let t = 0; t < base.length; t++) {
        let am = 0, bm = 0;
        for (let v = 0; v < base[t]!.length; v++) {
          kl += Math.exp(base[t]![v]!) * (base[t]![v]! - q[t]![v]!);
          maxd = Math.max(maxd, Math.abs(base[t]![v]! - q[t]![v]!));
          if (base[t]![v]! > base[t]![am]!) am = v;
          if (q[t]![v]! > q[t]![bm]!) bm = v;
        }
        if (am === bm) same++;
      }
      kl /= base.length;
      if (process.env.FLOE_TEST_VERBOSE) console.log(scheme.kind, { kl, maxd, same });
      assert.ok(maxd > 0, 'the fp8 model must differ from the source (else quantization did not happen)');
      assert.ok(kl < 3e-3, `${scheme.kind}: mean KL(source || fp8) ${kl}`);
      assert.ok(same >= base.length - 1, `${scheme.kind}: argmax agrees at ${same}/${base.length} positions`);
      b.dispose();
    }
    a.dispose();
  } finally {
    for (const d of [src, ...outs]) rmSync(d, { recursive: true, force: true });
  }
});

test('quantize refuses an already-quantized model, its own input dir, and a tied head without --quantize-embed', async () => {
  const out = tmp();
  try {
    await assert.rejects(quantizeModelDir(FIX + 'fp8_block', out, { scheme: { kind: 'per-row' } }), /already quantized/);
    await assert.rejects(quantizeModelDir(FIX + 'gqa_f32', FIX + 'gqa_f32', { scheme: { kind: 'per-row' } }), /is the input directory/);
    await assert.rejects(quantizeModelDir(FIX + 'mha_f32', out, { scheme: { kind: 'per-row' }, quantizeHead: true }), /tied to the embeddings/);
    const r = await quantizeModelDir(FIX + 'mha_f32', out, { scheme: { kind: 'per-row' }, quantizeHead: true, quantizeEmbed: true });
    assert.ok(r.quantized.includes('model.embed_tokens.weight'));
    const m = await loadModel(out);
    assert.equal(m.tensors.get('model.embed_tokens.weight')!.dtype, 'fp8_e4m3');
    m.dispose();
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('a quantize that fails while writing leaves no config.json, so neither its output nor an earlier export in the same directory loads as a model', async () => {
  const src = tmp(), out = tmp();
  try {
    cpSync(FIX + 'gqa_f32', src, { recursive: true });
    await quantizeModelDir(src, out, { scheme: { kind: 'per-row' } });
    (await loadModel(out)).dispose(); // a whole export loads
    // a file to copy that cannot be read (a directory where chat_template.jinja should be): the run fails after the weights
    rmSync(join(src, 'chat_template.jinja'), { force: true });
    mkdirSync(join(src, 'chat_template.jinja'));
    await assert.rejects(quantizeModelDir(src, out, { scheme: { kind: 'block', block: 16 } }), /EISDIR|chat_template/);
    assert.ok(existsSync(join(out, 'model.safetensors')), 'the run got as far as the weights');
    assert.ok(!existsSync(join(out, 'config.json')), 'no config.json: neither the earlier per-row export nor the half-written block one');
    await assert.rejects(loadModel(out));
  } finally {
    for (const d of [src, out]) rmSync(d, { recursive: true, force: true });
  }
});

test('quantize of a directory whose config.json is bad JSON or not an object fails naming the file', async () => {
  const src = tmp(), out = tmp();
  try {
    cpSync(FIX + 'gqa_f32', src, { recursive: true });
    for (const [text, want] of [['{"a":', 'bad JSON: '], ['null', 'config is not a JSON object']] as const) {
      writeFileSync(join(src, 'config.json'), text); // was 'Unexpected end of JSON input' / "Cannot read properties of null"
      await assert.rejects(quantizeModelDir(src, out, { scheme: { kind: 'per-row' } }), (e: Error) => e.message.startsWith(`${join(src, 'config.json')}: ${want}`), text);
    }
  } finally {
    rmSync(src, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
});
