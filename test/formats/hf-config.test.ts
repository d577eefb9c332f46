// HF config.json parsing: defaults, rope variants, eos merging, quantization configs, and clear rejections.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseGenerationDefaults, parseHfConfig } from '../../src/formats/hf-config.js';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { loadModel } from '../../src/formats/load.js';
import { tmpDir } from './fixtures.js';
import { repoPath } from '../repo.js';

const F = '/m/config.json';
const base = {
  architectures: ['LlamaForCausalLM'], vocab_size: 128, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 3,
  num_attention_heads: 8, max_position_embeddings: 1024, rms_norm_eps: 1e-5, rope_theta: 500000,
};

test('defaults: head_dim = hidden/heads, kv heads = heads, untied, eos list', () => {
  const { config, quantization } = parseHfConfig({ ...base, eos_token_id: 7, bos_token_id: 1 }, F);
  assert.equal(config.headDim, 8);
  assert.equal(config.numKvHeads, 8);
  assert.equal(config.tieWordEmbeddings, false);
  assert.deepEqual(config.eosTokenIds, [7]);
  assert.equal(config.bosTokenId, 1);
  assert.equal(config.ropeTheta, 500000);
  assert.equal(config.ropeScaling, null);
  assert.equal(quantization, null);
  const c2 = parseHfConfig({ ...base, head_dim: 16, num_key_value_heads: 2, tie_word_embeddings: true, eos_token_id: [5, 6] }, F, { eos_token_id: [6, 9], bos_token_id: 3 }).config;
  assert.equal(c2.headDim, 16);
  assert.equal(c2.numKvHeads, 2);
  assert.equal(c2.tieWordEmbeddings, true);
  assert.deepEqual(c2.eosTokenIds, [5, 6, 9]);
  assert.equal(c2.bosTokenId, 3);
});

test('rope: llama3 via rope_scaling (rope_type or type) and via rope_parameters; linear; default', () => {
  const l3 = { factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
  const want = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
  assert.deepEqual(parseHfConfig({ ...base, rope_scaling: { ...l3, rope_type: 'llama3' } }, F).config.ropeScaling, want);
  assert.deepEqual(parseHfConfig({ ...base, rope_scaling: { ...l3, type: 'llama3' } }, F).config.ropeScaling, want);
  const rp = parseHfConfig({ ...base, rope_theta: undefined, rope_parameters: { ...l3, rope_type: 'llama3', rope_theta: 12345 } }, F).config;
  assert.deepEqual(rp.ropeScaling, want);
  assert.equal(rp.ropeTheta, 12345);
  assert.deepEqual(parseHfConfig({ ...base, rope_scaling: { type: 'linear', factor: 2 } }, F).config.ropeScaling, { type: 'linear', factor: 2 });
  assert.equal(parseHfConfig({ ...base, rope_parameters: { rope_type: 'default', rope_theta: 10000 } }, F).config.ropeScaling, null);
  assert.equal(parseHfConfig({ ...base, rope_scaling: null }, F).config.ropeScaling, null);
  assert.throws(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } }, F), /config\.json: rope_scaling\.rope_type "yarn" is not supported/);
  assert.throws(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } }, F), /missing "rope_scaling\.low_freq_factor"/);
  assert.throws(() => parseHfConfig({ ...base, rope_parameters: { full_attention: { rope_type: 'default', rope_theta: 1 }, sliding_attention: {} } }, F), /rope_parameters holds per-layer-type entries/);
});

test('rejections name the file and the field', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ ...base, architectures: ['MistralForCausalLM'] }, /architectures \["MistralForCausalLM"\] is not supported/],
    [{ ...base, attention_bias: true }, /"attention_bias": true is not supported/],
    [{ ...base, mlp_bias: true }, /"mlp_bias": true is not supported/],
    [{ ...base, hidden_size: undefined }, /missing "hidden_size"/],
    [{ ...base, num_key_value_heads: 3 }, /multiple of num_key_value_heads \(3\)/],
    [{ ...base, hidden_act: 'gelu' }, /hidden_act "gelu"/],
    [{ ...base, quantization_config: { quant_method: 'gptq' } }, /quant_method "gptq" is not supported/],
    [{ ...base, quantization_config: { quant_method: 'compressed-tensors', format: 'pack-quantized' } }, /format "pack-quantized" is not supported/],
  ];
  for (const [j, re] of cases) assert.throws(() => parseHfConfig(j, F), (e: Error) => e.message.startsWith(F) && re.test(e.message), String(re));
});

