// An HF dir written from a GGUF base (`floe merge`, `finetune --full`): tokenizer files built from tokenizer.ggml.*,
// and rope_freqs.weight stated as llama3 rope_scaling, so the output tokenizes and computes as the GGUF base did.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { referenceBackend } from '../../src/backend/reference.js';
import { loadModel, type LoadedModel } from '../../src/formats/load.js';
import { hfToGguf, llama3RopeFactors, llama3ScalingFromFactors } from '../../src/formats/gguf-writer.js';
import { tokenizerFromGguf } from '../../src/formats/gguf-tokenizer.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { loadChatTemplate } from '../../src/formats/chat-template.js';
import { writePeftAdapter } from '../../src/formats/peft.js';
import { ropeInvFreq } from '../../src/model/config.js';
import { LlamaModel } from '../../src/model/llama.js';
import { initLora, type LoraAdapter } from '../../src/model/lora.js';
import { mergeAdapter, writeHfModel } from '../../src/train/export.js';
import { finetune } from '../../src/train/trainer.js';
import { Rng } from '../../src/train/rng.js';
import { FIXTURES, asTrain, seqLogits, tinyModelDir, writeTrainData } from './fixtures.js';
import { repoPath } from '../repo.js';

const tmp = mkdtempSync(join(tmpdir(), 'floe-export-gguf-'));
const seed = (Math.random() * 2 ** 32) >>> 0;
const rng = new Rng(seed);
const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx

