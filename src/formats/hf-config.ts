// HF config.json (+ generation_config.json) -> LlamaConfig, plus the FP8 quantization scheme if any.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LlamaConfig, RopeScaling } from './llama-config.js';
import { showJson } from './json-show.js';

/** How FP8 weights were stored; scales are attached per tensor in load.ts. */
export type Fp8Quantization =
  | { readonly method: 'fp8'; readonly weightBlockSize: readonly [number, number] | null } // weight_scale_inv
  | { readonly method: 'compressed-tensors'; readonly blockSize: readonly [number, number] | null }; // weight_scale

/**
 * Sampling defaults from generation_config.json, only the keys it sets (vLLM's get_diff_sampling_param).
 * A caller's explicit value wins; `do_sample: false` makes the default greedy (temperature 0), as in HF.
 */
export interface GenerationDefaults {
  readonly temperature?: number;
  readonly topK?: number;
  readonly topP?: number;
  readonly minP?: number;
  readonly repetitionPenalty?: number;
  readonly maxNewTokens?: number; // default max tokens
}

export interface HfConfig {
  readonly config: LlamaConfig;
  readonly quantization: Fp8Quantization | null;
  readonly torchDtype: string | null;
  readonly generation: GenerationDefaults;
}

type Json = Record<string, unknown>;

function fail(file: string, msg: string): never {
  throw new Error(`${file}: ${msg}`);
}

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function posInt(j: Json, key: string, file: string, dflt?: number): number {
  const v = j[key] ?? dflt;
  if (v === undefined) fail(file, `missing "${key}"`);
  if (!Number.isSafeInteger(v) || (v as number) <= 0) fail(file, `"${key}" must be a positive integer, got ${showJson(v)}`);
  return v as number;
}

function posNum(j: Json, key: string, file: string, dflt?: number, where = ''): number {
  const v = j[key] ?? dflt;
  if (v === undefined) fail(file, `missing "${where}${key}"`);
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(file, `"${where}${key}" must be a positive number, got ${showJson(v)}`);
  return v;
}

function tokenIds(v: unknown, key: string, file: string): number[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) if (!Number.isSafeInteger(id) || (id as number) < 0) fail(file, `"${key}" must be a token id or a list of them, got ${showJson(v)}`);
  return list as number[];
}

/** rope_parameters (newer transformers) or rope_scaling + rope_theta -> theta and scaling. */
function parseRope(j: Json, file: string): { theta: number; scaling: RopeScaling | null } {
  let params: Json | null = null;
  let where = 'rope_scaling.';
  let theta: number;
  if (isObj(j.rope_parameters)) {
    params = j.rope_parameters;
    where = 'rope_parameters.';
    // Per-attention-type dictionaries (e.g. {"full_attention": {...}}) are not Llama; reject below via rope_type.
    theta = posNum(params, 'rope_theta', file, typeof j.rope_theta === 'number' ? j.rope_theta : 10000, where);
  } else {
    theta = posNum(j, 'rope_theta', file, 10000);
    if (j.rope_scaling !== undefined && j.rope_scaling !== null) {
      if (!isObj(j.rope_scaling)) fail(file, `"rope_scaling" must be an object or null, got ${showJson(j.rope_scaling)}`);
      params = j.rope_scaling;
    }
  }
  if (!params) return { theta, scaling: null };
  if (params.rope_type === undefined && params.type === undefined && Object.values(params).some(isObj)) {
    fail(file, `${where.slice(0, -1)} holds per-layer-type entries (${Object.keys(params).join(', ')}); Llama has one rope for all layers`);
  }
  const type = params.rope_type ?? params.type ?? 'default';
  switch (type) {
    case 'default':
      return { theta, scaling: null };
    case 'linear':
      return { theta, scaling: { type: 'linear', factor: posNum(params, 'factor', file, undefined, where) } };
    case 'llama3': {
      const lowFreqFactor = posNum(params, 'low_freq_factor', file, undefined, where);
      const highFreqFactor = posNum(params, 'high_freq_factor', file, undefined, where);
      if (!(highFreqFactor > lowFreqFactor)) fail(file, `${where}high_freq_factor (${highFreqFactor}) must exceed low_freq_factor (${lowFreqFactor})`);
      return {
        theta,
        scaling: {
          type: 'llama3',
          factor: posNum(params, 'factor', file, undefined, where),
          lowFreqFactor,
          highFreqFactor,
          originalMaxPositionEmbeddings: posNum(params, 'original_max_position_embeddings', file, undefined, where),
        },
      };
    }
    default:
      fail(file, `${where}rope_type ${showJson(type)} is not supported (supported: default, linear, llama3)`);
  }
}