test('quantization configs: fp8 block size and compressed-tensors strategies', () => {
  assert.deepEqual(parseHfConfig({ ...base, quantization_config: { quant_method: 'fp8', weight_block_size: [128, 128] } }, F).quantization,
    { method: 'fp8', weightBlockSize: [128, 128] });
  const ct = (weights: Record<string, unknown>) => parseHfConfig({
    ...base, quantization_config: { quant_method: 'compressed-tensors', format: 'float-quantized', config_groups: { group_0: { weights, targets: ['Linear'] } } },
  }, F).quantization;
  assert.deepEqual(ct({ num_bits: 8, type: 'float', strategy: 'channel' }), { method: 'compressed-tensors', blockSize: null });
  assert.deepEqual(ct({ num_bits: 8, type: 'float', strategy: 'block', block_structure: [64, 32] }), { method: 'compressed-tensors', blockSize: [64, 32] });
  assert.throws(() => ct({ num_bits: 4, type: 'int', strategy: 'group' }), /num_bits=4/);
});

test('generation_config.json: the sampling keys it sets become defaults (do_sample false = greedy); bad values named', async () => {
  // Llama-3.1-8B-Instruct's generation_config.json
  const llama = { bos_token_id: 128000, do_sample: true, eos_token_id: [128001, 128008, 128009], temperature: 0.6, top_p: 0.9, transformers_version: '4.42.3' };
  // with Llama-3.1-8B's vocab_size: its eos ids 128001.. are past the 128 ids of `base` (refused, below)
  assert.deepEqual(parseHfConfig({ ...base, vocab_size: 128256 }, F, llama).generation, { temperature: 0.6, topP: 0.9 });
  assert.deepEqual(parseHfConfig({ ...base }, F).generation, {});
  assert.deepEqual(parseGenerationDefaults({ top_k: 40, min_p: 0.05, repetition_penalty: 1.1, max_new_tokens: 64, temperature: null }),
    { topK: 40, minP: 0.05, repetitionPenalty: 1.1, maxNewTokens: 64 });
  assert.deepEqual(parseGenerationDefaults({ do_sample: false, temperature: 0.9, top_p: 0.5 }), { temperature: 0, topP: 0.5 });
  const G = '/m/generation_config.json';
  assert.throws(() => parseGenerationDefaults({ temperature: -1 }, G), /\/m\/generation_config\.json: "temperature" must be a number >= 0, got -1/);
  assert.throws(() => parseGenerationDefaults({ top_k: 2.5 }, G), /"top_k" must be an integer >= 0 \(0 = off\), got 2\.5/);
  assert.throws(() => parseGenerationDefaults({ top_p: 0 }, G), /"top_p" must be in \(0, 1\], got 0/);
  assert.throws(() => parseGenerationDefaults({ do_sample: 'yes' }, G), /"do_sample" must be true or false/);
  assert.throws(() => parseGenerationDefaults([1], G), /generation_config\.json: not a JSON object/);
  // the built-in model's file, through loadModel
  const brown = repoPath('models/floe-brown');
  const gen = JSON.parse(readFileSync(join(brown, 'generation_config.json'), 'utf8'));
  const m = await loadModel(brown);
  assert.deepEqual(m.generation, { temperature: gen.temperature, topP: gen.top_p });
  m.dispose();
});

