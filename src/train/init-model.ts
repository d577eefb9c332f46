// A randomly initialised Llama model written as an HF directory: the starting point for `floe finetune --full` from scratch.
// D hidden, F ffn, H heads, K kv heads, E head dim, V vocab, L layers.
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeSafetensors, type StWriteTensor } from "../formats/safetensors.js";
import { Rng } from "./rng.js";

export interface InitModelOptions {
  vocabSize: number; // V
  hiddenSize: number; // D
  intermediateSize: number; // F
  numLayers: number; // L
  numHeads: number; // H
  numKvHeads: number; // K
  headDim?: number; // E, default D / H
  maxPositionEmbeddings?: number;
  ropeTheta?: number;
  rmsNormEps?: number;
  tieWordEmbeddings?: boolean;
  bosTokenId: number;
  eosTokenIds: number[];
  seed?: number;
  /** Std of the normal init (HF initializer_range). Output projections (o, down) get std / sqrt(2L), as GPT-2. */
  initStd?: number;
}

/** Standard normals by Box-Muller from a seeded mulberry32, scaled by std. */
function normal(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - rng.next(), v = rng.next();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

function check(o: InitModelOptions): Required<InitModelOptions> {
  const headDim = o.headDim ?? o.hiddenSize / o.numHeads;
  const full: Required<InitModelOptions> = {
    headDim, maxPositionEmbeddings: 2048, ropeTheta: 10000, rmsNormEps: 1e-5, tieWordEmbeddings: true, seed: 0, initStd: 0.02, ...o,
  };
  for (const k of ["vocabSize", "hiddenSize", "intermediateSize", "numLayers", "numHeads", "numKvHeads", "headDim"] as const) {
    if (!Number.isInteger(full[k]) || full[k] <= 0) throw new Error(`init model: ${k} must be a positive integer, got ${full[k]}`);
  }
  if (full.numHeads % full.numKvHeads !== 0) throw new Error(`init model: numHeads ${full.numHeads} is not a multiple of numKvHeads ${full.numKvHeads}`);
  if (headDim % 2 !== 0) throw new Error(`init model: head dim ${headDim} must be even (RoPE pairs)`);
  return full;
}

/** HF tensor names -> f32 weights, in a fixed order so one seed gives one model. */
export function initLlamaWeights(opts: InitModelOptions): Record<string, StWriteTensor> {
  const o = check(opts);
  const rng = new Rng(o.seed);
  const { vocabSize: V, hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E } = o;
  const outStd = o.initStd / Math.sqrt(2 * o.numLayers);
  const w = (shape: number[], std: number): StWriteTensor => ({ dtype: "F32", shape, data: normal(rng, shape[0]! * shape[1]!, std) });
  const ones = (n: number): StWriteTensor => ({ dtype: "F32", shape: [n], data: new Float32Array(n).fill(1) });
  const t: Record<string, StWriteTensor> = {};
  t["model.embed_tokens.weight"] = w([V, D], o.initStd);
  for (let l = 0; l < o.numLayers; l++) {
    const p = `model.layers.${l}.`;
    t[p + "input_layernorm.weight"] = ones(D);
    t[p + "self_attn.q_proj.weight"] = w([H * E, D], o.initStd);
    t[p + "self_attn.k_proj.weight"] = w([K * E, D], o.initStd);
    t[p + "self_attn.v_proj.weight"] = w([K * E, D], o.initStd);
    t[p + "self_attn.o_proj.weight"] = w([D, H * E], outStd);
    t[p + "post_attention_layernorm.weight"] = ones(D);
    t[p + "mlp.gate_proj.weight"] = w([F, D], o.initStd);
    t[p + "mlp.up_proj.weight"] = w([F, D], o.initStd);
    t[p + "mlp.down_proj.weight"] = w([D, F], outStd);
  }
  t["model.norm.weight"] = ones(D);
  if (!o.tieWordEmbeddings) t["lm_head.weight"] = w([V, D], o.initStd);
  return t;
}

/** config.json in the transformers LlamaForCausalLM layout. */
export function llamaConfigJson(opts: InitModelOptions): Record<string, unknown> {
  const o = check(opts);
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: o.bosTokenId,
    eos_token_id: o.eosTokenIds.length === 1 ? o.eosTokenIds[0] : o.eosTokenIds,
    head_dim: o.headDim,
    hidden_act: "silu",
    hidden_size: o.hiddenSize,
    initializer_range: o.initStd,
    intermediate_size: o.intermediateSize,
    max_position_embeddings: o.maxPositionEmbeddings,
    mlp_bias: false,
    num_attention_heads: o.numHeads,
    num_hidden_layers: o.numLayers,
    num_key_value_heads: o.numKvHeads,
    pretraining_tp: 1,
    rms_norm_eps: o.rmsNormEps,
    rope_scaling: null,
    rope_theta: o.ropeTheta,
    tie_word_embeddings: o.tieWordEmbeddings,
    torch_dtype: "float32",
    use_cache: true,
    vocab_size: o.vocabSize,
  };
}

/** Write config.json, generation_config.json, model.safetensors, and copy tokenizer files from tokenizerDir. */
export function writeInitModel(dir: string, opts: InitModelOptions, tokenizerDir?: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify(llamaConfigJson(opts), null, 2) + "\n");
  const gen = { bos_token_id: opts.bosTokenId, eos_token_id: opts.eosTokenIds, do_sample: true, temperature: 0.7, top_p: 0.9 };
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify(gen, null, 2) + "\n");
  writeSafetensors(join(dir, "model.safetensors"), initLlamaWeights(opts), { format: "pt" });
  if (tokenizerDir !== undefined) {
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
      const src = join(tokenizerDir, f);
      if (!existsSync(src)) throw new Error(`init model: ${src} does not exist (train the tokenizer first)`);
      copyFileSync(src, join(dir, f));
    }
  }
}
