// loadModel on HF directories: dtypes, sharding, tied embeddings, FP8 checkpoints (fp8 + compressed-tensors), shape checks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../../src/formats/load.js';
import { writeSafetensors, type StWriteTensor } from '../../src/formats/safetensors.js';
import { dequantizeRow, encodeBf16, encodeFp8 } from '../../src/tensor/codecs.js';
import { makeTinyHf, randn, rng } from './fixtures.js';

test('HF f32 / bf16 / sharded: config and every tensor byte-identical to what was written', async () => {
  for (const o of [{ dtype: 'F32' as const }, { dtype: 'BF16' as const, tied: true }, { dtype: 'F16' as const, shardBytes: 20000, headDim: 16 }]) {
    const tiny = makeTinyHf({ ...o, seed: 7 });
    const m = await loadModel(tiny.dir);
    assert.equal(m.format, 'hf');
    assert.equal(m.config.hiddenSize, tiny.config.hidden_size);
    assert.equal(m.config.headDim, tiny.config.head_dim);
    assert.equal(m.config.tieWordEmbeddings, o.tied ?? false);
    assert.equal(m.config.ropeScaling?.type, 'llama3');
    assert.equal(m.tensors.has('lm_head.weight'), !(o.tied ?? false));
    assert.equal(m.tensors.size, Object.keys(tiny.tensors).length);
    for (const [name, t] of Object.entries(tiny.tensors)) {
      const got = m.tensors.get(name)!;
      assert.equal(got.dtype, o.dtype.toLowerCase(), name);
      assert.deepEqual(got.shape, t.shape, name);
      assert.deepEqual(got.data, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), name);
    }
    m.dispose();
  }
});

test('shape check names the tensor, expected vs got; an integer weight; missing lm_head when untied', async () => {
  const tiny = makeTinyHf({ seed: 3 });
  const t = { ...tiny.tensors };
  t['model.layers.1.self_attn.k_proj.weight'] = { dtype: 'F32', shape: [8, 32], data: new Float32Array(8 * 32) };
  writeSafetensors(path.join(tiny.dir, 'model.safetensors'), t);
  await assert.rejects(loadModel(tiny.dir), /tensor "model\.layers\.1\.self_attn\.k_proj\.weight" has shape \[8, 32\], config implies \[16, 32\]/);
  t['model.layers.1.self_attn.k_proj.weight'] = { dtype: 'I32', shape: [16, 32], data: new Int32Array(16 * 32) };
  writeSafetensors(path.join(tiny.dir, 'model.safetensors'), t);
  await assert.rejects(loadModel(tiny.dir), /tensor "model\.layers\.1\.self_attn\.k_proj\.weight" has dtype I32; a weight must be F32, F16, BF16 or F8_E4M3/);
  delete t['lm_head.weight'];
  t['model.layers.1.self_attn.k_proj.weight'] = tiny.tensors['model.layers.1.self_attn.k_proj.weight']!;
  writeSafetensors(path.join(tiny.dir, 'model.safetensors'), t);
  await assert.rejects(loadModel(tiny.dir), /missing tensor "lm_head\.weight"/);
});

test('a config with fewer layers than the checkpoint is refused, naming the first layer past it', async () => {
  const tiny = makeTinyHf({ seed: 5 });
  const layers = tiny.config.num_hidden_layers as number;
  assert.ok(layers >= 2, 'the tiny model has layers to drop');
  fs.writeFileSync(path.join(tiny.dir, 'config.json'), JSON.stringify({ ...tiny.config, num_hidden_layers: layers - 1 }));
  await assert.rejects(loadModel(tiny.dir), new RegExp(`tensor "model\\.layers\\.${layers - 1}\\.[a-z_.]+" is past the config's num_hidden_layers = ${layers - 1} \\(the checkpoint has layers up to ${layers - 1}\\)`));
  fs.writeFileSync(path.join(tiny.dir, 'config.json'), JSON.stringify(tiny.config));
  (await loadModel(tiny.dir)).dispose();
});

/** Rewrites a tiny model's linear weights as FP8 with the given scale layout; returns the f32 values they encode. */
function toFp8(tiny: ReturnType<typeof makeTinyHf>, scheme: 'block' | 'tensor' | 'channel', scaleDtype: 'F32' | 'BF16') {
  const r = rng(11);
  const out: Record<string, StWriteTensor> = {};
  const dense = new Map<string, Float32Array>(); // what dequantization must give
  for (const [name, t] of Object.entries(tiny.tensors)) {
    if (!/_proj\.weight$/.test(name)) { out[name] = t; continue; }
    const [N, C] = t.shape as [number, number];
    const codes = encodeFp8(randn(N * C, r, 400));
    const [br, bc] = scheme === 'block' ? [16, 16] : scheme === 'tensor' ? [N, C] : [1, C];
    const gr = Math.ceil(N / br), gc = Math.ceil(C / bc);
    let scale = randn(gr * gc, r, 0.01).map((x) => Math.abs(x) + 1e-3);
    if (scaleDtype === 'BF16') { // round to bf16 so the expected values use the stored scale
      const b = encodeBf16(scale);
      scale = new Float32Array(gr * gc);
      for (let i = 0; i < scale.length; i++) scale[i] = new Float32Array(new Uint32Array([(b[2 * i]! | (b[2 * i + 1]! << 8)) << 16]).buffer)[0]!;
      out[scheme === 'block' ? `${name}_scale_inv` : `${name}_scale`] = { dtype: 'BF16', shape: scheme === 'tensor' ? [] : [gr, gc], data: b };
    } else {
      out[scheme === 'block' ? `${name}_scale_inv` : `${name}_scale`] = { dtype: 'F32', shape: scheme === 'tensor' ? [1] : [gr, gc], data: scale };
    }
    out[name] = { dtype: 'F8_E4M3', shape: [N, C], data: codes };
    out[name.replace(/weight$/, 'input_scale')] = { dtype: 'F32', shape: [], data: new Float32Array([1]) };
    const fp = new Float32Array(N * C);
    const lut = new Float32Array(256);
    for (let i = 0; i < 256; i++) { const o = new Float32Array(1); dequant1(i, o); lut[i] = o[0]!; }
    for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) fp[n * C + c] = lut[codes[n * C + c]!]! * scale[Math.floor(n / br) * gc + Math.floor(c / bc)]!;
    dense.set(name, fp);
  }
  writeSafetensors(path.join(tiny.dir, 'model.safetensors'), out);
  return dense;
}