test('an eos_token_id past vocab_size (config.json or generation_config.json) is refused naming the file, the id and vocab_size (was kept: a stop that never fires)', () => {
  const G = '/m/generation_config.json';
  const past = (file: string, id: number, v = 128) =>
    `${file}: eos_token_id ${id} is past the model's vocabulary (vocab_size ${v} in ${F}: ids 0..${v - 1}); generation could never stop on it`;
  // the last id in the vocabulary is an eos like any other
  assert.deepEqual(parseHfConfig({ ...base, eos_token_id: 127 }, F, { eos_token_id: [0, 127] }).config.eosTokenIds, [127, 0]);
  for (const [cfgEos, genEos, file, id] of [
    [128, undefined, F, 128], [[2, 5000], undefined, F, 5000], [2 ** 40, [2], F, 2 ** 40],
    [2, 128, G, 128], [undefined, [1, 2, 200], G, 200],
    [undefined, [128001, 128008, 128009], G, 128001], // Llama-3.1-8B-Instruct's generation_config.json over a 128-id model
  ] as const) {
    assert.throws(() => parseHfConfig({ ...base, eos_token_id: cfgEos }, F, genEos === undefined ? {} : { eos_token_id: genEos }, G),
      (e: Error) => { assert.equal(e.message, past(file, id)); return true; });
  }
  // through readHfConfig, as openModel / loadModel / the server read a directory
  const dir = tmpDir('floe-hf-eos-');
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, vocab_size: 4096, eos_token_id: 2 }));
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, 4096] }));
  assert.throws(() => readHfConfig(dir), (e: Error) => {
    assert.equal(e.message, `${join(dir, 'generation_config.json')}: eos_token_id 4096 is past the model's vocabulary (vocab_size 4096 in ${join(dir, 'config.json')}: ids 0..4095); generation could never stop on it`);
    return true;
  });
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, 4095] }));
  assert.deepEqual(readHfConfig(dir).config.eosTokenIds, [2, 4095]);
});

test('a bos_token_id past vocab_size (config.json, or generation_config.json when config.json has none) is refused naming the file, the id and vocab_size (was kept and written to GGUF)', () => {
  const G = '/m/generation_config.json';
  const past = (file: string, id: number, v = 128) =>
    `${file}: bos_token_id ${id} is past the model's vocabulary (vocab_size ${v} in ${F}: ids 0..${v - 1}); the embedding has no row for it`;
  // the last id is a bos like any other; generation_config.json's bos is not read when config.json has one
  assert.equal(parseHfConfig({ ...base, bos_token_id: 127 }, F).config.bosTokenId, 127);
  assert.equal(parseHfConfig({ ...base }, F, { bos_token_id: 127 }, G).config.bosTokenId, 127);
  assert.equal(parseHfConfig({ ...base, bos_token_id: 1 }, F, { bos_token_id: 5000 }, G).config.bosTokenId, 1);
  for (const [cfgBos, genBos, file, id] of [
    [128, undefined, F, 128], [[5000, 1], undefined, F, 5000], [2 ** 40, 1, F, 2 ** 40],
    [undefined, 128, G, 128], [null, [128000], G, 128000], // Llama-3.1-8B's bos over a 128-id model
  ] as const) {
    assert.throws(() => parseHfConfig({ ...base, bos_token_id: cfgBos }, F, genBos === undefined ? {} : { bos_token_id: genBos }, G),
      (e: Error) => { assert.equal(e.message, past(file, id)); return true; });
  }
  // through readHfConfig, as openModel / loadModel / the server read a directory
  const dir = tmpDir('floe-hf-bos-');
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, vocab_size: 4096, eos_token_id: 2 }));
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 4096, eos_token_id: 2 }));
  assert.throws(() => readHfConfig(dir), (e: Error) => {
    assert.equal(e.message, `${join(dir, 'generation_config.json')}: bos_token_id 4096 is past the model's vocabulary (vocab_size 4096 in ${join(dir, 'config.json')}: ids 0..4095); the embedding has no row for it`);
    return true;
  });
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 4095, eos_token_id: 2 }));
  assert.equal(readHfConfig(dir).config.bosTokenId, 4095);
});
