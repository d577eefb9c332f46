// Llama training model: forward that keeps what backward needs (or only block inputs with activation
// checkpointing), explicit *_forward / *_backward per module, chunked cross-entropy, LoRA or full fine-tuning.
//
// T tokens in the packed batch, S samples, D hidden, H heads, K kv heads, E head dim, F ffn hidden, V vocab,
// N / C output / input features of a linear, r LoRA rank, R rows with a counted target.

import type { AttentionShape, TrainBackend } from '../backend/backend.js';
import { dequantizeRow } from '../tensor/codecs.js';
import { f32Tensor, type Tensor } from '../tensor/tensor.js';
import type { LlamaConfig } from './config.js';
import { LlamaModel, type LayerRange, type LlamaLayer } from './llama.js';
import type { LayerStream } from './offload.js';
import { LORA_FIELD, LORA_MODULE, LORA_TARGETS, loraScale, withLoraBackend, type LoraAdapter, type LoraLinear, type LoraTarget } from './lora.js';

/** Samples packed row-wise; attention stays inside each sample; positions restart at 0 in each. */
export interface PackedBatch {
  readonly tokens: Int32Array; // (T)
  readonly targets: Int32Array; // (T) the token each row predicts, -1 = no loss on this row
  readonly positions: Int32Array; // (T)
  readonly segStart: Int32Array; // (S+1), segStart[S] = T
}

/** A trainable f32 tensor and its gradient (same length); names are HF / PEFT tensor names. */
export interface TrainParam {
  readonly name: string;
  readonly shape: readonly number[];
  readonly value: Float32Array;
  readonly grad: Float32Array;
  readonly decay: boolean; // weight decay applies (not to norm gains)
}

export interface TrainModelOptions {
  /** LoRA adapter to train (the base stays frozen in its stored dtype); null with `full`. */
  readonly adapter: LoraAdapter | null;
  /** Train every weight as an f32 master copy. */
  readonly full: boolean;
  /** Keep only each block's input; recompute its forward during backward. */
  readonly checkpointActivations: boolean;
  /** Rows of logits materialised at once by the loss (default: about 4M logits, at least LOSS_CHUNK_MIN_ROWS rows). */
  readonly lossChunkRows?: number;
}

/** One micro-batch in flight on a pipeline stage (parallel/train-stage.ts): its own saved activations. */
interface StageSlot {
  T: number; // capacity in tokens
  acts: Acts[]; // per held layer (none with checkpointing)
  inputs: Float32Array[]; // (T, D) per held layer, checkpointing only
  x: Float32Array; // (T, D) the stage's output residual (sent on, or the head's input on the last stage)
  dx: Float32Array; // (T, D) the gradient w.r.t. the stage's input
}

/** A linear: frozen or trainable weight, optional LoRA. */
interface Linear {
  readonly w: Tensor; // (N, C); an f32 view of the master when trainable
  readonly dw: Float32Array | null; // (N, C) when trainable
  readonly lora: LoraLinear | null;
  readonly site: number; // dropout stream id: layer * 8 + target index
}

interface Block {
  readonly inputNorm: Float32Array; // (D)
  readonly dInputNorm: Float32Array | null;
  readonly postNorm: Float32Array; // (D)
  readonly dPostNorm: Float32Array | null;
  readonly lin: Record<LoraTarget, Linear>;
}

/** One block's saved activations for T tokens (f32, row-major). The normed inputs and the SwiGLU output are not kept:
 *  the backward recomputes them (same kernels, same inputs: bitwise the same) into one-layer scratch, which saves
 *  2·T·D + T·F floats per layer (a third of a 1B block's activations) for an rmsnorm and a swiglu more. */
class Acts {
  xIn: Float32Array; xMid: Float32Array; // (T, D)
  q: Float32Array; att: Float32Array; // (T, H*E), q after rope
  k: Float32Array; v: Float32Array; // (T, K*E), k after rope
  lse: Float32Array; // (T, H)
  gate: Float32Array; up: Float32Array; // (T, F)
  u: Partial<Record<LoraTarget, Float32Array>> = {}; // (T, r) s · A·drop(x) per adapted linear

  constructor(cfg: LlamaConfig, T: number, rank: Partial<Record<LoraTarget, number>>) {
    const { hiddenSize: D, numHeads: H, numKvHeads: K, headDim: E, intermediateSize: F } = cfg;
    this.xIn = new Float32Array(T * D); this.xMid = new Float32Array(T * D);
    this.q = new Float32Array(T * H * E); this.att = new Float32Array(T * H * E);
    this.k = new Float32Array(T * K * E); this.v = new Float32Array(T * K * E);
    this.lse = new Float32Array(T * H);
    this.gate = new Float32Array(T * F); this.up = new Float32Array(T * F);
    for (const t of LORA_TARGETS) if (rank[t]) this.u[t] = new Float32Array(T * rank[t]!);
  }

  get bytes(): number {
    let n = 0;
    for (const a of [this.xIn, this.xMid, this.q, this.att, this.k, this.v, this.lse, this.gate, this.up, ...Object.values(this.u)]) n += a!.byteLength;
    return n;
  }
}

