// Deployment planner: bytes per device for serving or fine-tuning a Llama-family model, from its LlamaConfig.
//
// D hidden, F ffn hidden, H heads, K kv heads, E head dim, V vocab, L layers, T tokens in a step, r LoRA rank,
// P pipeline stages, TP tensor-parallel width, DP data-parallel replicas (devices / (P·TP)).
// The activation and scratch formulas mirror the buffers floe allocates (model/llama.ts Workspace,
// model/llama-train.ts Acts + Scratch), so at one device the plan is floe's own memory; at scale the
// same per-layer counts are divided by the parallel widths.

import { parseHfConfig } from '../formats/hf-config.js';
import type { LlamaConfig } from '../formats/llama-config.js';
import { LORA_TARGETS, loraDims, type LoraTarget } from '../formats/peft.js';
import type { KvDType } from '../backend/backend.js';
import { KvCache } from '../model/kv-cache.js';
import { grownCapacity } from '../model/llama.js';
import { defaultSwapSpace } from '../engine/engine.js';
import { ENGINE_DEFAULTS } from '../engine/protocol.js';
import type { LayerRange } from '../model/llama.js';
import { balancedStages } from '../parallel/stages.js';
import { checkTensors, expectedShapes, heldFromHeader, type LoadDType, type WeightHeader } from '../formats/load.js';
import { streamedLayerSet } from '../model/offload.js';

export type PlanDType = 'f32' | 'bf16' | 'f16' | 'fp8' | 'q8_0';

/** HF config.json facts of public Llama checkpoints (the fields the planner reads, verbatim names). */
const LLAMA3_ROPE = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
export const PRESETS: Record<string, Record<string, unknown>> = {
  'llama-3.1-405b': { hidden_size: 16384, num_hidden_layers: 126, num_attention_heads: 128, num_key_value_heads: 8, intermediate_size: 53248, vocab_size: 128256, tie_word_embeddings: false, rope_theta: 500000, rope_scaling: LLAMA3_ROPE, max_position_embeddings: 131072 },
  'llama-3.1-70b': { hidden_size: 8192, num_hidden_layers: 80, num_attention_heads: 64, num_key_value_heads: 8, intermediate_size: 28672, vocab_size: 128256, tie_word_embeddings: false, rope_theta: 500000, rope_scaling: LLAMA3_ROPE, max_position_embeddings: 131072 },
  'llama-3.1-8b': { hidden_size: 4096, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, intermediate_size: 14336, vocab_size: 128256, tie_word_embeddings: false, rope_theta: 500000, rope_scaling: LLAMA3_ROPE, max_position_embeddings: 131072 },
  'llama-3.2-1b': { hidden_size: 2048, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, intermediate_size: 8192, vocab_size: 128256, tie_word_embeddings: true, rope_theta: 500000, rope_scaling: { ...LLAMA3_ROPE, factor: 32 }, max_position_embeddings: 131072 },
};

export function presetConfig(name: string): LlamaConfig {
  const p = PRESETS[name];
  if (!p) throw new Error(`unknown preset '${name}' (presets: ${Object.keys(PRESETS).join(', ')})`);
  return parseHfConfig({ architectures: ['LlamaForCausalLM'], rms_norm_eps: 1e-5, ...p }, `preset ${name}`).config;
}

export interface PlanOptions {
  readonly dtype: PlanDType; // linear weights; fp8 keeps embedding and head in `source`'s dtype (as floe's --dtype fp8 does), bf16 an fp8 / q8_0 `source` as stored (heldDtype)
  readonly source?: PlanDType; // the checkpoint's stored dtype (default bf16): the embedding and head under fp8
  readonly fp8Block?: readonly [number, number]; // an fp8 checkpoint's scale block (default [1, C]: one scale per row)
  /** A checkpoint's weights as floe holds them, tensor by tensor (heldWeightBytes); then dtype, source and fp8Block count only for the KV default. */
  readonly weights?: WeightBytes;
  readonly kvDtype: KvDType;
  readonly context: number; // tokens per sequence
  readonly concurrency: number; // sequences served at once (serving)
  readonly devices: number; // in all, over every node
  readonly deviceMemory: number; // bytes per device
  readonly nodes: number;
  readonly pipelineParallel: number; // P
  readonly tensorParallel: number; // TP
  readonly offloadRatio: number; // share of layer weights streamed from host / disk instead of resident
  readonly ringLayers: number; // staging buffers of streamed layers (compute + read-ahead)
  readonly maxBatchedTokens: number; // serving step's token budget
  /** Serving: host memory per device for preempted sequences' KV (serve --swap-space); default serve's, 0 with stages. */
  readonly swapSpace?: number;
  /** Training (absent: serving). */
  readonly train?: {
    readonly loraRank: number | null; // null: full fine-tuning
    readonly loraTargets: readonly LoraTarget[];
    readonly microBatch: number;
    readonly seqLen: number;
    readonly checkpointActivations: boolean;
    readonly zero: 0 | 1 | 2 | 3; // ZeRO stage over DP: 1 optimizer, 2 + gradients, 3 + parameters (the frozen base too)
  };
}

