// Llama: embedding → N × (RMSNorm → GQA attention with RoPE → residual → RMSNorm → SwiGLU MLP → residual) → norm → head.
//
// T tokens in the step, D hidden, H heads, K kv heads, E head dim, F ffn hidden, V vocab.

import type { AttentionBatch, AttentionShape, Backend } from '../backend/backend.js';
import { dequantizeRow } from '../tensor/codecs.js';
import type { Tensor } from '../tensor/tensor.js';
import { type LlamaConfig, ropeInvFreq } from './config.js';
import type { KvCache } from './kv-cache.js';
import { addSegmentedLora, LoraScratch, type LoraBatch } from './lora.js';
import type { LayerStream } from './offload.js';

export interface LlamaLayer {
  readonly inputNorm: Float32Array; // (D)
  readonly wq: Tensor; // (H*E, D)
  readonly wk: Tensor; // (K*E, D)
  readonly wv: Tensor; // (K*E, D)
  readonly wo: Tensor; // (D, H*E)
  readonly postNorm: Float32Array; // (D)
  readonly wGate: Tensor; // (F, D)
  readonly wUp: Tensor; // (F, D)
  readonly wDown: Tensor; // (D, F)
}

export interface LlamaWeights {
  readonly embed: Tensor; // (V, D)
  readonly layers: readonly LlamaLayer[];
  readonly norm: Float32Array; // (D)
  readonly head: Tensor; // (V, D), the embedding itself when tied
}

/** One forward step over a packed batch of sequences (see AttentionBatch). */
export interface ForwardInput {
  readonly tokens: Int32Array; // (T)
  readonly positions: Int32Array; // (T)
  readonly slots: Int32Array; // (T) KV slot of each token: block * L + offset
  readonly attn: AttentionBatch;
  readonly logitRows: Int32Array; // rows of the batch whose logits are wanted (R)
  readonly numLogits?: number; // only the first numLogits of logitRows get logits, the rest only hiddenOut; default R
  readonly lora?: LoraBatch; // per-row adapters (multi-LoRA serving); absent → base only
}

/** The capacity a Workspace of `capacity` tokens grows to for a T-token forward: geometric up to 4096, then T. */
export function grownCapacity(capacity: number, T: number): number {
  return T <= capacity ? capacity : Math.max(T, Math.min(2 * capacity, 4096));
}

/** Scratch activations, sized for up to `capacity` tokens; grown, never shrunk. */
class Workspace {
  capacity = 0;
  x = new Float32Array(0); // (T, D) residual stream
  h = new Float32Array(0); // (T, D) normed
  q = new Float32Array(0); // (T, H*E)
  k = new Float32Array(0); // (T, K*E)
  v = new Float32Array(0); // (T, K*E)
  att = new Float32Array(0); // (T, H*E)
  proj = new Float32Array(0); // (T, D)
  gate = new Float32Array(0); // (T, F)
  up = new Float32Array(0); // (T, F)

  ensure(cfg: LlamaConfig, T: number): void {
    if (T <= this.capacity) return;
    const c = grownCapacity(this.capacity, T);
    const { hiddenSize: D, numHeads: H, numKvHeads: K, headDim: E, intermediateSize: F } = cfg;
    this.x = new Float32Array(c * D);
    this.h = new Float32Array(c * D);
    this.q = new Float32Array(c * H * E);
    this.k = new Float32Array(c * K * E);
    this.v = new Float32Array(c * K * E);
    this.att = new Float32Array(c * H * E);
    this.proj = new Float32Array(c * D);
    this.gate = new Float32Array(c * F);
    this.up = new Float32Array(c * F);
    this.capacity = c;
  }
}

/** The layers a model holds, [start, end) of config.numLayers: all of them, or one pipeline stage's contiguous share. */
export interface LayerRange { readonly start: number; readonly end: number }