export interface StepResult {
  readonly lossSum: number; // summed cross-entropy over counted rows (f64)
  readonly counted: number; // rows with a target
  readonly extraSum: number; // summed LogitsLoss over counted rows (0 without one)
}

/** A loss on the logits of the counted rows beside cross-entropy (distillation); sees each chunk of logits before the
 *  cross-entropy turns them into gradients. */
export interface LogitsLoss {
  /** Weight of the cross-entropy gradient (its reported loss stays unweighted). */
  readonly ceWeight: number;
  /** logits (n, V) of batch rows rows[i0 .. i0+n); adds scale · ∂loss/∂logits into dlogits (n, V) when given; returns the summed loss. */
  chunk(logits: Float32Array, dlogits: Float32Array | null, rows: readonly number[], i0: number, n: number, scale: number): number;
}

/** A loss on the final-normed hidden states h (T, D): returns its sum; with dh (T, D, zeroed) adds the scaled ∂loss/∂h. */
export type HiddenLoss = (h: Float32Array, dh: Float32Array | null) => number;

/** Logit rows per loss chunk: at least this many, so the head's matmuls (21% of a 1B model's FLOPs at V = 128K) take the
 *  packed GEMM instead of the small-M tiles and stream the head weight 4× less often; 64 MiB of f32 logits at V = 128K. */
const LOSS_CHUNK_MIN_ROWS = 128;

export class LlamaTrainModel {
  readonly invFreq: Float32Array; // (E/2)
  readonly attnShape: AttentionShape;
  readonly embed: Tensor; // (V, D)
  readonly dEmbed: Float32Array | null;
  readonly norm: Float32Array; // (D)
  readonly dNorm: Float32Array | null;
  readonly head: Tensor; // (V, D)
  readonly dHead: Float32Array | null; // dEmbed itself when tied
  readonly blocks: Block[] = [];
  readonly params: TrainParam[] = [];
  readonly loraScale: number;
  readonly dropout: number;
  /** Seeds the LoRA dropout masks of the next forward (a recompute reuses the same masks). */
  dropoutKey = 0;
  private readonly lossChunkRows: number;

  // activations: per layer, or (checkpointing) per-layer inputs plus one recompute set
  private T = 0;
  private acts: Acts[] = [];
  private inputs: Float32Array[] = []; // (T, D) per layer, checkpointing only
  private s: Scratch | null = null;
  // streamed layers (model/offload.ts): a Block per staging view of a layer; passes in these orders
  private stream: LayerStream | null = null;
  private readonly baseLayers: readonly LlamaLayer[];
  private readonly streamBlocks = new Map<LlamaLayer, Block>();
  private readonly trainOrder: number[]; // 0 .. N-1, N-1 .. 0
  private readonly evalOrder: number[]; // 0 .. N-1
  /** Global index of blocks[0]: a pipeline stage holds layers [layer0, layer0 + blocks.length). */
  readonly layer0: number;
  private slots: (StageSlot | undefined)[] = [];
  private staged = false; // stage mode: activations live in slots