export const PLAN_DEFAULTS = { kvDtype: 'bf16' as KvDType, devices: 1, nodes: 1, pipelineParallel: 1, tensorParallel: 1, offloadRatio: 0, ringLayers: 3, maxBatchedTokens: 512 };

export interface ParamCounts {
  readonly total: number;
  readonly embed: number; // V·D
  readonly head: number; // V·D, 0 when tied
  readonly perLayerLinear: number; // the seven projections of one layer
  readonly perLayerNorm: number; // 2·D
  readonly finalNorm: number; // D
}

export function paramCounts(c: LlamaConfig): ParamCounts {
  const { hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E, vocabSize: V, numLayers: L } = c;
  const perLayerLinear = 2 * D * H * E + 2 * D * K * E + 3 * D * F;
  const embed = V * D;
  const head = c.tieWordEmbeddings ? 0 : V * D;
  const total = embed + head + L * (perLayerLinear + 2 * D) + D;
  return { total, embed, head, perLayerLinear, perLayerNorm: 2 * D, finalNorm: D };
}

/** Stored bytes of one (N, C) linear weight in `dtype` (fp8: an f32 scale per block, default per row; q8_0: 34 bytes per 32). */
function linearBytes(N: number, C: number, dtype: PlanDType, block?: readonly [number, number]): number {
  switch (dtype) {
    case 'f32': return 4 * N * C;
    case 'bf16': case 'f16': return 2 * N * C;
    case 'fp8': return N * C + 4 * Math.ceil(N / (block?.[0] ?? 1)) * Math.ceil(C / (block?.[1] ?? C));
    case 'q8_0': return N * Math.ceil(C / 32) * 34;
  }
}

/**
 * The dtype floe holds a checkpoint stored as `source` in when asked for `dtype`: its loader's `--dtype bf16` converts
 * only f32 / f16 weights, so fp8 and q8_0 checkpoints stay as stored (formats/load.ts convertsToBf16).
 */
export function heldDtype(dtype: PlanDType, source: PlanDType | undefined): PlanDType {
  return dtype === 'bf16' && (source === 'fp8' || source === 'q8_0') ? source : dtype;
}

/** Bytes of a model's weights as floe holds them, by where a pipeline stage or the layer stream takes them. */
export interface WeightBytes {
  readonly layers: readonly number[]; // (L) each layer's seven linears and its two norms (f32, as model/llama.ts vector() holds them)
  readonly perLayer: number; // the largest layer (every layer's where they are alike): one staging slot of the layer stream
  readonly embed: number;
  readonly head: number; // 0 when tied
  readonly norm: number;
  readonly total: number;
  /** held dtype -> how many weight matrices (linears, embedding, head) floe holds in it; set where counted tensor by tensor. */
  readonly matrices?: Readonly<Record<string, number>>;
}

/** Bytes of every weight, all in one dtype: per layer (linears + f32 norms as floe keeps them) and the rest; `source`: see PlanOptions. */
export function weightBytes(c: LlamaConfig, asked: PlanDType, source: PlanDType = 'bf16', fp8Block?: readonly [number, number]): WeightBytes {
  const { hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E, vocabSize: V } = c;
  const dtype = heldDtype(asked, source);
  const b = fp8Block;
  const lin = linearBytes(H * E, D, dtype, b) * 2 + linearBytes(K * E, D, dtype, b) * 2 + linearBytes(F, D, dtype, b) * 2 + linearBytes(D, F, dtype, b);
  const perLayer = lin + 2 * D * 4; // norms dequantized to f32 (model/llama.ts vector())
  const tableDtype: PlanDType = dtype !== 'fp8' ? dtype : source === 'fp8' ? 'bf16' : source; // an fp8 checkpoint's tables: bf16
  const embed = linearBytes(V, D, tableDtype);
  const head = c.tieWordEmbeddings ? 0 : embed;
  const norm = D * 4;
  return { layers: new Array<number>(c.numLayers).fill(perLayer), perLayer, embed, head, norm, total: c.numLayers * perLayer + embed + head + norm };
}

