// PEFT adapters: round trip, key names and shapes, foreign layouts (.default keys, bf16), errors; merge equals
// base + adapter; generate --adapter path (wrapped matmul) equals the merged model; step 0 of LoRA equals the base.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { referenceBackend } from '../../src/backend/reference.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { loadModel } from '../../src/formats/load.js';
import { peftKey, writePeftAdapter } from '../../src/formats/peft.js';
import { applyAdapter, readPeftAdapter } from '../../src/model/adapter.js';
import { readSafetensorsSync, writeSafetensors } from '../../src/formats/safetensors.js';
import { LlamaModel } from '../../src/model/llama.js';
import { LlamaTrainModel } from '../../src/model/llama-train.js';
import { initLora, type LoraAdapter, type LoraTarget } from '../../src/model/lora.js';
import { mergeAdapter, writeHfModel } from '../../src/train/export.js';
import { packSamples } from '../../src/train/data.js';
import { Rng } from '../../src/train/rng.js';
import { encodeBf16 } from '../../src/tensor/codecs.js';
import { FIXTURES, asTrain, assertClose, seqLogits, trainBackends } from './fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'floe-peft-'));
const seed = (Math.random() * 2 ** 32) >>> 0;

/** An adapter with random A and B (B non-zero so it changes the model). */
function randomAdapter(cfg: Parameters<typeof initLora>[0], targets: readonly LoraTarget[] = ['q', 'v', 'down', 'gate'], rank = 3): LoraAdapter {
  const r = new Rng(seed);
  const ad = initLora(cfg, { rank, alpha: 6, targets: [...targets], rslora: false, dropout: 0 }, () => r.next());
  for (const lay of ad.layers) for (const lin of Object.values(lay)) for (let i = 0; i < lin!.b.length; i++) lin!.b[i] = (r.next() - 0.5) * 0.2;
  return ad;
}

const logits = seqLogits;