  private constructor(readonly config: LlamaConfig, readonly backend: TrainBackend, readonly opts: TrainModelOptions, base: LlamaModel) {
    this.invFreq = base.invFreq;
    this.attnShape = base.attnShape;
    const w = base.weights;
    this.baseLayers = w.layers;
    this.layer0 = base.range.start;
    this.evalOrder = w.layers.map((_, l) => l);
    this.trainOrder = [...this.evalOrder, ...this.evalOrder.slice().reverse()];
    const full = opts.full;
    if (full && opts.adapter) throw new Error('full fine-tuning and LoRA are exclusive');
    const adapter = opts.adapter;
    this.loraScale = adapter ? loraScale(adapter.config) : 0;
    this.dropout = adapter?.config.dropout ?? 0;
    const V = config.vocabSize;
    this.lossChunkRows = Math.max(1, opts.lossChunkRows ?? Math.max(LOSS_CHUNK_MIN_ROWS, Math.floor((4 << 20) / V)));

    // full fine-tuning: f32 master copies viewed as Tensors, so the same matmul kernels read them
    const master = (name: string, t: Tensor, decay: boolean): [Tensor, Float32Array] => {
      const value = new Float32Array(t.numel);
      for (let r = 0; r < t.rows; r++) dequantizeRow(t, r, value.subarray(r * t.cols, (r + 1) * t.cols));
      const grad = new Float32Array(t.numel);
      this.params.push({ name, shape: [...t.shape], value, grad, decay });
      return [f32Tensor(t.shape, value), grad];
    };
    const vec = (name: string, v: Float32Array): [Float32Array, Float32Array | null] => {
      if (!full) return [v, null];
      const value = v.slice();
      const grad = new Float32Array(v.length);
      this.params.push({ name, shape: [v.length], value, grad, decay: false });
      return [value, grad];
    };

    if (full) {
      [this.embed, this.dEmbed] = master('model.embed_tokens.weight', w.embed, true);
    } else {
      this.embed = w.embed;
      this.dEmbed = null;
    }
    for (let l = base.range.start; l < base.range.end; l++) {
      const L = w.layers[l - base.range.start]!;
      const p = `model.layers.${l}.`;
      const [inputNorm, dInputNorm] = vec(p + 'input_layernorm.weight', L.inputNorm);
      const lin = {} as Record<LoraTarget, Linear>;
      LORA_TARGETS.forEach((t, ti) => {
        const site = l * 8 + ti;
        const name = `${p}${LORA_MODULE[t]}.weight`;
        if (full) {
          const [wt, dw] = master(name, L[LORA_FIELD[t]], true);
          lin[t] = { w: wt, dw, lora: null, site };
          return;
        }
        const lo = adapter?.layers[l]?.[t] ?? null;
        if (lo) {
          const base = L[LORA_FIELD[t]];
          if (base.rows !== lo.N || base.cols !== lo.C) throw new Error(`LoRA ${p}${LORA_MODULE[t]} is (${lo.N}, ${lo.C}), weight is [${base.shape.join(', ')}]`);
          lo.dA ??= new Float32Array(lo.a.length);
          lo.dB ??= new Float32Array(lo.b.length);
          const peft = `base_model.model.${p}${LORA_MODULE[t]}`;
          this.params.push({ name: `${peft}.lora_A.weight`, shape: [lo.rank, lo.C], value: lo.a, grad: lo.dA, decay: true });
          this.params.push({ name: `${peft}.lora_B.weight`, shape: [lo.N, lo.rank], value: lo.b, grad: lo.dB, decay: true });
        }
        lin[t] = { w: L[LORA_FIELD[t]], dw: null, lora: lo, site };
      });
      const [postNorm, dPostNorm] = vec(p + 'post_attention_layernorm.weight', L.postNorm);
      this.blocks.push({ inputNorm, dInputNorm, postNorm, dPostNorm, lin });
    }
    [this.norm, this.dNorm] = vec('model.norm.weight', w.norm);
    const tied = w.head === w.embed;
    if (full && !tied) {
      [this.head, this.dHead] = master('lm_head.weight', w.head, true);
    } else {
      this.head = tied ? this.embed : w.head;
      this.dHead = tied ? this.dEmbed : null;
    }
  }

  /** Build from HF-named tensors (formats/load.ts); with `range`, only those layers (a pipeline stage: use stageForward / stageBackward). */
  static fromTensors(config: LlamaConfig, tensors: ReadonlyMap<string, Tensor>, backend: TrainBackend, opts: TrainModelOptions,
    ropeFreqFactors: Float32Array | null = null, range?: LayerRange): LlamaTrainModel {
    return new LlamaTrainModel(config, backend, opts, LlamaModel.fromTensors(config, tensors, backend, ropeFreqFactors, range));
  }

  /**
   * The model as it stands, for inference (generate): views of the trained weights (full: the f32 masters; LoRA: the
   * frozen base plus the live adapter), so it sees every later update without a copy; no dropout.
   */
  inferenceModel(): LlamaModel {
    if (this.stream) throw new Error('an inference view needs every layer in memory; streamed layers (offload) are not supported here');
    const layers: LlamaLayer[] = this.blocks.map((b) => ({
      inputNorm: b.inputNorm, postNorm: b.postNorm,
      wq: b.lin.q.w, wk: b.lin.k.w, wv: b.lin.v.w, wo: b.lin.o.w, wGate: b.lin.gate.w, wUp: b.lin.up.w, wDown: b.lin.down.w,
    }));
    const weights = { embed: this.embed, layers, norm: this.norm, head: this.head };
    const adapter = this.opts.adapter;
    const m = new LlamaModel(this.config, weights, adapter ? withLoraBackend(this.backend, layers, adapter) : this.backend);
    m.invFreq.set(this.invFreq); // keeps any rope factors folded in
    return m;
  }

  /** Stream the frozen base's layers from disk (LoRA only: full fine-tuning trains f32 copies held in memory). */
  attachStream(s: LayerStream): void {
    if (this.opts.full) throw new Error('streamed layers need a frozen base: full fine-tuning keeps every weight in memory');
    s.bind(this.baseLayers);
    this.stream = s;
  }

  /** Layer l's block with its weights in memory (a streamed layer's from its staging slot). */
  private block(l: number): Block {
    const st = this.stream;
    if (!st || !st.streamed[l]) return this.blocks[l]!;
    const L = st.layer(l);
    let b = this.streamBlocks.get(L);
    if (!b) {
      const r = this.blocks[l]!;
      const lin = {} as Record<LoraTarget, Linear>;
      for (const t of LORA_TARGETS) lin[t] = { ...r.lin[t], w: L[LORA_FIELD[t]] };
      b = { ...r, lin };
      this.streamBlocks.set(L, b);
    }
    return b;
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad.fill(0);
  }

  /** Bytes of saved activations at the current capacity (for memory reports). */
  get activationBytes(): number {
    let n = 0;
    for (const a of this.acts) n += a.bytes;
    for (const x of this.inputs) n += x.byteLength;
    for (const sl of this.slots) if (sl) for (const a of [...sl.acts, ...sl.inputs]) n += a instanceof Acts ? a.bytes : a.byteLength;
    return n;
  }