/** fp8 code -> f32 by the E4M3FN definition (independent of the codecs under test). */
function dequant1(code: number, o: Float32Array): void {
  const s = code & 0x80 ? -1 : 1, e = (code >> 3) & 15, m = code & 7;
  o[0] = e === 15 && m === 7 ? NaN : e === 0 ? s * (m / 8) * 2 ** -6 : s * (1 + m / 8) * 2 ** (e - 7);
}

test('FP8 checkpoints: fp8 128-style blocks, compressed-tensors per tensor / per channel, F32 or BF16 scales', async () => {
  const cases = [
    { scheme: 'block' as const, sd: 'F32' as const, q: { quant_method: 'fp8', weight_block_size: [16, 16], activation_scheme: 'dynamic' } },
    { scheme: 'tensor' as const, sd: 'BF16' as const, q: { quant_method: 'compressed-tensors', format: 'float-quantized', config_groups: { g: { weights: { num_bits: 8, type: 'float', strategy: 'tensor' } } } } },
    { scheme: 'channel' as const, sd: 'F32' as const, q: { quant_method: 'compressed-tensors', format: 'naive-quantized', config_groups: { g: { weights: { num_bits: 8, type: 'float', strategy: 'channel' } } } } },
  ];
  for (const c of cases) {
    // hidden 40 / ffn 72: not multiples of the 16 block, so edge blocks are partial.
    const tiny = makeTinyHf({ seed: 5, hidden: 40, heads: 4, kvHeads: 2, headDim: 10, ffn: 72, extraConfig: { quantization_config: c.q } });
    const dense = toFp8(tiny, c.scheme, c.sd);
    const m = await loadModel(tiny.dir);
    for (const [name, want] of dense) {
      const t = m.tensors.get(name)!;
      assert.equal(t.dtype, 'fp8_e4m3', name);
      const row = new Float32Array(t.cols);
      for (let n = 0; n < t.rows; n++) {
        dequantizeRow(t, n, row);
        for (let k = 0; k < t.cols; k++) {
          const w = want[n * t.cols + k]!;
          if (Math.abs(row[k]! - w) > 1e-6 * Math.abs(w) + 1e-30) assert.fail(`${c.scheme} ${name}[${n},${k}]: ${row[k]} vs ${w}`);
        }
      }
    }
    for (const name of m.tensors.keys()) assert.ok(!/scale/.test(name), `scale tensor ${name} leaked into the model`);
  }
});

test('FP8 scale with a shape that fits no layout is rejected naming the scale tensor', async () => {
  const tiny = makeTinyHf({ seed: 2, extraConfig: { quantization_config: { quant_method: 'fp8', weight_block_size: [16, 16] } } });
  const t = { ...tiny.tensors };
  t['model.layers.0.mlp.up_proj.weight'] = { dtype: 'F8_E4M3', shape: [64, 32], data: new Uint8Array(64 * 32) };
  t['model.layers.0.mlp.up_proj.weight_scale_inv'] = { dtype: 'F32', shape: [3, 3], data: new Float32Array(9) };
  writeSafetensors(path.join(tiny.dir, 'model.safetensors'), t);
  await assert.rejects(loadModel(tiny.dir), /scale "model\.layers\.0\.mlp\.up_proj\.weight_scale_inv" for fp8 weight \[64, 32\] has shape \[3, 3\], expected \[4, 2\]/);
  delete t['model.layers.0.mlp.up_proj.weight_scale_inv'];
  writeSafetensors(path.join(tiny.dir, 'model.safetensors'), t);
  await assert.rejects(loadModel(tiny.dir), /fp8 tensor "model\.layers\.0\.mlp\.up_proj\.weight" has no/);
});

test('loadModel rejects a path that is neither a directory nor GGUF, naming it', async () => {
  const tiny = makeTinyHf();
  const f = path.join(tiny.dir, 'config.json');
  await assert.rejects(loadModel(f), new RegExp(`${f.replace(/[.]/g, '\\.')}: not an HF model directory or a GGUF file`));
  fs.writeFileSync(path.join(tiny.dir, 'config.json'), JSON.stringify({ ...tiny.config, architectures: ['GPT2LMHeadModel'] }));
  await assert.rejects(loadModel(tiny.dir), /config\.json: architectures \["GPT2LMHeadModel"\] is not supported/);
});
