// On-policy distillation (GKD, Agarwal et al. 2024, "On-Policy Distillation of Language Models"): with probability λ a
// micro-batch is replaced by the student's own continuations of its prompts, sampled from the student as it stands
// (floe's batched sampler, model/generate-batch.ts, over views of the trained weights), which the teacher, held in memory, scores on the fly; the KD loss
// is then taken on those tokens, so the student learns from the teacher where its own samples go.
//
// A sample's prompt is its tokens before the first target (loss-masked) token; the continuation has at most as many
// tokens as the sample's own completion (or maxNewTokens) and ends early at EOS (kept as a target).
// T rows of a packed batch, k teacher tokens per target row, V vocab.

import type { LlamaModel } from '../model/llama.js';
import { sampleBatch } from '../model/generate-batch.js';
import type { LlamaTrainModel, LogitsLoss, PackedBatch } from '../model/llama-train.js';
import { packSamples, type Sample } from './data.js';
import { KdRowLoss, TeacherTopK, type KdLossConfig } from './kd-loss.js';
import { mix32, Rng } from './rng.js';
import type { PreparedBatch } from './trainer.js';

export interface OnPolicyOptions {
  readonly lambda: number; // probability that a micro-batch is on-policy, in [0, 1]
  readonly sampleTemperature: number; // the student's sampling temperature (0: greedy); not the distillation temperature
  readonly maxNewTokens: number | null; // null: the sample's own completion length
  readonly maxSeqLen: number;
  readonly topK: number; // teacher tokens per row (k = V: the whole distribution)
  readonly kdRatio: number; // weight of the KD loss on an on-policy batch (it has no CE part)
  readonly loss: KdLossConfig;
  /** Every sample the student wrote (prompt ids, continuation ids), in batch order. */
  readonly onSample?: (s: { readonly line: number; readonly prompt: readonly number[]; readonly output: readonly number[] }) => void;
}

/** Teacher top-k per batch row with a target: ids / logp (T, k), log rest mass (T). */
interface Scored { readonly ids: Int32Array; readonly logp: Float32Array; readonly rest: Float32Array }

export class OnPolicy {
  private student: LlamaModel | null = null;
  private readonly top: TeacherTopK;
  private readonly loss: KdRowLoss;
  private readonly scored = new WeakMap<PackedBatch, Scored>();
  batches = 0; // on-policy micro-batches made
  generatedTokens = 0;
  sampleSeconds = 0;

  constructor(private readonly teacher: LlamaTrainModel, private readonly o: OnPolicyOptions) {
    if (!(o.lambda >= 0 && o.lambda <= 1)) throw new RangeError(`on-policy λ must be in [0, 1], got ${o.lambda}`);
    if (!(o.sampleTemperature >= 0 && Number.isFinite(o.sampleTemperature))) throw new RangeError(`on-policy sampling temperature must be >= 0, got ${o.sampleTemperature}`);
    if (o.maxNewTokens !== null && !(Number.isInteger(o.maxNewTokens) && o.maxNewTokens >= 1)) throw new RangeError(`on-policy max new tokens must be an integer >= 1, got ${o.maxNewTokens}`);
    const V = teacher.config.vocabSize;
    this.top = new TeacherTopK(V, o.topK, o.loss.temperature);
    this.loss = new KdRowLoss(V, o.topK, o.loss);
  }

  bind(student: LlamaTrainModel): void {
    if (student.config.vocabSize !== this.teacher.config.vocabSize) throw new Error(`student vocab ${student.config.vocabSize} is not the teacher's ${this.teacher.config.vocabSize}`);
    this.student = student.inferenceModel();
  }

  /** The micro-batch as it is (probability 1 − λ), or the student's continuations scored by the teacher. */
  prepare(samples: readonly Sample[], batch: PackedBatch, key: number): PreparedBatch {
    if (!(new Rng(key).next() < this.o.lambda)) return { samples, batch, onPolicy: false };
    if (!this.student) throw new Error('on-policy distillation: the student was not bound before the first batch');
    const t0 = performance.now();
    // prompts: every token before the first target; budgets: the sample's own completion length (or maxNewTokens)
    const firsts = samples.map((s) => {
      let p = 1;
      while (p < s.tokens.length && !s.mask[p]) p++;
      if (p >= s.tokens.length) throw new Error(`data line ${s.line}: no target tokens to continue`);
      return p;
    });
    const reqs = samples.map((s, i) => ({
      promptIds: Array.from(s.tokens.subarray(0, firsts[i])),
      maxTokens: Math.min(this.o.maxNewTokens ?? s.tokens.length - firsts[i]!, this.o.maxSeqLen - firsts[i]!),
      sampling: { temperature: this.o.sampleTemperature, topK: 0, topP: 1, minP: 0, seed: mix32(key, i, 0x5a) },
    }));
    const outputs = sampleBatch(this.student, reqs, { kvDtype: 'f32' }); // all of the micro-batch's sequences decode together
    const out = samples.map((s, i): Sample => {
      const prompt = reqs[i]!.promptIds, output = outputs[i]!;
      this.generatedTokens += output.length;
      this.o.onSample?.({ line: s.line, prompt, output });
      const tokens = Int32Array.from([...prompt, ...output]);
      const mask = new Uint8Array(tokens.length);
      mask.fill(1, prompt.length);
      return { tokens, mask, line: s.line };
    });
    const b = packSamples(out);
    this.sampleSeconds += (performance.now() - t0) / 1000;
    // the teacher's top-k of every target row, at the distillation temperature
    const k = this.o.topK, V = this.teacher.config.vocabSize, T = b.tokens.length;
    const sc: Scored = { ids: new Int32Array(T * k), logp: new Float32Array(T * k), rest: new Float32Array(T).fill(NaN) };
    const top = this.top;
    this.teacher.evalLoss(b, {
      ceWeight: 0,
      chunk(logits, _d, rows, i0, n) {
        for (let i = 0; i < n; i++) { const r = rows[i0 + i]!; sc.rest[r] = top.row(logits, i * V, sc.ids, sc.logp, r * k); }
        return 0;
      },
    });
    this.scored.set(b, sc);
    this.batches++;
    return { samples: out, batch: b, onPolicy: true };
  }

  /** The KD loss of a batch prepare() made: kdRatio · T² · D(teacher ‖ student) per target row, no CE. */
  lossFor(b: PackedBatch): LogitsLoss | null {
    const sc = this.scored.get(b);
    if (!sc) return null;
    const { loss } = this, k = this.o.topK, V = this.teacher.config.vocabSize, w = this.o.kdRatio;
    return {
      ceWeight: 0,
      chunk(logits, dlogits, rows, i0, n, scale) {
        let sum = 0;
        for (let i = 0; i < n; i++) {
          const r = rows[i0 + i]!;
          if (Number.isNaN(sc.rest[r]!)) throw new Error(`on-policy batch row ${r} has a target but no teacher score`);
          sum += loss.row(logits, i * V, sc.ids, r * k, sc.logp, r * k, sc.rest[r]!, dlogits, scale * w);
        }
        return sum;
      },
    };
  }
}