  /**
   * Forward and backward over one packed batch; gradients are accumulated (+=) into the params.
   * dlogits are scaled by `scale` (1 / counted targets of the whole optimizer step gives the mean loss).
   */
  forwardBackward(b: PackedBatch, scale: number, extra: LogitsLoss | null = null): StepResult {
    return this.run(b, (dx, x, T) => this.head_forward_backward(dx, x, b, T, scale, true, extra));
  }

  /** Loss only (no dropout, no gradients), keeping one block's activations at a time. */
  evalLoss(b: PackedBatch, extra: LogitsLoss | null = null): StepResult {
    this.checkBatch(b);
    const T = b.tokens.length;
    const D = this.config.hiddenSize;
    this.ensure(T);
    const s = this.s!;
    const x = s.x.subarray(0, T * D);
    this.backend.embedding(x, this.embed, b.tokens);
    this.stream?.begin(this.evalOrder);
    for (let l = 0; l < this.blocks.length; l++) this.block_forward(l, x, this.acts[0]!, b, T, false);
    return this.head_forward_backward(null, x, b, T, 0, false, extra);
  }

  /** Forward and backward with a loss on the final-normed hidden states (pooled embeddings) instead of the head; returns its summed loss. */
  forwardBackwardHidden(b: PackedBatch, loss: HiddenLoss): number {
    return this.run(b, (dx, x, T) => this.hidden_forward_backward(dx, x, T, loss));
  }

  /** The hidden-state loss only (no dropout, no gradients). */
  evalHidden(b: PackedBatch, loss: HiddenLoss): number {
    this.checkBatch(b);
    const T = b.tokens.length;
    const D = this.config.hiddenSize;
    this.ensure(T);
    const x = this.s!.x.subarray(0, T * D);
    this.backend.embedding(x, this.embed, b.tokens);
    for (let l = 0; l < this.blocks.length; l++) this.block_forward(l, x, this.acts[0]!, b, T, false);
    return this.hidden_forward_backward(null, x, T, loss);
  }

  /** Blocks forward, `top` (the loss: dx (T, D) from x (T, D)), blocks backward, embedding backward. */
  private run<R>(b: PackedBatch, top: (dx: Float32Array, x: Float32Array, T: number) => R): R {
    this.checkBatch(b);
    const T = b.tokens.length;
    const { hiddenSize: D } = this.config;
    this.ensure(T);
    const s = this.s!;
    const ckpt = this.opts.checkpointActivations;
    const x = s.x.subarray(0, T * D); // (T, D) residual stream
    this.backend.embedding(x, this.embed, b.tokens);
    this.stream?.begin(this.trainOrder);
    for (let l = 0; l < this.blocks.length; l++) {
      if (ckpt) this.inputs[l]!.set(x);
      this.block_forward(l, x, ckpt ? this.acts[0]! : this.acts[l]!, b, T, true);
    }
    const dx = s.dx.subarray(0, T * D);
    const res = top(dx, x, T);
    for (let l = this.blocks.length - 1; l >= 0; l--) {
      let a = this.acts[l]!;
      if (ckpt) {
        a = this.acts[0]!;
        const xr = s.xr.subarray(0, T * D);
        xr.set(this.inputs[l]!.subarray(0, T * D)); // the saved input is sized for the largest batch so far
        this.block_forward(l, xr, a, b, T, true); // recompute: same inputs, same dropout masks
      }
      this.block_backward(l, dx, a, b, T);
    }
    if (this.dEmbed) this.backend.embeddingBackward(this.dEmbed, dx, b.tokens, D);
    return res;
  }

  // ------------------------------------------------------------------------------------------ pipeline stage

  /**
   * Forward of the held layers for the micro-batch in `slot` (its activations stay there until stageBackward).
   * xIn (T, D) is the previous stage's output, or null on the first stage (embedding). Returns the output (T, D),
   * a view that stays valid (and unchanged) until the slot's next stageForward.
   */
  stageForward(slot: number, b: PackedBatch, xIn: Float32Array | null): Float32Array {
    this.checkBatch(b);
    const T = b.tokens.length;
    const D = this.config.hiddenSize;
    this.staged = true;
    this.ensure(T);
    const sl = this.slot(slot, T);
    const ckpt = this.opts.checkpointActivations;
    const x = sl.x.subarray(0, T * D);
    if (xIn) {
      if (xIn.length !== T * D) throw new Error(`stage input has ${xIn.length} values, expected T·D = ${T}·${D}`);
      x.set(xIn);
    } else this.backend.embedding(x, this.embed, b.tokens);
    for (let l = 0; l < this.blocks.length; l++) {
      if (ckpt) sl.inputs[l]!.set(x);
      this.block_forward(l, x, ckpt ? this.acts[0]! : sl.acts[l]!, b, T, true);
    }
    return x;
  }