export class LlamaModel {
  readonly invFreq: Float32Array; // (E/2)
  readonly attnShape: AttentionShape;
  readonly range: LayerRange; // weights.layers[i] is layer range.start + i; a KvCache holds these layers only
  private readonly ws = new Workspace();
  private readonly loraWs = new LoraScratch();
  private stream: LayerStream | null = null; // streamed layers (model/offload.ts); null: all resident
  private readonly order: number[]; // (layers) 0 .. N-1, the pass the stream reads ahead for

  constructor(
    readonly config: LlamaConfig,
    readonly weights: LlamaWeights,
    readonly backend: Backend,
    ropeFreqFactors: Float32Array | null = null,
    range?: LayerRange,
  ) {
    this.range = range ?? { start: 0, end: config.numLayers };
    const { start, end } = this.range;
    if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start < end && end <= config.numLayers) || weights.layers.length !== end - start) {
      throw new RangeError(`layer range [${start}, ${end}) of ${config.numLayers} layers does not match the ${weights.layers.length} layers given`);
    }
    this.invFreq = ropeInvFreq(config);
    if (ropeFreqFactors) {
      if (ropeFreqFactors.length !== this.invFreq.length) {
        throw new Error(`rope_freqs has ${ropeFreqFactors.length} factors, head_dim ${config.headDim} needs ${this.invFreq.length}`);
      }
      for (let i = 0; i < this.invFreq.length; i++) this.invFreq[i] = this.invFreq[i]! / ropeFreqFactors[i]!;
    }
    this.order = Array.from({ length: config.numLayers }, (_, l) => l);
    this.attnShape = {
      numHeads: config.numHeads,
      numKvHeads: config.numKvHeads,
      headDim: config.headDim,
      scale: 1 / Math.sqrt(config.headDim),
    };
  }

  /** Stream some layers' weights from disk (LayerStream.open replaced them in the tensors this model was built from). */
  attachStream(s: LayerStream): void {
    s.bind(this.weights.layers);
    this.stream = s;
  }

  get layerStream(): LayerStream | null { return this.stream; }

  /** Build from HF-named tensors (see formats/load.ts); with `range`, only those layers (a pipeline stage). */
  static fromTensors(config: LlamaConfig, tensors: ReadonlyMap<string, Tensor>, backend: Backend, ropeFreqFactors: Float32Array | null = null, range?: LayerRange): LlamaModel {
    const get = (name: string): Tensor => {
      const t = tensors.get(name);
      if (!t) throw new Error(`missing tensor ${name}`);
      return t;
    };
    const layers: LlamaLayer[] = [];
    for (let i = range?.start ?? 0; i < (range?.end ?? config.numLayers); i++) {
      const p = `model.layers.${i}.`;
      layers.push({
        inputNorm: vector(get(p + 'input_layernorm.weight')),
        wq: get(p + 'self_attn.q_proj.weight'),
        wk: get(p + 'self_attn.k_proj.weight'),
        wv: get(p + 'self_attn.v_proj.weight'),
        wo: get(p + 'self_attn.o_proj.weight'),
        postNorm: vector(get(p + 'post_attention_layernorm.weight')),
        wGate: get(p + 'mlp.gate_proj.weight'),
        wUp: get(p + 'mlp.up_proj.weight'),
        wDown: get(p + 'mlp.down_proj.weight'),
      });
    }
    const embed = get('model.embed_tokens.weight');
    const head = config.tieWordEmbeddings ? (tensors.get('lm_head.weight') ?? embed) : get('lm_head.weight');
    return new LlamaModel(config, { embed, layers, norm: vector(get('model.norm.weight')), head }, backend, ropeFreqFactors, range);
  }

  /**
   * Run T tokens through the model, writing their K/V into `kv`, and return logits (R, V) for `logitRows`.
   * With `hiddenOut` (R, D), also copy the final-normed hidden states of those rows (for embeddings). With
   * `logitsOut` (at least R·V), the logits are written there and a view of it is returned instead of a new array
   * (the engine's runner reuses one buffer, as it reads each step's logits before the next).
   */
  forward(inp: ForwardInput, kv: KvCache, hiddenOut?: Float32Array, logitsOut?: Float32Array): Float32Array {
    const x = this.embedTokens(inp.tokens);
    this.forwardLayers(x, inp, kv);
    return this.head(x, inp.logitRows, inp.numLogits ?? inp.logitRows.length, hiddenOut, logitsOut);
  }

  /** The residual stream (T, D) of a T-token step, in the workspace (a later pipeline stage copies its input here). */
  residual(T: number): Float32Array {
    this.ws.ensure(this.config, T);
    return this.ws.x.subarray(0, T * this.config.hiddenSize);
  }

  /** x (T, D) = embedding rows of the tokens, in the workspace. */
  embedTokens(tokens: Int32Array): Float32Array {
    const x = this.residual(tokens.length);
    this.backend.embedding(x, this.weights.embed, tokens);
    return x;
  }

  /** x (T, D) += every held layer, in order; K/V go to `kv`, whose layer i is layer range.start + i. */
  forwardLayers(x: Float32Array, inp: ForwardInput, kv: KvCache): void {
    const cfg = this.config;
    const be = this.backend;
    const T = inp.positions.length;
    const { hiddenSize: D, numHeads: H, numKvHeads: K, headDim: E, intermediateSize: F } = cfg;
    if (x.length !== T * D) throw new Error(`forwardLayers: x has ${x.length} values, the step needs T=${T} × D=${D}`);
    if (kv.layers.length !== this.weights.layers.length) throw new Error(`forwardLayers: the KV cache holds ${kv.layers.length} layers, the model ${this.weights.layers.length}`);
    this.ws.ensure(cfg, T);
    const w = this.ws;
    const h = w.h.subarray(0, T * D);
    const q = w.q.subarray(0, T * H * E);
    const k = w.k.subarray(0, T * K * E);
    const v = w.v.subarray(0, T * K * E);
    const att = w.att.subarray(0, T * H * E);
    const proj = w.proj.subarray(0, T * D);
    const gate = w.gate.subarray(0, T * F);
    const up = w.up.subarray(0, T * F);
    const lora = inp.lora && inp.lora.segAdapter.some((a) => a >= 0) ? inp.lora : undefined;
    if (lora && lora.segStart[lora.segAdapter.length] !== T) throw new Error(`LoRA segments cover ${lora.segStart[lora.segAdapter.length]} rows, the step has ${T}`);

    this.stream?.begin(this.order);
    const n = this.weights.layers.length;
    let L = this.stream ? this.stream.layer(0) : this.weights.layers[0]!;
    be.rmsnorm(h, x, L.inputNorm, T, cfg.rmsNormEps);
    for (let i = 0; i < n; i++) {
      const l = this.range.start + i;
      // attention block: x += Wo · attn(rope(Wq h), rope(Wk h), Wv h), h = rmsnorm(x) (normed before the loop or by
      // the previous layer's last add)
      matmuls(be, [q, k, v], h, [L.wq, L.wk, L.wv], T);
      if (lora) {
        addSegmentedLora(be, q, h, D, H * E, lora, l, 'q', this.loraWs);
        addSegmentedLora(be, k, h, D, K * E, lora, l, 'k', this.loraWs);
        addSegmentedLora(be, v, h, D, K * E, lora, l, 'v', this.loraWs);
      }
      if (be.ropeKvWrite) be.ropeKvWrite(q, k, v, inp.positions, H, this.invFreq, kv.layers[i]!, inp.slots);
      else {
        be.rope(q, inp.positions, H, E, this.invFreq);
        be.rope(k, inp.positions, K, E, this.invFreq);
        be.kvWrite(kv.layers[i]!, k, v, inp.slots);
      }
      be.attention(att, q, kv.layers[i]!, this.attnShape, inp.attn);
      be.matmul(proj, att, L.wo, T);
      if (lora) addSegmentedLora(be, proj, att, H * E, D, lora, l, 'o', this.loraWs);
      // MLP block: x += Wdown · (silu(Wgate h) * Wup h), h = rmsnorm(x)
      addNorm(be, x, proj, h, L.postNorm, T, cfg.rmsNormEps);
      matmuls(be, [gate, up], h, [L.wGate, L.wUp], T);
      if (lora) {
        addSegmentedLora(be, gate, h, D, F, lora, l, 'gate', this.loraWs);
        addSegmentedLora(be, up, h, D, F, lora, l, 'up', this.loraWs);
      }
      be.swiglu(gate, gate, up);
      be.matmul(proj, gate, L.wDown, T);
      if (lora) addSegmentedLora(be, proj, gate, F, D, lora, l, 'down', this.loraWs);
      if (i + 1 < n) {
        L = this.stream ? this.stream.layer(i + 1) : this.weights.layers[i + 1]!;
        addNorm(be, x, proj, h, L.inputNorm, T, cfg.rmsNormEps);  // the next layer's input norm
      } else {
        be.add(x, proj);
      }
    }
  }

  /**
   * Final norm + head over rows `logitRows` of x (T, D): logits (numLogits, V), in `logitsOut` when given (else a new
   * array handed to the caller); hiddenOut (R, D) gets the normed rows.
   */
  head(x: Float32Array, logitRows: Int32Array, numLogits: number, hiddenOut?: Float32Array, logitsOut?: Float32Array): Float32Array {
    const cfg = this.config;
    const be = this.backend;
    const D = cfg.hiddenSize;
    const T = x.length / D;
    this.ws.ensure(cfg, T);
    const h = this.ws.h;
    // only the rows that need logits go through the final norm and the head
    const R = logitRows.length;
    const rows = R === T && isIdentity(logitRows) ? x : gatherRows(x, logitRows, D, h);
    const normed = h.subarray(0, R * D);
    be.rmsnorm(normed, rows, this.weights.norm, R, cfg.rmsNormEps);
    if (hiddenOut) hiddenOut.set(normed);
    if (logitsOut && logitsOut.length < numLogits * cfg.vocabSize) {
      throw new Error(`head: logitsOut holds ${logitsOut.length} values, ${numLogits} rows of logits need ${numLogits * cfg.vocabSize}`);
    }
    // (RL, V): every value is written by the matmul
    const logits = logitsOut ? logitsOut.subarray(0, numLogits * cfg.vocabSize) : new Float32Array(numLogits * cfg.vocabSize);
    if (numLogits > 0) be.matmul(logits, normed.subarray(0, numLogits * D), this.weights.head, numLogits);
    return logits;
  }
}