/**
 * Bytes of a checkpoint's weights as floe holds them, from their headers (formats/load.ts weightHeaders): each
 * tensor as stored, or as `load` converts it (heldFromHeader, the loader's own rule), and every norm in f32. A file
 * whose tensors mix dtypes (q8_0 layers beside an f16 embedding, an f32 head) is counted as it is. Throws, as
 * loadModel does (checkTensors), on a tensor missing or mis-shaped for `c`; `where` names the checkpoint.
 */
export function heldWeightBytes(c: LlamaConfig, weights: ReadonlyMap<string, WeightHeader>, where: string, load?: LoadDType, fp8Block?: readonly [number, number]): WeightBytes {
  checkTensors(c, weights, where);
  const layers = new Array<number>(c.numLayers).fill(0);
  const matrices: Record<string, number> = {};
  let embed = 0, head = 0, norm = 0;
  const names = [...expectedShapes(c)].map(([name]) => name);
  // a tied config with an lm_head.weight anyway: the model reads that head (LlamaModel.fromTensors)
  if (c.tieWordEmbeddings && weights.has('lm_head.weight')) names.push('lm_head.weight');
  for (const name of names) {
    const w = weights.get(name)!;
    let bytes: number;
    if (w.shape.length === 1) bytes = 4 * w.shape[0]!; // a norm: dequantized to f32 (model/llama.ts vector())
    else {
      const h = heldFromHeader(name, w, load, fp8Block);
      bytes = h.bytes;
      matrices[h.dtype] = (matrices[h.dtype] ?? 0) + 1;
    }
    const m = /^model\.layers\.(\d+)\./.exec(name);
    if (m) layers[Number(m[1])]! += bytes;
    else if (name === 'model.embed_tokens.weight') embed = bytes;
    else if (name === 'lm_head.weight') head = bytes;
    else norm = bytes;
  }
  const total = layers.reduce((a, b) => a + b, 0) + embed + head + norm;
  return { layers, perLayer: Math.max(...layers), embed, head, norm, total, matrices };
}

/** LoRA parameters of one layer at rank r on `targets`: r·(C + N) each. */
export function loraParamsPerLayer(c: LlamaConfig, r: number, targets: readonly LoraTarget[]): number {
  let n = 0;
  for (const t of targets) {
    const [N, C] = loraDims(c, t);
    n += r * (N + C);
  }
  return n;
}

/**
 * Serving scratch (model/llama.ts Workspace) for steps of up to T tokens, plus R rows of f32 logits. The workspace
 * grows geometrically, so steps of at most T tokens can leave it at grownCapacity(T - 1, T) (up to 2T - 2 below 4096).
 */
export function servingActivationBytes(c: LlamaConfig, T: number, R: number): number {
  const { hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E, vocabSize: V } = c;
  const ws = T > 1 ? grownCapacity(T - 1, T) : T;
  return 4 * ws * (3 * D + 2 * H * E + 2 * K * E + 2 * F) + 4 * R * V;
}

/**
 * Training activations for T packed tokens over `layers` layers (model/llama-train.ts Acts, inputs, Scratch). A
 * pipeline stage (`slots` > 0) keeps each in-flight micro-batch's saved activations, input and gradient in a slot.
 */
export function trainActivationBytes(c: LlamaConfig, T: number, layers: number, ckpt: boolean, loraRank: number, targets: readonly LoraTarget[], slots = 0): number {
  const { hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E, vocabSize: V } = c;
  let maxN = 1;
  for (const t of targets) maxN = Math.max(maxN, loraDims(c, t)[0]);
  const u = loraRank > 0 ? targets.length * loraRank : 0;
  const acts = 2 * T * D + 2 * T * H * E + 2 * T * K * E + T * H + 2 * T * F + T * u; // one layer's Acts
  const perMicro = ckpt ? layers * T * D : layers * acts; // checkpointed: each layer's input, recomputed one layer at a time
  const saved = (ckpt ? acts : 0) + (slots > 0 ? slots * (perMicro + 2 * T * D) : perMicro);
  const chunk = Math.min(T, Math.max(128, Math.floor((4 << 20) / V))); // lossChunkRows
  const r = loraRank > 0 ? loraRank : 1;
  const scratch = (8 + (ckpt ? 1 : 0)) * T * D + 2 * T * H * E + 2 * T * K * E + 4 * T * F + 2 * T * r + (loraRank > 0 ? T * maxN : T)
    + 2 * chunk * D + chunk + chunk * V;
  return 4 * (saved + scratch);
}