  /**
   * Backward of the micro-batch in `slot`: dOut (T, D) is the next stage's gradient w.r.t. this stage's output, or
   * null on the last stage, where the final norm, head and loss (dlogits scaled by `scale`) run first. Returns dx
   * (T, D) w.r.t. the stage input (valid until the slot's next stageBackward) and, on the last stage, the loss.
   */
  stageBackward(slot: number, b: PackedBatch, dOut: Float32Array | null, scale: number): { dx: Float32Array; loss: StepResult | null } {
    const T = b.tokens.length;
    const D = this.config.hiddenSize;
    const sl = this.slots[slot];
    if (!sl || sl.T < T) throw new Error(`stage slot ${slot} holds no forward of ${T} tokens`);
    const s = this.s!;
    const x = sl.x.subarray(0, T * D);
    const dx = sl.dx.subarray(0, T * D);
    let loss: StepResult | null = null;
    if (dOut) {
      if (dOut.length !== T * D) throw new Error(`stage output gradient has ${dOut.length} values, expected T·D = ${T}·${D}`);
      dx.set(dOut);
    } else loss = this.head_forward_backward(dx, x, b, T, scale, true, null);
    for (let l = this.blocks.length - 1; l >= 0; l--) {
      let a = sl.acts[l]!;
      if (this.opts.checkpointActivations) {
        a = this.acts[0]!;
        const xr = s.xr.subarray(0, T * D);
        xr.set(sl.inputs[l]!.subarray(0, T * D));
        this.block_forward(l, xr, a, b, T, true); // recompute: same inputs, same dropout masks
      }
      this.block_backward(l, dx, a, b, T);
    }
    if (this.dEmbed) this.backend.embeddingBackward(this.dEmbed, dx, b.tokens, D);
    return { dx, loss };
  }

  private slot(i: number, T: number): StageSlot {
    const cur = this.slots[i];
    if (cur && cur.T >= T) return cur;
    const cfg = this.config;
    const D = cfg.hiddenSize;
    const ckpt = this.opts.checkpointActivations;
    const ranks: Partial<Record<LoraTarget, number>> = {};
    for (const B of this.blocks) for (const t of LORA_TARGETS) if (B.lin[t].lora) ranks[t] = B.lin[t].lora!.rank;
    this.slots[i] = undefined; // drop the old buffers first
    const sl: StageSlot = {
      T, acts: ckpt ? [] : this.blocks.map(() => new Acts(cfg, T, ranks)),
      inputs: ckpt ? this.blocks.map(() => new Float32Array(T * D)) : [], x: new Float32Array(T * D), dx: new Float32Array(T * D),
    };
    this.slots[i] = sl;
    return sl;
  }

  // ------------------------------------------------------------------------------------------ modules

  /** y (T, N) = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ; keeps u = s · drop(x) Aᵀ (T, r) for the backward. */
  private linear_forward(y: Float32Array, x: Float32Array, lin: Linear, T: number, u: Float32Array | undefined, train: boolean): void {
    const be = this.backend;
    be.matmul(y, x, lin.w, T);
    const lo = lin.lora;
    if (!lo) return;
    const s = this.s!;
    const uu = u ? u.subarray(0, T * lo.rank) : s.u.subarray(0, T * lo.rank);
    const xa = train && this.dropout > 0 ? this.dropout_forward(s.xd.subarray(0, T * lo.C), x, lin.site) : x;
    if (be.loraForward) return be.loraForward(y, uu, xa, lo.a, lo.b, this.loraScale, T, lo.N, lo.C, lo.rank);
    be.matmul(uu, xa, lo.aT, T);
    for (let i = 0; i < uu.length; i++) uu[i]! *= this.loraScale;
    const yb = s.yb.subarray(0, T * lo.N);
    be.matmul(yb, uu, lo.bT, T);
    be.add(y, yb);
  }

  /** dx (T, C) (= or += when accumulate) from dy (T, N); dW, dA, dB accumulated where trainable. */
  private linear_backward(dx: Float32Array, dy: Float32Array, x: Float32Array, lin: Linear, T: number, accumulate: boolean, u: Float32Array | undefined): void {
    const be = this.backend;
    const N = lin.w.rows;
    const C = lin.w.cols;
    be.matmulBackwardInput(dx, dy, lin.w, T, accumulate);
    if (lin.dw) be.matmulBackwardWeight(lin.dw, dy, x, T, N, C);
    const lo = lin.lora;
    if (!lo) return;
    const s = this.s!;
    const r = lo.rank;
    if (be.loraBackward) {
      const uu = u!.subarray(0, T * r);
      if (this.dropout <= 0) return be.loraBackward(dx, lo.dA!, lo.dB!, dy, x, uu, lo.a, lo.b, this.loraScale, T, N, C, r, true);
      const xa = this.dropout_forward(s.xd.subarray(0, T * C), x, lin.site);
      const dxa = xa; // loraBackward reads each x element before it writes dx there
      be.loraBackward(dxa, lo.dA!, lo.dB!, dy, xa, uu, lo.a, lo.b, this.loraScale, T, N, C, r, false);
      this.dropout_backward(dxa, lin.site);
      be.add(dx, dxa);
      return;
    }
    be.matmulBackwardWeight(lo.dB!, dy, u!.subarray(0, T * r), T, N, r); // dB += dyᵀ (s·u)
    const du = s.du.subarray(0, T * r);
    be.matmulBackwardInput(du, dy, lo.bT, T, false); // du (T, r) = dy B
    for (let i = 0; i < du.length; i++) du[i]! *= this.loraScale;
    if (this.dropout > 0) {
      const xa = this.dropout_forward(s.xd.subarray(0, T * C), x, lin.site);
      be.matmulBackwardWeight(lo.dA!, du, xa, T, r, C); // dA += duᵀ drop(x)
      const dxa = s.xd.subarray(0, T * C);
      be.matmulBackwardInput(dxa, du, lo.aT, T, false);
      this.dropout_backward(dxa, lin.site);
      be.add(dx, dxa);
    } else {
      be.matmulBackwardWeight(lo.dA!, du, x, T, r, C); // dA += duᵀ x
      be.matmulBackwardInput(dx, du, lo.aT, T, true); // dx += du A
    }
  }

