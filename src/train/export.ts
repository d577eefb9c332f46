// Export: write an HF model directory (config.json, model.safetensors, tokenizer files) from f32 weights,
// and merge a LoRA adapter into a base model (`floe merge`).

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LlamaConfig } from '../model/config.js';
import { LORA_MODULE, LORA_TARGETS, loraScale, mergeLinear, type LoraAdapter } from '../model/lora.js';
import { writeFileAtomic, writeSafetensors, type StWriteTensor } from '../formats/safetensors.js';
import { encodeBf16 } from '../tensor/codecs.js';
import { dequantizeRow } from '../tensor/codecs.js';
import type { Tensor } from '../tensor/tensor.js';
import { ggufToTokenizerJson } from '../formats/gguf-tokenizer.js';
import { llama3ScalingFromFactors } from '../formats/gguf-writer.js';
import type { LoadedModel } from '../formats/load.js';

export type SaveDType = 'f32' | 'bf16';

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'chat_template.jinja'];

/** The model an exported one was made from: its config.json and tokenizer files (HF dir) or metadata (GGUF) go along. */
export type ExportBase = Pick<LoadedModel, 'format' | 'path' | 'ggufMetadata' | 'ropeFreqFactors'>;

/** HF config.json for `cfg`: the base's own config (minus quantization) when it is an HF dir, else built from cfg. */
function configJson(cfg: LlamaConfig, baseDir: string | null, dtype: SaveDType): Record<string, unknown> {
  const file = baseDir ? path.join(baseDir, 'config.json') : null;
  let j: Record<string, unknown>;
  if (file && fs.existsSync(file)) {
    j = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    delete j.quantization_config;
    delete j.compression_config;
  } else {
    j = {
      architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: cfg.vocabSize, hidden_size: cfg.hiddenSize,
      intermediate_size: cfg.intermediateSize, num_hidden_layers: cfg.numLayers, num_attention_heads: cfg.numHeads,
      num_key_value_heads: cfg.numKvHeads, head_dim: cfg.headDim, rms_norm_eps: cfg.rmsNormEps, rope_theta: cfg.ropeTheta,
      rope_scaling: cfg.ropeScaling === null ? null : cfg.ropeScaling.type === 'linear'
        ? { rope_type: 'linear', factor: cfg.ropeScaling.factor }
        : { rope_type: 'llama3', factor: cfg.ropeScaling.factor, low_freq_factor: cfg.ropeScaling.lowFreqFactor,
          high_freq_factor: cfg.ropeScaling.highFreqFactor, original_max_position_embeddings: cfg.ropeScaling.originalMaxPositionEmbeddings },
      max_position_embeddings: cfg.maxPositionEmbeddings, tie_word_embeddings: cfg.tieWordEmbeddings,
      bos_token_id: cfg.bosTokenId, eos_token_id: cfg.eosTokenIds.length === 1 ? cfg.eosTokenIds[0] : cfg.eosTokenIds,
      hidden_act: 'silu', attention_bias: false, mlp_bias: false,
    };
  }
  if ('dtype' in j) j.dtype = dtype === 'f32' ? 'float32' : 'bfloat16';
  else j.torch_dtype = dtype === 'f32' ? 'float32' : 'bfloat16';
  return j;
}

/**
 * Write an HF directory: config.json, model.safetensors (tensors in `dtype`), and the base's tokenizer files: copied
 * from an HF base; built from a GGUF base's tokenizer.ggml.* metadata (tokenizer.json, tokenizer_config.json with its
 * chat template, generation_config.json with its EOS ids), and its rope_freqs.weight stated as `llama3` rope_scaling.
 * `tensors` maps HF names to f32 values with their shapes.
 */