/** x += d, then h = rmsnorm(x) · g: one call where the backend has addRmsnorm, else add then rmsnorm. */
function addNorm(be: Backend, x: Float32Array, d: Float32Array, h: Float32Array, g: Float32Array, M: number, eps: number): void {
  if (be.addRmsnorm) be.addRmsnorm(x, d, h, g, M, eps);
  else {
    be.add(x, d);
    be.rmsnorm(h, x, g, M, eps);
  }
}

/** ys[i] = x · ws[i]ᵀ: one call where the backend has matmulMany (q/k/v and gate/up share x), else one per weight. */
function matmuls(be: Backend, ys: readonly Float32Array[], x: Float32Array, ws: readonly Tensor[], M: number): void {
  if (be.matmulMany) be.matmulMany(ys, x, ws, M);
  else for (let i = 0; i < ws.length; i++) be.matmul(ys[i]!, x, ws[i]!, M);
}

function isIdentity(rows: Int32Array): boolean {
  for (let i = 0; i < rows.length; i++) if (rows[i] !== i) return false;
  return true;
}

/** out (R, D) = x rows; out must not overlap the rows read after it is written (rows are ascending). */
export function gatherRows(x: Float32Array, rows: Int32Array, D: number, out: Float32Array): Float32Array {
  for (let i = 0; i < rows.length; i++) out.set(x.subarray(rows[i]! * D, rows[i]! * D + D), i * D);
  return out.subarray(0, rows.length * D);
}

/** Norm weights are stored in any float dtype; compute with f32. */
function vector(t: Tensor): Float32Array {
  const out = new Float32Array(t.numel);
  dequantizeRow(t, 0, out);
  return out;
}