  /** out = x ⊙ mask / (1 - p); the mask is a hash of (dropoutKey, site, index), so a recompute matches. */
  private dropout_forward(out: Float32Array, x: Float32Array, site: number): Float32Array {
    const p = this.dropout;
    const k = 1 / (1 - p);
    const thresh = Math.floor(p * 2 ** 32);
    for (let i = 0; i < x.length; i++) out[i] = dropKeep(this.dropoutKey, site, i, thresh) ? x[i]! * k : 0;
    return out;
  }

  private dropout_backward(d: Float32Array, site: number): void {
    const k = 1 / (1 - this.dropout);
    const thresh = Math.floor(this.dropout * 2 ** 32);
    for (let i = 0; i < d.length; i++) d[i] = dropKeep(this.dropoutKey, site, i, thresh) ? d[i]! * k : 0;
  }

  /** x (T, D) += attn(rmsnorm(x)) then += mlp(rmsnorm(x)), in place; saves into `a`. */
  private block_forward(l: number, x: Float32Array, a: Acts, b: PackedBatch, T: number, train: boolean): void {
    const be = this.backend;
    const cfg = this.config;
    const B = this.block(l);
    const { hiddenSize: D, numHeads: H, numKvHeads: K, headDim: E, intermediateSize: F } = cfg;
    const xIn = a.xIn.subarray(0, T * D), xMid = a.xMid.subarray(0, T * D);
    const h1 = this.s!.h.subarray(0, T * D), h2 = h1, act = this.s!.act.subarray(0, T * F); // recomputed by the backward
    const q = a.q.subarray(0, T * H * E), att = a.att.subarray(0, T * H * E);
    const k = a.k.subarray(0, T * K * E), v = a.v.subarray(0, T * K * E);
    const gate = a.gate.subarray(0, T * F), up = a.up.subarray(0, T * F);
    const proj = this.s!.proj.subarray(0, T * D);
    // attention: x += Wo · attn(rope(Wq h), rope(Wk h), Wv h), h = rmsnorm(x)
    xIn.set(x);
    be.rmsnorm(h1, x, B.inputNorm, T, cfg.rmsNormEps);
    this.linear_forward(q, h1, B.lin.q, T, a.u.q, train);
    this.linear_forward(k, h1, B.lin.k, T, a.u.k, train);
    this.linear_forward(v, h1, B.lin.v, T, a.u.v, train);
    be.rope(q, b.positions, H, E, this.invFreq);
    be.rope(k, b.positions, K, E, this.invFreq);
    be.attentionDense(att, a.lse.subarray(0, T * H), q, k, v, b.segStart, this.attnShape);
    this.linear_forward(proj, att, B.lin.o, T, a.u.o, train);
    be.add(x, proj);
    // MLP: x += Wdown · (silu(Wgate h) * Wup h), h = rmsnorm(x)
    xMid.set(x);
    be.rmsnorm(h2, x, B.postNorm, T, cfg.rmsNormEps);
    this.linear_forward(gate, h2, B.lin.gate, T, a.u.gate, train);
    this.linear_forward(up, h2, B.lin.up, T, a.u.up, train);
    be.swiglu(act, gate, up);
    this.linear_forward(proj, act, B.lin.down, T, a.u.down, train);
    be.add(x, proj);
  }