describe(`PEFT adapters (seed ${seed})`, () => {
  it('write/read round trip with PEFT key names, shapes and config', async () => {
    const base = await loadModel(join(FIXTURES, 'models', 'gqa_f32'));
    const ad = randomAdapter(base.config);
    const dir = join(tmp, 'rt');
    writePeftAdapter(dir, ad, 'some/base');
    const st = readSafetensorsSync(join(dir, 'adapter_model.safetensors'));
    assert.deepEqual(st.tensors.get('base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight')!.shape, [3, 64]);
    assert.deepEqual(st.tensors.get('base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight')!.shape, [64, 3]);
    assert.deepEqual(st.tensors.get('base_model.model.model.layers.0.mlp.down_proj.lora_A.weight')!.shape, [3, 96]);
    assert.equal(st.tensors.size, 2 * 2 * 4);
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.r, 3);
    assert.equal(cfg.lora_alpha, 6);
    assert.deepEqual([...cfg.target_modules].sort(), ['down_proj', 'gate_proj', 'q_proj', 'v_proj']);
    const back = readPeftAdapter(dir, base.config);
    assert.deepEqual(back.config, { ...ad.config, targets: ['q', 'v', 'gate', 'down'] });
    ad.layers.forEach((lay, l) => {
      for (const [t, lin] of Object.entries(lay)) {
        assert.deepEqual(back.layers[l]![t as 'q']!.a, lin!.a);
        assert.deepEqual(back.layers[l]![t as 'q']!.b, lin!.b);
      }
    });
  });

  it('a directory without an adapter is an error naming the file; a finetune run directory points at its final adapter', async () => {
    const base = await loadModel(join(FIXTURES, 'models', 'gqa_f32'));
    const run = join(tmp, 'run');
    assert.throws(() => readPeftAdapter(run, base.config), (e: Error) => e.message.includes(join(run, 'adapter_config.json')) && /cannot read adapter config/.test(e.message) && !e.message.includes('fine-tuning run'));
    writePeftAdapter(join(run, 'final'), randomAdapter(base.config, ['q'], 2));
    assert.throws(() => readPeftAdapter(run, base.config), (e: Error) => e.message.endsWith(`${run} is a fine-tuning run: its adapter is ${join(run, 'final')}`));
    assert.deepEqual(readPeftAdapter(join(run, 'final'), base.config).config.targets, ['q']);
  });

  it('reads foreign layouts (".default" keys, bf16 tensors) and rejects wrong shapes / keys with names', async () => {
    const base = await loadModel(join(FIXTURES, 'models', 'gqa_f32'));
    const dir = join(tmp, 'foreign');
    const A = new Float32Array(2 * 64).map((_, i) => i / 100), B = new Float32Array(32 * 2).map((_, i) => -i / 50);
    const write = (tensors: Parameters<typeof writeSafetensors>[1]) => {
      writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors);
    };
    writePeftAdapter(dir, randomAdapter(base.config, ['k'], 2)); // config.json
    write({
      'base_model.model.model.layers.0.self_attn.k_proj.lora_A.default.weight': { dtype: 'BF16', shape: [2, 64], data: encodeBf16(A) },
      'base_model.model.model.layers.0.self_attn.k_proj.lora_B.default.weight': { dtype: 'F32', shape: [32, 2], data: B },
    });
    const ad = readPeftAdapter(dir, base.config);
    assert.deepEqual(ad.config.targets, ['k']);
    assert.equal(ad.layers[1]!.k, undefined);
    assertClose(ad.layers[0]!.k!.a, A, 'bf16 A', 1e-2, 0);
    assert.deepEqual(ad.layers[0]!.k!.b, B);
    write({ [peftKey(0, 'k', 'A')]: { dtype: 'F32', shape: [2, 63], data: new Float32Array(126) }, [peftKey(0, 'k', 'B')]: { dtype: 'F32', shape: [32, 2], data: B } });
    assert.throws(() => readPeftAdapter(dir, base.config), /"base_model\.model\.model\.layers\.0\.self_attn\.k_proj\.lora_A\.weight" has shape \[2, 63\], expected \[2, 64\]/);
    write({ [peftKey(0, 'k', 'A')]: { dtype: 'F32', shape: [2, 64], data: A } });
    assert.throws(() => readPeftAdapter(dir, base.config), /layer 0\.k has lora_A but no lora_B/);
    write({ 'base_model.model.lm_head.lora_A.weight': { dtype: 'F32', shape: [2, 64], data: A } });
    assert.throws(() => readPeftAdapter(dir, base.config), /unexpected tensor "base_model\.model\.lm_head\.lora_A\.weight"/);
    write({ [peftKey(5, 'k', 'A')]: { dtype: 'F32', shape: [2, 64], data: A } });
    assert.throws(() => readPeftAdapter(dir, base.config), /layer 5, the model has 2 layers/);
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, use_dora: true }));
    assert.throws(() => readPeftAdapter(dir, base.config), /DoRA/);
  });

  it('refuses a factor holding NaN or Inf (f32, bf16), naming the tensor and the element', async () => {
    const base = await loadModel(join(FIXTURES, 'models', 'gqa_f32'));
    const dir = join(tmp, 'nonfinite');
    writePeftAdapter(dir, randomAdapter(base.config, ['k'], 2));
    const A = new Float32Array(2 * 64).fill(0.01), B = new Float32Array(32 * 2).fill(0.02);
    const f = join(dir, 'adapter_model.safetensors');
    for (const [which, at, v, dtype] of [['A', 70, NaN, 'F32'], ['B', 5, Infinity, 'F32'], ['B', 63, -Infinity, 'BF16']] as const) {
      const a = A.slice(), b = B.slice();
      (which === 'A' ? a : b)[at] = v;
      writeSafetensors(f, {
        [peftKey(0, 'k', 'A')]: { dtype: 'F32', shape: [2, 64], data: a },
        [peftKey(0, 'k', 'B')]: dtype === 'BF16' ? { dtype, shape: [32, 2], data: encodeBf16(b) } : { dtype, shape: [32, 2], data: b },
      });
      const C = which === 'A' ? 64 : 2;
      const where = `[${Math.floor(at / C)}, ${at % C}]`;
      assert.throws(() => readPeftAdapter(dir, base.config), (e: Error) => e.message.startsWith(f)
        && e.message.includes(`"${peftKey(0, 'k', which)}" holds ${v} at ${where}; LoRA factors must be finite`), `${which} ${v}`);
    }
  });

  it('refuses PEFT features beyond W + s·BA (modules_to_save, bias, lora_bias, layer_replication, another task_type) instead of ignoring them', async () => {
    const base = await loadModel(join(FIXTURES, 'models', 'gqa_f32'));
    const dir = join(tmp, 'features');
    writePeftAdapter(dir, randomAdapter(base.config, ['q'], 2));
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    const withCfg = (patch: Record<string, unknown>) => writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, ...patch }));
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ modules_to_save: ['lm_head'] }, /modules_to_save .*lm_head.* is not supported/],
      [{ bias: 'all' }, /bias "all" is not supported/],
      [{ bias: 'lora_only' }, /bias "lora_only" is not supported/],
      [{ lora_bias: true }, /lora_bias .* is not supported/],
      [{ layer_replication: [[0, 2], [1, 2]] }, /layer_replication .* is not supported/],
      [{ use_rslora: 'true' }, /"use_rslora" must be true or false/],
      [{ r: '2' }, /"r" must be an integer >= 1, got "2"/],
      [{ task_type: 'SEQ_CLS' }, /task_type "SEQ_CLS" is not supported/],
    ];
    for (const [patch, re] of cases) {
      withCfg(patch);
      assert.throws(() => readPeftAdapter(dir, base.config), (e: Error) => re.test(e.message) && e.message.includes('adapter_config.json'), JSON.stringify(patch));
    }
    withCfg({ modules_to_save: null, bias: 'none', layer_replication: null, task_type: null, target_modules: '.*\\.q_proj$' }); // PEFT's own defaults and a regex: read
    assert.deepEqual(readPeftAdapter(dir, base.config).config.targets, ['q']);
  });

  it('refuses a factor that target_modules / layers_to_transform do not select (PEFT would not load it), naming both files', async () => {
    const base = await loadModel(join(FIXTURES, 'models', 'gqa_f32'));
    const dir = join(tmp, 'targets');
    writePeftAdapter(dir, randomAdapter(base.config, ['q', 'down'], 2));
    const cfgFile = join(dir, 'adapter_config.json');
    const cfg = JSON.parse(readFileSync(cfgFile, 'utf8'));
    const withCfg = (patch: Record<string, unknown>) => writeFileSync(cfgFile, JSON.stringify({ ...cfg, ...patch }));
    const refused: [Record<string, unknown>, string][] = [
      [{ target_modules: ['q_proj'] }, 'target_modules ["q_proj"]'], // down_proj's factors were applied all the same
      [{ target_modules: ['c_attn', 'c_proj'] }, 'target_modules ["c_attn","c_proj"]'], // modules this model does not have
      [{ target_modules: '.*\\.q_proj' }, 'target_modules ".*\\\\.q_proj"'],
      [{ target_modules: null }, "target_modules [\"q_proj\",\"v_proj\"] (PEFT's default for llama: the config has none)"],
      [{ layers_to_transform: [1] }, 'layers_to_transform [1]'],
    ];
    for (const [patch, why] of refused) {
      withCfg(patch);
      assert.throws(() => readPeftAdapter(dir, base.config), (e: Error) => e.message.startsWith(join(dir, 'adapter_model.safetensors'))
        && e.message.includes(`, which ${cfgFile} does not select (${why}); PEFT would not load this factor`), JSON.stringify(patch));
    }
    withCfg({ target_modules: 7 });
    assert.throws(() => readPeftAdapter(dir, base.config), (e: Error) => e.message.startsWith(`${cfgFile}: "target_modules" must be a module name pattern or a list of module names, got 7`));
    // what PEFT selects the same modules with: suffixes, full paths, a regex, all-linear, every layer listed
    for (const patch of [{ target_modules: ['down_proj', 'q_proj', 'lm_head'] }, { target_modules: ['mlp.down_proj', 'self_attn.q_proj'] }, { target_modules: '.*\\.(q_proj|down_proj)' },
      { target_modules: 'all-linear' }, { layers_to_transform: [0, 1] }]) {
      withCfg(patch);
      assert.deepEqual(readPeftAdapter(dir, base.config).config.targets, ['q', 'down'], JSON.stringify(patch));
    }
  });

  it('a config without r / lora_alpha takes PEFT LoraConfig defaults (8, 8), not alpha = r', async () => {
    const base = await loadModel(join(FIXTURES, 'models', 'gqa_f32'));
    const dir = join(tmp, 'defaults');
    writePeftAdapter(dir, randomAdapter(base.config, ['v'], 8));
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    delete cfg.r; delete cfg.lora_alpha;
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(cfg));
    const c = readPeftAdapter(dir, base.config).config;
    assert.equal(c.rank, 8);
    assert.equal(c.alpha, 8, 'peft.LoraConfig.lora_alpha defaults to 8');
    cfg.r = 4; // rank 4 tensors would not fit; alpha still 8 at another r
    writePeftAdapter(dir, randomAdapter(base.config, ['v'], 4));
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(cfg));
    assert.deepEqual([readPeftAdapter(dir, base.config).config.rank, readPeftAdapter(dir, base.config).config.alpha], [4, 8]);
  });

  for (const model of ['gqa_f32', 'bf16', 'fp8_block']) {
    it(`${model}: merged model logits == base with the adapter applied (generate --adapter path)`, async () => {
      const base = await loadModel(join(FIXTURES, 'models', model));
      const ad = randomAdapter(base.config, ['q', 'k', 'v', 'o', 'gate', 'up', 'down']);
      const dir = join(tmp, `ad-${model}`);
      writePeftAdapter(dir, ad);
      const out = join(tmp, `merged-${model}`);
      writeHfModel(out, base.config, base, mergeAdapter(base.config, base.tensors, ad), 'f32');
      const merged = await loadModel(out);
      const ids = [1, 17, 99, 4, 200, 31, 7, 64, 12];
      const plain = new LlamaModel(base.config, LlamaModel.fromTensors(base.config, base.tensors, referenceBackend).weights, referenceBackend);
      const withAd = applyAdapter(plain, dir);
      const lm = logits(LlamaModel.fromTensors(merged.config, merged.tensors, referenceBackend), ids);
      const la = logits(withAd, ids);
      const lb = logits(plain, ids);
      assertClose(la, lm, `${model} adapter vs merged`, 1e-4, 1e-5);
      let diff = 0;
      for (let i = 0; i < la.length; i++) diff = Math.max(diff, Math.abs(la[i]! - lb[i]!));
      assert.ok(diff > 1e-2, `the adapter changes the logits (max |Δ| ${diff})`);
      // the native backend on weights repacked as openModel repacks them, where q/k/v and gate/up go through one
      // matmulMany call: the adapter applies there too (f32 as the reference to 1e-4; bf16 / fp8 round x to bf16)
      const nb = loadNativeBackend();
      if (!nb) return;
      const tensors = new Map(base.tensors);
      nb.prepareWeights?.(tensors);
      const fused0 = nativeCounters()['matmul_many.fused.avx512'] ?? 0;
      const ln = logits(applyAdapter(LlamaModel.fromTensors(base.config, tensors, nb), dir), ids);
      if (nb.prepareWeights && loadAddon()?.supportedIsa() === 'avx512') {
        assert.ok((nativeCounters()['matmul_many.fused.avx512'] ?? 0) > fused0, 'the fused q/k/v and gate/up call ran');
      }
      if (model === 'gqa_f32') assertClose(ln, la, `${model} native adapter vs reference adapter`, 1e-4, 1e-5);
      else {
        // x rounded to bf16 moves the logits a little; an adapter left out of some matmuls moves them by ~diff
        let dn = 0;
        for (let i = 0; i < la.length; i++) dn = Math.max(dn, Math.abs(ln[i]! - la[i]!));
        assert.ok(dn < diff / 4, `${model} native adapter vs reference adapter: max |Δ| ${dn}, the adapter's own effect ${diff}`);
      }
    });
  }
});