function randomAdapter(cfg: LoadedModel['config']): LoraAdapter {
  const ad = initLora(cfg, { rank: 3, alpha: 6, targets: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'], rslora: false, dropout: 0 }, () => rng.next());
  for (const lay of ad.layers) for (const lin of Object.values(lay)) for (let i = 0; i < lin!.b.length; i++) lin!.b[i] = (rng.next() - 0.5) * 0.2;
  return ad;
}

function logits(m: LoadedModel, ids: number[]): Float32Array {
  return seqLogits(LlamaModel.fromTensors(m.config, m.tensors, referenceBackend, m.ropeFreqFactors), ids);
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

describe(`HF export from a GGUF base (seed ${seed})`, () => {
  it('llama3 rope scaling recovered from rope_freqs factors gives the GGUF inverse frequencies', () => {
    const cases = [
      { headDim: 128, ropeTheta: 500000, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 }, // Llama 3.1
      { headDim: 64, ropeTheta: 500000, factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 }, // Llama 3.2
      { headDim: 24, ropeTheta: 500000, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
    ];
    for (let k = 0; k < 20; k++) {
      const low = 0.5 + 2 * rng.next();
      cases.push({ headDim: 2 * (8 + Math.floor(rng.next() * 60)), ropeTheta: [10000, 500000, 1e6][k % 3]!, factor: 2 + 30 * rng.next(),
        lowFreqFactor: low, highFreqFactor: low + 0.5 + 6 * rng.next(), originalMaxPositionEmbeddings: 32 + Math.floor(rng.next() * 16384) });
    }
    for (const c of cases) {
      const { headDim, ropeTheta, ...s } = c;
      const cfg = { headDim, ropeTheta, ropeScaling: { type: 'llama3' as const, ...s } };
      const factors = llama3RopeFactors(cfg);
      if (factors.every((f) => f === 1)) continue;
      const fitted = llama3ScalingFromFactors(cfg, factors, 'x.gguf');
      // what the GGUF path computes (base inv_freq / factor) vs what an HF config with the fitted scaling computes
      const base = ropeInvFreq({ headDim, ropeTheta, ropeScaling: null });
      const hf = ropeInvFreq({ headDim, ropeTheta, ropeScaling: fitted });
      // transformers' float32 formula loses up to ~1e-5 where smooth is near 0 (orig/wavelen - low_freq_factor
      // cancels), with the true parameters too (seed 3899739691: 1.23e-5 at one index): the fit may miss the GGUF
      // value by 1e-5 more than the parameters that made the factors do
      const truth = ropeInvFreq(cfg);
      for (let i = 0; i < base.length; i++) {
        const want = base[i]! / factors[i]!;
        const slack = Math.abs(truth[i]! - want);
        assert.ok(Math.abs(hf[i]! - want) <= 1e-5 * want + slack, `${JSON.stringify(c)}: inv_freq ${i}: ${hf[i]} vs ${want}, true parameters ${truth[i]} (fitted ${JSON.stringify(fitted)})`);
      }
    }
    const l31 = { type: 'llama3' as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
    const f31 = llama3RopeFactors({ headDim: 128, ropeTheta: 500000, ropeScaling: l31 });
    assert.deepEqual(llama3ScalingFromFactors({ headDim: 128, ropeTheta: 500000 }, f31, 'x.gguf'), l31, "Llama 3.1's parameters come back as written");
    const cfg = { headDim: 16, ropeTheta: 10000 };
    assert.throws(() => llama3ScalingFromFactors(cfg, Float32Array.from({ length: 8 }, (_, i) => 8 - i), 'm.gguf'), /m\.gguf: rope_freqs\.weight \(8, 7, .*\) is not llama3 rope scaling/);
    assert.throws(() => llama3ScalingFromFactors(cfg, new Float32Array(6).fill(2), 'm.gguf'), /rope_freqs\.weight has 6 factors, head dim 16 needs 8/);
  });

  it('merge from a GGUF base (byte-level BPE, llama3 rope): tokenizer, chat template, EOS and logits as from the HF dir it came from', async () => {
    const hfDir = tinyModelDir('llama3_rope_parameters_f32');
    const hf = await loadModel(hfDir);
    const gguf = join(tmp, 'llama3.gguf');
    await hfToGguf(hf, gguf, 'f32');
    const g = await loadModel(gguf);
    assert.ok(g.ropeFreqFactors && g.config.ropeScaling === null, 'the GGUF carries llama3 scaling only as rope_freqs.weight');
    const ad = randomAdapter(hf.config);
    const fromHf = join(tmp, 'merged-hf'), fromGguf = join(tmp, 'merged-gguf');
    writeHfModel(fromHf, hf.config, hf, mergeAdapter(hf.config, hf.tensors, ad), 'f32');
    writeHfModel(fromGguf, g.config, g, mergeAdapter(g.config, g.tensors, ad), 'f32');
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) assert.ok(existsSync(join(fromGguf, f)), f);

    const [a, b] = [await loadModel(fromHf), await loadModel(fromGguf)];
    assert.equal(b.config.ropeScaling?.type, 'llama3');
    const ids = Array.from({ length: 40 }, () => 3 + Math.floor(rng.next() * 250));
    const d = maxDiff(logits(a, ids), logits(b, ids));
    assert.ok(d < 1e-4, `logits of the GGUF-made merge vs the HF-made one: max |Δ| ${d}`);

    const [ta, tb, tg] = [(await loadTokenizer(fromHf))!, (await loadTokenizer(fromGguf))!, tokenizerFromGguf(g.ggufMetadata!)!];
    for (const text of ['the cat sat on a mat.', 'Q: in the hat?\n\n  and the dog ran there', `${rng.next()} x`]) {
      assert.deepEqual(tb.encode(text), ta.encode(text), text);
      assert.deepEqual(tb.encode(text), tg.encode(text), text);
    }
    assert.equal(tb.bosId, ta.bosId);
    assert.deepEqual(tb.eosIds, tg.eosIds);
    const msgs = [{ role: 'user' as const, content: 'hi' }, { role: 'assistant' as const, content: 'there' }];
    const [ca, cb] = [(await loadChatTemplate(fromHf))!, (await loadChatTemplate(fromGguf))!];
    assert.equal(cb.render(msgs), ca.render(msgs));
  });

  it('floe merge from a SentencePiece GGUF writes a tokenizer that reads plain text as the GGUF does', async () => {
    const gguf = join(FIXTURES, 'spm', 'spm-llama.gguf');
    const g = await loadModel(gguf);
    const adDir = join(tmp, 'spm-adapter');
    writePeftAdapter(adDir, randomAdapter(g.config), gguf);
    const out = join(tmp, 'spm-merged');
    const r = spawnSync(process.execPath, [BIN, 'merge', '--model', gguf, '--adapter', adDir, '--out', out], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const tok = (await loadTokenizer(out))!, tg = tokenizerFromGguf(g.ggufMetadata!)!;
    assert.equal(tok.vocabSize, tg.vocabSize);
    for (const text of ['Hello world', 'The quick brown fox.\nJumps over 12 dogs', 'naïve café']) {
      assert.deepEqual(tok.encode(text), tg.encode(text), text);
    }
    const gen = JSON.parse(readFileSync(join(out, 'generation_config.json'), 'utf8'));
    assert.deepEqual([gen.eos_token_id].flat(), tg.eosIds);
  });

  it('finetune --full from a GGUF base writes a model dir that has the tokenizer and rope scaling', async () => {
    const hf = await loadModel(tinyModelDir('llama3_rope_parameters_f32'));
    const gguf = join(tmp, 'full.gguf');
    await hfToGguf(hf, gguf, 'f32');
    const s = await finetune({ model: gguf, data: writeTrainData(tmp, 6), out: join(tmp, 'full-run'), backendImpl: asTrain(referenceBackend), full: true, lr: 1e-3, maxSteps: 1, batchSize: 2, seed: 3 });
    assert.ok(existsSync(join(s.output, 'tokenizer.json')));
    const m = await loadModel(s.output);
    assert.equal(m.config.ropeScaling?.type, 'llama3');
    assert.ok((await loadChatTemplate(s.output)) !== null, 'the chat template came along');
  });
});