function parseQuantization(j: Json, file: string): Fp8Quantization | null {
  const q = j.quantization_config;
  if (q === undefined || q === null) return null;
  if (!isObj(q)) fail(file, '"quantization_config" must be an object');
  const method = q.quant_method;
  const pair = (v: unknown, key: string): [number, number] | null => {
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => Number.isSafeInteger(x) && x > 0)) {
      fail(file, `quantization_config ${key} must be [rows, cols] positive integers, got ${showJson(v)}`);
    }
    return [v[0] as number, v[1] as number];
  };
  if (method === 'fp8') {
    const fmt = q.fmt ?? 'e4m3';
    if (fmt !== 'e4m3') fail(file, `quantization_config.fmt ${showJson(fmt)} is not supported (only e4m3)`);
    return { method: 'fp8', weightBlockSize: pair(q.weight_block_size, 'weight_block_size') };
  }
  if (method === 'compressed-tensors') {
    const format = q.format;
    if (format !== 'float-quantized' && format !== 'naive-quantized') {
      fail(file, `compressed-tensors format ${showJson(format)} is not supported (only float-quantized / naive-quantized FP8)`);
    }
    let blockSize: [number, number] | null = null;
    const groups = isObj(q.config_groups) ? q.config_groups : {};
    for (const [g, group] of Object.entries(groups)) {
      const w = isObj(group) && isObj(group.weights) ? group.weights : null;
      if (!w) continue;
      if (w.num_bits !== 8 || (w.type !== undefined && w.type !== 'float')) {
        fail(file, `compressed-tensors group "${g}": weights num_bits=${showJson(w.num_bits)} type=${showJson(w.type)} not supported (only 8-bit float)`);
      }
      if (w.strategy === 'block') blockSize = pair(w.block_structure, `config_groups.${g}.weights.block_structure`);
      else if (w.strategy !== undefined && w.strategy !== 'tensor' && w.strategy !== 'channel') {
        fail(file, `compressed-tensors group "${g}": strategy ${showJson(w.strategy)} not supported (tensor, channel, block)`);
      }
    }
    return { method: 'compressed-tensors', blockSize };
  }
  fail(file, `quantization_config.quant_method ${showJson(method)} is not supported (supported: fp8, compressed-tensors)`);
}

/** generation_config.json's sampling keys -> GenerationDefaults; throws naming the file, key and the range expected. */
export function parseGenerationDefaults(g: unknown, file = 'generation_config.json'): GenerationDefaults {
  if (g === undefined || g === null) return {};
  if (!isObj(g)) fail(file, 'not a JSON object');
  const out: { -readonly [K in keyof GenerationDefaults]: number } = {};
  const take = (key: string, field: keyof GenerationDefaults, ok: (v: number) => boolean, expected: string) => {
    const v = g[key];
    if (v === undefined || v === null) return;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) fail(file, `"${key}" must be ${expected}, got ${showJson(v)}`);
    out[field] = v;
  };
  take('temperature', 'temperature', (v) => v >= 0, 'a number >= 0');
  take('top_k', 'topK', (v) => Number.isInteger(v) && v >= 0, 'an integer >= 0 (0 = off)');
  take('top_p', 'topP', (v) => v > 0 && v <= 1, 'in (0, 1]');
  take('min_p', 'minP', (v) => v >= 0 && v <= 1, 'in [0, 1]');
  take('repetition_penalty', 'repetitionPenalty', (v) => v > 0, 'a number > 0');
  take('max_new_tokens', 'maxNewTokens', (v) => Number.isInteger(v) && v >= 1, 'an integer >= 1');
  if (g.do_sample !== undefined && typeof g.do_sample !== 'boolean') fail(file, `"do_sample" must be true or false, got ${showJson(g.do_sample)}`);
  if (g.do_sample === false) out.temperature = 0;
  return out;
}