  /** dx (T, D): gradient w.r.t. the block output in, w.r.t. the block input out. */
  private block_backward(l: number, dx: Float32Array, a: Acts, b: PackedBatch, T: number): void {
    const be = this.backend;
    const cfg = this.config;
    const B = this.block(l);
    const s = this.s!;
    const { hiddenSize: D, numHeads: H, numKvHeads: K, headDim: E, intermediateSize: F } = cfg;
    const sub = (x: Float32Array, n: number) => x.subarray(0, n);
    const dh = sub(s.dh, T * D), dtmp = sub(s.dtmp, T * D);
    // MLP
    const dact = sub(s.dact, T * F), dgate = sub(s.dgate, T * F), dup = sub(s.dup, T * F);
    const gate = sub(a.gate, T * F), up = sub(a.up, T * F), act = sub(s.act, T * F), h = sub(s.h, T * D);
    be.swiglu(act, gate, up); // recomputed (not saved)
    this.linear_backward(dact, dx, act, B.lin.down, T, false, a.u.down);
    be.swigluBackward(dgate, dup, dact, gate, up);
    be.rmsnorm(h, sub(a.xMid, T * D), B.postNorm, T, cfg.rmsNormEps); // h2, recomputed
    this.linear_backward(dh, dgate, h, B.lin.gate, T, false, a.u.gate);
    this.linear_backward(dh, dup, h, B.lin.up, T, true, a.u.up);
    be.rmsnormBackward(dtmp, B.dPostNorm, dh, sub(a.xMid, T * D), B.postNorm, T, cfg.rmsNormEps);
    be.add(dx, dtmp);
    // attention
    const datt = sub(s.datt, T * H * E), dq = sub(s.dq, T * H * E), dk = sub(s.dk, T * K * E), dv = sub(s.dv, T * K * E);
    this.linear_backward(datt, dx, sub(a.att, T * H * E), B.lin.o, T, false, a.u.o);
    be.attentionDenseBackward(dq, dk, dv, datt, sub(a.q, T * H * E), sub(a.k, T * K * E), sub(a.v, T * K * E),
      sub(a.att, T * H * E), sub(a.lse, T * H), b.segStart, this.attnShape);
    be.ropeBackward(dq, b.positions, H, E, this.invFreq);
    be.ropeBackward(dk, b.positions, K, E, this.invFreq);
    const h1 = h;
    be.rmsnorm(h1, sub(a.xIn, T * D), B.inputNorm, T, cfg.rmsNormEps); // recomputed
    this.linear_backward(dh, dq, h1, B.lin.q, T, false, a.u.q);
    this.linear_backward(dh, dk, h1, B.lin.k, T, true, a.u.k);
    this.linear_backward(dh, dv, h1, B.lin.v, T, true, a.u.v);
    be.rmsnormBackward(dtmp, B.dInputNorm, dh, sub(a.xIn, T * D), B.inputNorm, T, cfg.rmsNormEps);
    be.add(dx, dtmp);
  }

  /**
   * Final norm, head and cross-entropy over the rows with a target, `lossChunkRows` rows of logits at a time.
   * With dx, writes dx (T, D) = ∂loss/∂x of the final residual and accumulates dNorm / dHead.
   */
  private head_forward_backward(dx: Float32Array | null, x: Float32Array, b: PackedBatch, T: number, scale: number, train: boolean, extra: LogitsLoss | null): StepResult {
    const be = this.backend;
    const cfg = this.config;
    const { hiddenSize: D, vocabSize: V } = cfg;
    const s = this.s!;
    const h = s.hF.subarray(0, T * D);
    be.rmsnorm(h, x, this.norm, T, cfg.rmsNormEps);
    const rows: number[] = [];
    for (let t = 0; t < T; t++) {
      const tg = b.targets[t]!;
      if (tg < 0) continue;
      if (tg >= V) throw new RangeError(`target token ${tg} at row ${t} is outside the vocabulary [0, ${V})`);
      rows.push(t);
    }
    const dh = train ? s.dhF.subarray(0, T * D) : null;
    dh?.fill(0);
    let lossSum = 0, extraSum = 0;
    const n0 = this.lossChunkRows;
    for (let i0 = 0; i0 < rows.length; i0 += n0) {
      const n = Math.min(n0, rows.length - i0);
      const hc = s.hc.subarray(0, n * D); // (n, D) gathered rows
      const tg = s.tg.subarray(0, n);
      for (let i = 0; i < n; i++) {
        const t = rows[i0 + i]!;
        hc.set(h.subarray(t * D, (t + 1) * D), i * D);
        tg[i] = b.targets[t]!;
      }
      const logits = s.logits.subarray(0, n * V); // (n, V): the only logits alive
      be.matmul(logits, hc, this.head, n);
      if (extra) {
        const raw = s.kdLogits.subarray(0, n * V); // the logits, kept: cross-entropy overwrites them
        raw.set(logits);
        lossSum += be.crossEntropy(logits, logits, tg, n, scale * extra.ceWeight);
        extraSum += extra.chunk(raw, dh ? logits : null, rows, i0, n, scale);
      } else lossSum += be.crossEntropy(logits, logits, tg, n, scale); // logits now hold dlogits
      if (!dh) continue;
      const dhc = s.dhc.subarray(0, n * D);
      be.matmulBackwardInput(dhc, logits, this.head, n, false);
      if (this.dHead) be.matmulBackwardWeight(this.dHead, logits, hc, n, V, D);
      for (let i = 0; i < n; i++) {
        const t = rows[i0 + i]!;
        dh.set(dhc.subarray(i * D, (i + 1) * D), t * D);
      }
    }
    if (dx && dh) be.rmsnormBackward(dx, this.dNorm, dh, x, this.norm, T, cfg.rmsNormEps);
    return { lossSum, counted: rows.length, extraSum };
  }

