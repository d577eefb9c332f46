// Bench model generator: random GGUFs load in floe with the intended config, weight statistics and llama3 rope factors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fp8WeightBytes, writeRandomFp8Dir } from '../../bench/fp8-gen.js';
import { benchVocab, ggufWeightBytes, llama3RopeFactors, writeRandomGguf, type GgufFormat } from '../../bench/gguf-gen.js';
import { loadModel } from '../../src/formats/load.js';
import { ropeInvFreq, type LlamaConfig } from '../../src/model/config.js';
import { dequantizeRow } from '../../src/tensor/codecs.js';
import type { Tensor } from '../../src/tensor/tensor.js';

const CFG: LlamaConfig = {
  vocabSize: 320, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
  rmsNormEps: 1e-5, ropeTheta: 500000,
  ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
  maxPositionEmbeddings: 4096, tieWordEmbeddings: true, bosTokenId: null, eosTokenIds: [],
};

function stats(t: Tensor): { mean: number; std: number } {
  const row = new Float32Array(t.cols);
  let s = 0, ss = 0;
  for (let r = 0; r < t.rows; r++) {
    dequantizeRow(t, r, row);
    for (const v of row) { s += v; ss += v * v; }
  }
  const n = t.rows * t.cols;
  return { mean: s / n, std: Math.sqrt(ss / n - (s / n) ** 2) };
}

test('random GGUFs load with the intended config and N(0, 0.02²) weights', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floe-gguf-gen-'));
  try {
    for (const fmt of ['f16', 'bf16', 'q8_0'] as GgufFormat[]) {
      const file = path.join(dir, `m-${fmt}.gguf`);
      writeRandomGguf(CFG, fmt, file);
      const m = await loadModel(file);
      for (const k of ['vocabSize', 'hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'tieWordEmbeddings'] as const) {
        assert.equal(m.config[k], CFG[k], `${fmt}: ${k}`);
      }
      assert.ok(Math.abs(m.config.ropeTheta - CFG.ropeTheta) < 1, `${fmt}: rope theta`);
      const wq = m.tensors.get('model.layers.1.self_attn.q_proj.weight')!;
      assert.equal(wq.dtype, fmt);
      const st = stats(m.tensors.get('model.embed_tokens.weight')!);
      assert.ok(Math.abs(st.std - 0.02) < 0.002, `${fmt}: embedding std ${st.std}`);
      assert.ok(Math.abs(st.mean) < 0.002, `${fmt}: embedding mean ${st.mean}`);
      // rope_freqs (llama.cpp form) must give the same inverse frequencies as floe's HF llama3 formula
      const base = ropeInvFreq({ headDim: CFG.headDim, ropeTheta: CFG.ropeTheta, ropeScaling: null });
      const hf = ropeInvFreq(CFG);
      assert.ok(m.ropeFreqFactors, `${fmt}: rope_freqs.weight present`);
      for (let i = 0; i < hf.length; i++) {
        const got = base[i]! / m.ropeFreqFactors![i]!;
        assert.ok(Math.abs(got - hf[i]!) <= 1e-6 * hf[i]!, `${fmt}: inv_freq[${i}] ${got} vs ${hf[i]}`);
      }
      // header accounting matches what is on disk (weights are the file minus header and padding)
      const size = fs.statSync(file).size;
      assert.ok(ggufWeightBytes(CFG, fmt) < size && size - ggufWeightBytes(CFG, fmt) < 64 * 1024, `${fmt}: weight bytes vs file size`);
      m.dispose();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('llama3 rope factors: 1 for short wavelengths, factor for long ones, monotone between', () => {
  const f = llama3RopeFactors({ ...CFG, headDim: 64, ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } });
  assert.equal(f[0], 1);
  assert.equal(f[f.length - 1], 32);
  for (let i = 1; i < f.length; i++) assert.ok(f[i]! >= f[i - 1]!, `factor ${i} decreases`);
});

test('bench vocabulary: unique tokens, V entries, control bos/eos', () => {
  const v = benchVocab(CFG.vocabSize);
  assert.equal(v.tokens.length, CFG.vocabSize);
  assert.equal(new Set(v.tokens).size, CFG.vocabSize);
  assert.equal(v.types[v.bos], 3);
  assert.equal(v.types[v.eos], 3);
  assert.throws(() => benchVocab(100), /at least 258/);
});

test('random fp8 checkpoint: loads as HF FP8 with per-row scales, N(0, 0.02²) after dequantization', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floe-fp8-gen-'));
  try {
    const ckpt = path.join(dir, 'fp8');
    writeRandomFp8Dir(CFG, ckpt);
    const m = await loadModel(ckpt);
    assert.deepEqual(m.config.ropeScaling, CFG.ropeScaling);
    assert.equal(m.config.numKvHeads, CFG.numKvHeads);
    assert.equal(m.tensors.size, 2 + 9 * CFG.numLayers);
    const w = m.tensors.get('model.layers.0.mlp.down_proj.weight')!;
    assert.equal(w.dtype, 'fp8_e4m3');
    assert.deepEqual(w.shape, [CFG.hiddenSize, CFG.intermediateSize]);
    assert.deepEqual(w.scaleBlock, [1, CFG.intermediateSize]);
    const st = stats(m.tensors.get('model.embed_tokens.weight')!);
    assert.ok(Math.abs(st.std - 0.02) < 0.002, `fp8 embedding std ${st.std}`);
    let bytes = 0;
    for (const x of m.tensors.values()) bytes += x.data.byteLength + (x.scale ? x.scale.byteLength : 0);
    assert.equal(bytes, fp8WeightBytes(CFG));
    m.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