export interface DevicePlan {
  readonly weights: number; // resident base weights (+ staging ring when streaming)
  readonly offloaded: number; // layer weights streamed from host memory / disk, not resident
  readonly kvCache: number;
  readonly swapSpace: number; // host memory preempted sequences' KV is copied to (serve --swap-space)
  readonly activations: number;
  readonly loraParams: number; // trainable parameters (LoRA factors, or full master weights), f32
  readonly gradients: number;
  readonly optimizer: number; // AdamW m and v, f32
  readonly total: number;
  readonly capacity: number;
  readonly fits: boolean;
}

export interface Plan {
  readonly config: LlamaConfig;
  readonly parameters: ParamCounts;
  readonly mode: 'serve' | 'lora' | 'full';
  readonly dataParallel: number; // DP
  /** The layer ranges of floe's default split (balancedStages), one per pipeline stage. */
  readonly stages: readonly LayerRange[];
  readonly fullestStage: number; // the stage whose device `device` is
  readonly layersPerStage: number; // that stage's layers
  readonly weightBytesTotal: number; // whole model in the chosen dtype
  readonly kvBytesPerToken: number; // whole model, all layers
  readonly trainableParams: number;
  readonly device: DevicePlan; // the fullest device: the pipeline stage with the most bytes
  readonly stageDevices: readonly DevicePlan[]; // each stage's device, in stage order
  /** Serving: sequences of `context` tokens that fit, with their swap space, in what weights and activations leave. */
  readonly maxConcurrentSequences: number;
}