  /** h = rmsnorm(x) (T, D); the loss writes dh; dx (T, D) = rmsnorm backward (the head and its weight are not used). */
  private hidden_forward_backward(dx: Float32Array | null, x: Float32Array, T: number, loss: HiddenLoss): number {
    const cfg = this.config;
    const D = cfg.hiddenSize;
    const s = this.s!;
    const h = s.hF.subarray(0, T * D);
    this.backend.rmsnorm(h, x, this.norm, T, cfg.rmsNormEps);
    const dh = dx ? s.dhF.subarray(0, T * D) : null;
    dh?.fill(0);
    const sum = loss(h, dh);
    if (dx && dh) this.backend.rmsnormBackward(dx, this.dNorm, dh, x, this.norm, T, cfg.rmsNormEps);
    return sum;
  }

  // ------------------------------------------------------------------------------------------ memory

  private ensure(T: number): void {
    if (T <= this.T) return;
    const cfg = this.config;
    const ranks: Partial<Record<LoraTarget, number>> = {};
    let maxR = 1;
    let maxC = 1;
    let maxN = 1;
    for (const B of this.blocks) for (const t of LORA_TARGETS) {
      const lo = B.lin[t].lora;
      if (!lo) continue;
      ranks[t] = lo.rank;
      maxR = Math.max(maxR, lo.rank);
      maxC = Math.max(maxC, lo.C);
      maxN = Math.max(maxN, lo.N);
    }
    // stage mode keeps its activations in slots: here only the recompute set
    const nActs = this.opts.checkpointActivations ? 1 : this.staged ? 0 : this.blocks.length;
    // drop the old buffers first so peak memory is not old + new
    this.acts = [];
    this.inputs = [];
    this.s = null;
    for (let i = 0; i < nActs; i++) this.acts.push(new Acts(cfg, T, ranks));
    if (this.opts.checkpointActivations && !this.staged) for (let l = 0; l < this.blocks.length; l++) this.inputs.push(new Float32Array(T * cfg.hiddenSize));
    this.s = new Scratch(cfg, T, maxR, this.dropout > 0 ? maxC : 0, maxN, this.lossChunkRows, this.opts.checkpointActivations);
    this.T = T;
  }

  private checkBatch(b: PackedBatch): void {
    const T = b.tokens.length;
    if (b.targets.length !== T || b.positions.length !== T) throw new Error(`batch: tokens ${T}, targets ${b.targets.length}, positions ${b.positions.length} must be equal`);
    const S = b.segStart.length - 1;
    if (S < 1 || b.segStart[0] !== 0 || b.segStart[S] !== T) throw new Error(`batch: segStart must run from 0 to ${T}, got [${Array.from(b.segStart).join(', ')}]`);
    if (T === 0) throw new Error('batch is empty');
  }
}

/** Scratch buffers shared by every block (never saved across blocks). */
class Scratch {
  x: Float32Array; xr: Float32Array; proj: Float32Array; dx: Float32Array; dh: Float32Array; dtmp: Float32Array; // (T, D)
  hF: Float32Array; dhF: Float32Array; // (T, D)
  datt: Float32Array; dq: Float32Array; // (T, H*E)
  dk: Float32Array; dv: Float32Array; // (T, K*E)
  dact: Float32Array; dgate: Float32Array; dup: Float32Array; // (T, F)
  h: Float32Array; act: Float32Array; // (T, D), (T, F): the current block's normed input and SwiGLU output
  u: Float32Array; du: Float32Array; // (T, r)
  xd: Float32Array; // (T, max C) dropout input / its gradient (empty without dropout)
  yb: Float32Array; // (T, max N)
  hc: Float32Array; dhc: Float32Array; tg: Int32Array; logits: Float32Array; // loss chunk: (n, D), (n), (n, V)
  private kd: Float32Array | null = null; // (n, V) raw logits for a LogitsLoss, made on first use

  constructor(cfg: LlamaConfig, T: number, r: number, C: number, N: number, chunk: number, ckpt: boolean) {
    const { hiddenSize: D, numHeads: H, numKvHeads: K, headDim: E, intermediateSize: F, vocabSize: V } = cfg;
    const f = (n: number) => new Float32Array(n);
    this.x = f(T * D); this.xr = f(ckpt ? T * D : 0); this.proj = f(T * D); this.dx = f(T * D); this.dh = f(T * D); this.dtmp = f(T * D);
    this.hF = f(T * D); this.dhF = f(T * D);
    this.datt = f(T * H * E); this.dq = f(T * H * E); this.dk = f(T * K * E); this.dv = f(T * K * E);
    this.dact = f(T * F); this.dgate = f(T * F); this.dup = f(T * F);
    this.h = f(T * D); this.act = f(T * F);
    this.u = f(T * r); this.du = f(T * r); this.xd = f(T * C); this.yb = f(T * N);
    const n = Math.min(chunk, T);
    this.hc = f(n * D); this.dhc = f(n * D); this.tg = new Int32Array(n); this.logits = f(n * V);
  }

  get kdLogits(): Float32Array { return (this.kd ??= new Float32Array(this.logits.length)); }
}

/** murmur3 fmix32 of (key, site, index) compared with p · 2³²: true keeps the element. */
function dropKeep(key: number, site: number, i: number, thresh: number): boolean {
  let h = (Math.imul(i, 0x9e3779b1) ^ Math.imul(site + 1, 0x85ebca77) ^ key) >>> 0;
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) >= thresh;
}