/** Parses config.json's object (and generation_config.json's, whose eos ids are merged in). */
export function parseHfConfig(j: unknown, file: string, generation?: unknown, generationFile = 'generation_config.json'): HfConfig {
  if (!isObj(j)) fail(file, 'config is not a JSON object');
  const arch = j.architectures;
  if (arch !== undefined) {
    if (!Array.isArray(arch) || !arch.includes('LlamaForCausalLM')) {
      fail(file, `architectures ${showJson(arch)} is not supported (only LlamaForCausalLM)`);
    }
  } else if (j.model_type !== 'llama') {
    fail(file, `no "architectures" and model_type ${showJson(j.model_type)} is not "llama"`);
  }
  for (const key of ['attention_bias', 'mlp_bias'] as const) {
    if (j[key] === true) fail(file, `"${key}": true is not supported (floe's Llama has no bias terms)`);
  }
  const act = j.hidden_act ?? 'silu';
  if (act !== 'silu') fail(file, `hidden_act ${showJson(act)} is not supported (only silu)`);

  const hiddenSize = posInt(j, 'hidden_size', file);
  const numHeads = posInt(j, 'num_attention_heads', file);
  const numKvHeads = posInt(j, 'num_key_value_heads', file, numHeads);
  if (numHeads % numKvHeads !== 0) fail(file, `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  let headDim: number;
  if (j.head_dim === undefined || j.head_dim === null) {
    if (hiddenSize % numHeads !== 0) fail(file, `hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numHeads}) and no head_dim is given`);
    headDim = hiddenSize / numHeads;
  } else {
    headDim = posInt(j, 'head_dim', file);
  }
  if (headDim % 2 !== 0) fail(file, `head_dim must be even for RoPE, got ${headDim}`);
  const rope = parseRope(j, file);

  const vocabSize = posInt(j, 'vocab_size', file);
  // The head's logits cover ids 0..vocab_size-1: an EOS id past them is never sampled, so that stop never fires.
  const inVocab = (ids: number[], from: string): number[] => {
    for (const id of ids) {
      if (id >= vocabSize) fail(from, `eos_token_id ${id} is past the model's vocabulary (vocab_size ${vocabSize} in ${file}: ids 0..${vocabSize - 1}); generation could never stop on it`);
    }
    return ids;
  };
  const eos = inVocab(tokenIds(j.eos_token_id, 'eos_token_id', file), file);
  let bos = tokenIds(j.bos_token_id, 'bos_token_id', file)[0] ?? null;
  let bosFrom = file;
  if (generation !== undefined && generation !== null) {
    if (!isObj(generation)) fail(generationFile, 'not a JSON object');
    for (const id of inVocab(tokenIds(generation.eos_token_id, 'eos_token_id', generationFile), generationFile)) if (!eos.includes(id)) eos.push(id);
    if (bos === null) {
      bos = tokenIds(generation.bos_token_id, 'bos_token_id', generationFile)[0] ?? null;
      bosFrom = generationFile;
    }
  }
  // The BOS id is written to GGUF files (tokenizer.ggml.bos_token_id) and starts prompts: it must be an embedding row.
  if (bos !== null && bos >= vocabSize) {
    fail(bosFrom, `bos_token_id ${bos} is past the model's vocabulary (vocab_size ${vocabSize} in ${file}: ids 0..${vocabSize - 1}); the embedding has no row for it`);
  }
  const tie = j.tie_word_embeddings ?? false;
  if (typeof tie !== 'boolean') fail(file, `"tie_word_embeddings" must be true or false, got ${showJson(tie)}`);

  const config: LlamaConfig = {
    vocabSize,
    hiddenSize,
    intermediateSize: posInt(j, 'intermediate_size', file),
    numLayers: posInt(j, 'num_hidden_layers', file),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: posNum(j, 'rms_norm_eps', file, 1e-6),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    maxPositionEmbeddings: posInt(j, 'max_position_embeddings', file, 2048),
    tieWordEmbeddings: tie,
    bosTokenId: bos,
    eosTokenIds: eos,
  };
  const torchDtype = j.torch_dtype ?? j.dtype;
  return {
    config, quantization: parseQuantization(j, file), torchDtype: typeof torchDtype === 'string' ? torchDtype : null,
    generation: parseGenerationDefaults(generation, generationFile),
  };
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    fail(file, `cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    fail(file, `bad JSON: ${(e as Error).message}`);
  }
}

/** A directory without config.json: say what it is when it is a PEFT adapter or a fine-tuning run, not a model. */
function notAModel(dir: string, file: string): never {
  const adapterCfg = path.join(dir, 'adapter_config.json');
  if (fs.existsSync(adapterCfg)) {
    let base: unknown;
    try { base = (JSON.parse(fs.readFileSync(adapterCfg, 'utf8')) as { base_model_name_or_path?: unknown } | null)?.base_model_name_or_path; } catch { base = undefined; }
    const of = typeof base === 'string' && base !== '' ? ` (its base_model_name_or_path: ${showJson(base, 200)})` : '';
    fail(file, `missing: ${dir} is a PEFT LoRA adapter (adapter_config.json), not a model; load its base model${of} and apply this directory as the adapter (CLI: --model BASE --adapter ${dir})`);
  }
  const final = path.join(dir, 'final');
  if (fs.existsSync(path.join(final, 'config.json')) || fs.existsSync(path.join(final, 'adapter_config.json'))) {
    fail(file, `missing: ${dir} is a fine-tuning run; its result is ${final}`);
  }
  readJson(file); // the plain "cannot read" error
  throw new Error('unreachable');
}

/** Reads `dir/config.json` and, if present, `dir/generation_config.json`. */
export function readHfConfig(dir: string): HfConfig {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) notAModel(dir, file);
  const genFile = path.join(dir, 'generation_config.json');
  const gen = fs.existsSync(genFile) ? readJson(genFile) : undefined;
  return parseHfConfig(readJson(file), file, gen, genFile);
}