describe('LoRA step 0', () => {
  for (const [bname, be] of trainBackends()) {
    it(`${bname}: a fresh adapter (B = 0) gives exactly the base model's loss`, async () => {
      const base = await loadModel(join(FIXTURES, 'models', 'gqa_f32'));
      const r = new Rng(seed);
      const ad = initLora(base.config, { rank: 4, alpha: 8, targets: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'], rslora: true, dropout: 0 }, () => r.next());
      const ids = Array.from({ length: 13 }, () => 3 + r.int(250));
      const batch = packSamples([{ tokens: Int32Array.from(ids), mask: new Uint8Array(ids.length).fill(1), line: 1 }]);
      const tm = LlamaTrainModel.fromTensors(base.config, base.tensors, asTrain(be), { adapter: ad, full: false, checkpointActivations: false });
      const got = tm.evalLoss(batch);
      // base: log-softmax of the inference model's logits
      const lg = logits(LlamaModel.fromTensors(base.config, base.tensors, be), ids);
      be.logSoftmax(lg, lg, ids.length);
      let want = 0;
      for (let t = 0; t + 1 < ids.length; t++) want -= lg[t * 256 + ids[t + 1]!]!;
      assert.equal(got.counted, ids.length - 1);
      assert.ok(Math.abs(got.lossSum - want) < 1e-4 * Math.abs(want), `${got.lossSum} vs ${want}`);
    });
  }
});