/** The plan; throws naming the option when the parallel layout does not divide the model or the devices. */
export function plan(c: LlamaConfig, o: PlanOptions): Plan {
  const P = o.pipelineParallel, TP = o.tensorParallel;
  if (o.devices % (P * TP) !== 0) throw new RangeError(`--devices ${o.devices} is not a multiple of pipeline-parallel ${P} × tensor-parallel ${TP}`);
  if (P > c.numLayers) throw new RangeError(`--pipeline-parallel ${P} is more than the model's ${c.numLayers} layers`);
  if (c.numHeads % TP !== 0) throw new RangeError(`--tensor-parallel ${TP} does not divide the ${c.numHeads} attention heads`);
  if (o.devices % o.nodes !== 0) throw new RangeError(`--devices ${o.devices} is not a multiple of --nodes ${o.nodes}`);
  if (!(o.offloadRatio >= 0 && o.offloadRatio <= 1)) throw new RangeError(`--offload-ratio must be in [0, 1], got ${o.offloadRatio}`);
  if (o.swapSpace !== undefined && !(Number.isSafeInteger(o.swapSpace) && o.swapSpace >= 0)) throw new RangeError(`--swap-space must be a whole number of bytes >= 0, got ${o.swapSpace}`);
  // as floe serve: pipeline stages hold their own layers' KV and recompute a preempted sequence
  if (P > 1 && o.swapSpace) throw new RangeError(`--swap-space does not combine with --pipeline-parallel yet: each stage holds its own layers' KV, and preemption recomputes there`);
  const DP = o.devices / (P * TP);
  const params = paramCounts(c);
  const wb = o.weights ?? weightBytes(c, o.dtype, o.source, o.fp8Block);
  if (wb.layers.length !== c.numLayers) throw new RangeError(`the weights give ${wb.layers.length} layers, the config ${c.numLayers}`);
  const t = o.train;
  // floe's own split (serve and generate: the head counted on stage 0; finetune: on the last stage), not L / P each
  const stages = balancedStages(c, P, t ? 'last' : 'first');
  const kvBytesPerToken = KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, o.kvDtype);
  const full = t ? t.loraRank === null : false;
  const trainable = !t ? 0 : full ? params.total : c.numLayers * loraParamsPerLayer(c, t.loraRank!, t.loraTargets);
  const zero = t?.zero ?? 0;
  const baseShard = zero === 3 ? DP : 1; // ZeRO-3 shards the frozen base over the replicas too

  /** Stage s's device: its layers' weights, KV, state and activations, the embedding / head where it reads them. */
  const stageDevice = (s: number) => {
    const own = wb.layers.slice(stages[s]!.start, stages[s]!.end); // this stage's layers' bytes
    const layers = own.length;
    // serving reads embedding, head and final norm on stage 0; training embeds on the first stage and runs norm, head
    // and loss on the last (a tied head is the embedding's table: both ends read it)
    const edge = P === 1 ? wb.embed + wb.head + wb.norm
      : !t ? (s === 0 ? wb.embed + wb.head + wb.norm : 0)
      : (s === 0 ? wb.embed : 0) + (s === P - 1 ? (wb.head || wb.embed) + wb.norm : 0);
    // the layers LayerStream streams (streamedLayerSet), each read into a staging slot the size of the largest layer
    const streamedLayers = Math.round(layers * o.offloadRatio);
    const streamed = streamedLayerSet(layers, streamedLayers);
    const ring = streamedLayers > 0 ? Math.min(o.ringLayers, streamedLayers) * Math.max(...own) / TP : 0;
    const offloaded = sum(own.filter((_, i) => streamed[i])) / TP / baseShard;
    let weights = (edge / TP + sum(own) / TP) / baseShard - offloaded + ring;
    // a kv head is never split: TP wider than K replicates heads
    const kvPerToken = KvCache.bytesPerToken(layers, Math.ceil(c.numKvHeads / TP), c.headDim, o.kvDtype);
    let loraParams = 0, gradients = 0, optimizer = 0, activations: number, kvCache = 0, swapSpace = 0;
    if (t) {
      const perDevice = trainable * layers / c.numLayers / TP; // what one stage / TP shard owns
      loraParams = 4 * perDevice / (zero >= 3 ? DP : 1);
      gradients = 4 * perDevice / (zero >= 2 ? DP : 1);
      optimizer = 8 * perDevice / (zero >= 1 ? DP : 1);
      // 1F1B keeps up to P - s micro-batches' activations on stage s (a step of at least P micro-batches)
      activations = trainActivationBytes(c, t.microBatch * t.seqLen, layers, t.checkpointActivations, full ? 0 : t.loraRank!, full ? [] : t.loraTargets,
        P === 1 ? 0 : P - s) / TP;
      if (full) weights = 0; // the f32 masters (loraParams) are the weights
    } else {
      const T = o.maxBatchedTokens;
      activations = servingActivationBytes(c, T, s === 0 ? Math.min(T, o.concurrency) : 0) / TP; // logits on stage 0 only
      kvCache = o.concurrency * o.context * kvPerToken;
      swapSpace = P > 1 ? 0 : o.swapSpace ?? defaultSwapSpace(kvCache);
    }
    const total = weights + kvCache + swapSpace + activations + loraParams + gradients + optimizer;
    // the job serves as many sequences as its tightest stage holds
    const maxSeq = t ? 0 : maxSequences(o.deviceMemory - (total - kvCache - swapSpace), o.context * kvPerToken, P > 1 ? 0 : o.swapSpace);
    const device: DevicePlan = { weights, offloaded, kvCache, swapSpace, activations, loraParams, gradients, optimizer, total, capacity: o.deviceMemory, fits: total <= o.deviceMemory };
    return { device, layers, maxSeq };
  };
  const all = stages.map((_, s) => stageDevice(s));
  const fullestStage = all.reduce((best, d, s) => (d.device.total > all[best]!.device.total ? s : best), 0);
  const fullest = all[fullestStage]!;
  return {
    config: c, parameters: params, mode: !t ? 'serve' : full ? 'full' : 'lora', dataParallel: DP, stages, fullestStage,
    layersPerStage: fullest.layers, weightBytesTotal: wb.total, kvBytesPerToken, trainableParams: trainable,
    device: fullest.device, stageDevices: all.map((d) => d.device), maxConcurrentSequences: Math.min(...all.map((d) => d.maxSeq)),
  };
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/** Most sequences of `perSeq` KV bytes that fit in `room` beside their swap space: `swap`, or serve's default for their KV. */
function maxSequences(room: number, perSeq: number, swap: number | undefined): number {
  if (swap !== undefined) return Math.max(0, Math.floor((room - swap) / perSeq));
  // the default is the KV itself up to a cap, then the cap: the most that fit is at the end of one of the two pieces
  const fits = (n: number) => n >= 0 && n * perSeq + defaultSwapSpace(n * perSeq) <= room;
  return Math.max(0, ...[Math.floor(room / (2 * perSeq)), Math.floor((room - ENGINE_DEFAULTS.swapSpaceMax) / perSeq)].filter(fits));
}

/** MemTotal and MemAvailable of this machine, from /proc/meminfo (null where there is none). */
export function hostMemory(meminfo: string): { total: number; available: number } | null {
  const get = (k: string) => {
    const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(meminfo);
    return m ? Number(m[1]) * 1024 : null;
  };
  const total = get('MemTotal'), available = get('MemAvailable');
  return total === null ? null : { total, available: available ?? total };
}

export const ALL_LORA_TARGETS = LORA_TARGETS;