export function writeHfModel(dir: string, cfg: LlamaConfig, base: ExportBase | null, tensors: ReadonlyMap<string, { shape: readonly number[]; value: Float32Array }>, dtype: SaveDType): void {
  const gguf = base?.format === 'gguf' ? base : null;
  if (gguf?.ropeFreqFactors && cfg.ropeScaling === null) {
    cfg = { ...cfg, ropeScaling: llama3ScalingFromFactors(cfg, gguf.ropeFreqFactors, gguf.path) };
  }
  // build the GGUF tokenizer files before writing anything: bad metadata fails with no half-written dir
  const tok = gguf?.ggufMetadata?.has('tokenizer.ggml.model') ? ggufToTokenizerJson(gguf.ggufMetadata) : null;
  fs.mkdirSync(dir, { recursive: true });
  const out: Record<string, StWriteTensor> = {};
  for (const [name, t] of tensors) {
    out[name] = dtype === 'f32' ? { dtype: 'F32', shape: t.shape, data: t.value } : { dtype: 'BF16', shape: t.shape, data: encodeBf16(t.value) };
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), out, { format: 'pt' });
  // a model saved here before (sharded: an index and its shards) would be read instead of this one, as the loader
  // takes the index first: drop its weight files, as transformers' save_pretrained cleans a folder it saves into
  for (const f of fs.readdirSync(dir)) {
    if (f !== 'model.safetensors' && /^model.*\.safetensors(\.index\.json)?$/.test(f)) fs.rmSync(path.join(dir, f));
  }
  const baseDir = base?.format === 'hf' ? base.path : null;
  const json = (file: string, v: unknown) => writeFileAtomic(path.join(dir, file), [new TextEncoder().encode(JSON.stringify(v, null, 2) + '\n')]);
  // every file whole (temp + rename), config.json last: a write killed or failed part-way leaves no new config.json
  // beside missing or cut tokenizer files, so no half-written directory loads as a model
  if (baseDir && fs.statSync(baseDir).isDirectory()) {
    for (const f of TOKENIZER_FILES) {
      const src = path.join(baseDir, f);
      if (fs.existsSync(src) && path.resolve(src) !== path.resolve(dir, f)) writeFileAtomic(path.join(dir, f), [fs.readFileSync(src)]);
    }
  }
  if (tok) {
    json('tokenizer.json', tok.tokenizerJson);
    json('tokenizer_config.json', tok.tokenizerConfig);
    const eos = tok.eosIds.length === 1 ? tok.eosIds[0] : tok.eosIds;
    json('generation_config.json', { ...(cfg.bosTokenId !== null ? { bos_token_id: cfg.bosTokenId } : {}), ...(tok.eosIds.length ? { eos_token_id: eos } : {}) });
  }
  json('config.json', configJson(cfg, baseDir, dtype));
}

function dequant(t: Tensor): Float32Array {
  const out = new Float32Array(t.numel);
  for (let r = 0; r < t.rows; r++) dequantizeRow(t, r, out.subarray(r * t.cols, (r + 1) * t.cols));
  return out;
}

/**
 * Fold an adapter into the base: W' = W + s · B A for every adapted linear; every other tensor is copied
 * (dequantized). Returns HF-named f32 tensors for writeHfModel.
 */
export function mergeAdapter(cfg: LlamaConfig, tensors: ReadonlyMap<string, Tensor>, adapter: LoraAdapter): Map<string, { shape: readonly number[]; value: Float32Array }> {
  const s = loraScale(adapter.config);
  const merged = new Map<string, { shape: readonly number[]; value: Float32Array }>();
  const adapted = new Map<string, { l: number; t: (typeof LORA_TARGETS)[number] }>();
  adapter.layers.forEach((lay, l) => {
    if (l >= cfg.numLayers) throw new Error(`adapter has layer ${l}, the model has ${cfg.numLayers}`);
    for (const t of LORA_TARGETS) if (lay[t]) adapted.set(`model.layers.${l}.${LORA_MODULE[t]}.weight`, { l, t });
  });
  for (const [name, w] of tensors) {
    const a = adapted.get(name);
    merged.set(name, { shape: w.shape, value: a ? mergeLinear(w, adapter.layers[a.l]![a.t]!, s) : dequant(w) });
  }
  for (const name of adapted.keys()) if (!tensors.has(name)) throw new Error(`the base model has no tensor "${name}" for the adapter`);
  return merged;
}
