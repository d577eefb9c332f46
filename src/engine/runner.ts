// ModelRunner: one scheduler step → one packed forward pass over every scheduled token, then per-sequence
// sampling, logprobs, prompt logprobs and embedding rows.
//
// T tokens in the step, S sequences, R rows with logits, D hidden, V vocab, L block size.

import { applyMasks, masksRow, type TokenMasks } from '../model/token-masks.js';
import type { LlamaModel, ForwardInput } from '../model/llama.js';
import type { LoraAdapter, LoraBatch } from '../model/lora.js';
import type { KvCache } from '../model/kv-cache.js';
import { copyKvBlocks } from '../model/kv-cache.js';
import type { Sampler, TokenCounts } from '../model/sampler.js';
import { verifyDraft } from '../model/speculation.js';
import type { BlockCopy } from './block-pool.js';
import type { ConstraintState } from './constrained/token-mask.js';
import type { LogprobEntry } from './protocol.js';
import type { SchedulerOutput } from './scheduler.js';

/** One completion drawing the next token from a sequence's logits. */
export interface SamplingSlot {
  readonly sampler: Sampler;
  readonly counts: TokenCounts;
  readonly logprobs: number | null; // top-K; null → none
  readonly constraint: ConstraintState | null; // masks the logits before sampling (logprobs then describe the masked distribution)
  /** vLLM's token-masking request options (min_tokens, allowed_token_ids, bad_words); logprobs then describe the masked distribution, as for a constraint. */
  readonly masks?: TokenMasks | null;
}

/** What the runner reads of a sequence besides the scheduler's view. */
export interface RunnerSeq {
  readonly tokens: readonly number[];
  readonly promptLen: number;
  /** Prompt logprobs wanted (top-K) and how many prompt positions already have theirs (next to score: done + 1). */
  readonly promptLogprobs: { readonly k: number; done: number } | null;
  /** Embedding: final-normed hidden rows of prompt positions ≥ done are wanted (all for mean, the last for last). */
  readonly embed: { readonly pooling: 'mean' | 'last'; done: number } | null;
  /** Completions sampling from this sequence's next-token logits (itself, plus fork children when the prompt ends). */
  readonly slots: readonly SamplingSlot[];
  /** Draft tokens fed after `tokens` this step, verified by the single slot (speculative decoding); k ≤ numLookahead. */
  readonly draft: readonly number[];
  readonly draftQ: readonly Float32Array[] | undefined; // (k, V) draft distributions; undefined → one-hot
  readonly adapter?: LoraAdapter | null; // LoRA applied to this sequence's rows; null / absent → base
}

export interface SampledToken { readonly token: number; readonly logprob: LogprobEntry | null }

export interface SeqResult {
  readonly id: string;
  readonly sampled: readonly SampledToken[] | null; // one per slot, when this step reached the end of the sequence
  readonly verified: { readonly tokens: readonly SampledToken[]; readonly accepted: number } | null; // with a draft: accepted + 1 tokens
  readonly promptLogprobs: readonly LogprobEntry[]; // for prompt tokens done+1 .. (in order)
  readonly hidden: { readonly start: number; readonly rows: Float32Array } | null; // (rows, D) for positions start..
}

/** Row segments of consecutive sequences sharing an adapter; undefined when every sequence runs on the base. */
function loraSegments(out: SchedulerOutput, seqOf: (id: string) => RunnerSeq): LoraBatch | undefined {
  const adapters: LoraAdapter[] = [];
  const starts: number[] = [];
  const which: number[] = [];
  let t = 0;
  let any = false;
  for (const sch of out.seqs) {
    const a = seqOf(sch.id).adapter ?? null;
    const ai = a === null ? -1 : adapters.indexOf(a) >= 0 ? adapters.indexOf(a) : adapters.push(a) - 1;
    any ||= ai >= 0;
    if (which.length === 0 || which[which.length - 1] !== ai) { starts.push(t); which.push(ai); }
    t += sch.numTokens;
  }
  if (!any) return undefined;
  starts.push(t);
  return { adapters, segStart: Int32Array.from(starts), segAdapter: Int32Array.from(which) };
}

/**
 * A forward pass run elsewhere as well (pipeline stages on other ranks): the runner hands it the step and gets the
 * logits back asynchronously. How the other stages are reached is its business.
 */
export interface RemoteForward {
  forward(inp: ForwardInput, kv: KvCache, hiddenOut?: Float32Array): Promise<Float32Array>;
  /** Copy-on-write block copies the other stages must make in their caches before the next step. */
  copyBlocks(copies: readonly BlockCopy[]): void;
}

/** A step's packed input and how to read its output rows back into per-sequence results. */
interface Prepared {
  readonly inp: ForwardInput;
  readonly hiddenOut: Float32Array | undefined; // (R, D)
  readonly plan: readonly { lp: number[]; sample: number; hidden: number[]; hiddenStart: number }[];
  readonly logitRows: readonly number[];
  readonly positions: Int32Array; // (T)
}

export class ModelRunner {
  private readonly logp: Float32Array; // (V)
  private readonly masked: Float32Array; // (V) a constrained slot's logits
  // (R, V) the step's logits, reused step after step (finish reads them before the next forward): a fresh 8 MB array
  // per 16-row step of a 128K vocabulary cost a zero-fill, and in the server's worker page faults on top
  private logits = new Float32Array(0);
  maskedSamples = 0; // slots sampled through a constraint mask (tests check the constrained path ran)
  private keepBuf = new Float32Array(0); // applyMasks' scratch: the allowed ids' logits

  private keep(m: TokenMasks): Float32Array {
    const n = m.allowed?.length ?? 0;
    if (this.keepBuf.length < n) this.keepBuf = new Float32Array(n);
    return this.keepBuf;
  }

  constructor(readonly model: LlamaModel, readonly kv: KvCache, readonly remote: RemoteForward | null = null) {
    this.logp = new Float32Array(model.config.vocabSize);
    this.masked = new Float32Array(model.config.vocabSize);
  }

  /** Copy-on-write block copies (k and v, every layer; on every stage with a remote forward). */
  copyBlocks(copies: readonly BlockCopy[]): void {
    copyKvBlocks(this.kv.layers, copies);
    this.remote?.copyBlocks(copies);
  }

  execute(out: SchedulerOutput, seqOf: (id: string) => RunnerSeq): SeqResult[] {
    if (this.remote) throw new Error('runner: this model runs through pipeline stages, use executeAsync');
    const p = this.prepare(out, seqOf);
    if (!p) return [];
    return this.finish(out, seqOf, p, this.model.forward(p.inp, this.kv, p.hiddenOut, this.logitsFor(p)));
  }

  /** The reusable logits buffer, grown to this step's rows. */
  private logitsFor(p: Prepared): Float32Array {
    const n = (p.inp.numLogits ?? p.inp.logitRows.length) * this.model.config.vocabSize;
    if (this.logits.length < n) this.logits = new Float32Array(n);
    return this.logits;
  }

  /** execute() with the forward pass through the remote stages (or local when there are none). */
  async executeAsync(out: SchedulerOutput, seqOf: (id: string) => RunnerSeq): Promise<SeqResult[]> {
    const p = this.prepare(out, seqOf);
    if (!p) return [];
    const logits = this.remote ? await this.remote.forward(p.inp, this.kv, p.hiddenOut) : this.model.forward(p.inp, this.kv, p.hiddenOut, this.logitsFor(p));
    return this.finish(out, seqOf, p, logits);
  }

  private prepare(out: SchedulerOutput, seqOf: (id: string) => RunnerSeq): Prepared | null {
    const S = out.seqs.length;
    if (S === 0) return null;
    const V = this.model.config.vocabSize;
    const D = this.model.config.hiddenSize;
    const L = this.kv.blockSize;
    const T = out.numBatchedTokens;
    const maxBlocks = Math.max(1, ...out.seqs.map((s) => s.blockTable.length));
    const tokens = new Int32Array(T);
    const positions = new Int32Array(T);
    const slots = new Int32Array(T);
    const qStart = new Int32Array(S + 1);
    const ctxLen = new Int32Array(S);
    const blockTables = new Int32Array(S * maxBlocks); // (S, maxBlocks)
    // rows wanting logits come first, then hidden-only rows (embeddings)
    const logitRows: number[] = [];
    const hiddenRows: number[] = [];
    const plan: { lp: number[]; sample: number; hidden: number[]; hiddenStart: number }[] = [];

    let t = 0;
    for (let s = 0; s < S; s++) {
      const sch = out.seqs[s]!;
      const seq = seqOf(sch.id);
      qStart[s] = t;
      ctxLen[s] = sch.start + sch.numTokens;
      blockTables.set(sch.blockTable, s * maxBlocks);
      const p: { lp: number[]; sample: number; hidden: number[]; hiddenStart: number } = { lp: [], sample: -1, hidden: [], hiddenStart: -1 };
      for (let j = 0; j < sch.numTokens; j++, t++) {
        const pos = sch.start + j;
        tokens[t] = pos < seq.tokens.length ? seq.tokens[pos]! : seq.draft[pos - seq.tokens.length]!;
        positions[t] = pos;
        slots[t] = sch.blockTable[Math.floor(pos / L)]! * L + (pos % L);
        // logits at position pos score the prompt token pos + 1
        if (seq.promptLogprobs && pos + 1 < seq.promptLen && pos + 1 > seq.promptLogprobs.done) { p.lp.push(logitRows.length); logitRows.push(t); }
        if (seq.embed && pos < seq.promptLen && pos >= seq.embed.done && (seq.embed.pooling === 'mean' || pos === seq.promptLen - 1)) {
          if (p.hiddenStart < 0) p.hiddenStart = pos;
          p.hidden.push(t);
        }
      }
      const k = seq.draft.length;
      if (k > 0 && (seq.slots.length !== 1 || sch.numTokens !== k + 1 || ctxLen[s] !== seq.tokens.length + k)) {
        throw new Error(`runner: ${sch.id} has ${k} draft tokens but ${seq.slots.length} slots and ${sch.numTokens} tokens from ${sch.start} (holds ${seq.tokens.length})`);
      }
      // the k + 1 verify rows: the last committed token and each draft token
      if (ctxLen[s] === seq.tokens.length + k && seq.slots.length > 0) { p.sample = logitRows.length; for (let j = k; j >= 0; j--) logitRows.push(t - 1 - j); }
      plan.push(p);
    }
    qStart[S] = t;
    if (t !== T) throw new Error(`runner: scheduler counted ${T} tokens, sequences hold ${t}`);

    // hidden rows go after the logit rows; a row wanted for both appears twice (harmless)
    const hiddenBase = logitRows.length;
    for (const p of plan) {
      const base = hiddenBase + hiddenRows.length;
      hiddenRows.push(...p.hidden);
      p.hidden = p.hidden.map((_, i) => base + i);
    }
    const R = logitRows.length + hiddenRows.length;
    const wantHidden = hiddenRows.length > 0;
    const hiddenOut = wantHidden ? new Float32Array(R * D) : undefined; // (R, D)
    const inp: ForwardInput = {
      lora: loraSegments(out, seqOf),
      tokens, positions, slots,
      attn: { numSeqs: S, qStart, ctxLen, blockTables, maxBlocks },
      logitRows: Int32Array.from([...logitRows, ...hiddenRows]),
      numLogits: logitRows.length,
    };
    return { inp, hiddenOut, plan, logitRows, positions };
  }

  /** Sampling, logprobs and hidden rows from the step's logits (logitRows, V). */
  private finish(out: SchedulerOutput, seqOf: (id: string) => RunnerSeq, prep: Prepared, logits: Float32Array): SeqResult[] {
    const { plan, logitRows, positions, hiddenOut } = prep;
    const S = out.seqs.length;
    const V = this.model.config.vocabSize;
    const D = this.model.config.hiddenSize;
    const results: SeqResult[] = [];
    for (let s = 0; s < S; s++) {
      const sch = out.seqs[s]!;
      const seq = seqOf(sch.id);
      const p = plan[s]!;
      const promptLogprobs: LogprobEntry[] = [];
      if (seq.promptLogprobs) {
        for (const r of p.lp) {
          const pos = positions[logitRows[r]!]!;
          promptLogprobs.push(this.entry(logits.subarray(r * V, (r + 1) * V), seq.tokens[pos + 1]!, seq.promptLogprobs.k));
        }
      }
      let sampled: SampledToken[] | null = null;
      let verified: SeqResult['verified'] = null;
      if (p.sample >= 0 && seq.draft.length > 0) {
        const k = seq.draft.length;
        const slot = seq.slots[0]!;
        const rows = logits.subarray(p.sample * V, (p.sample + k + 1) * V); // (k + 1, V)
        // row j samples output token (produced + j), after the draft's first j tokens: masked as a sampled row would be
        const produced = seq.tokens.length - seq.promptLen;
        if (masksRow(slot.masks, produced)) {
          const out = (i: number) => (i < produced ? seq.tokens[seq.promptLen + i]! : seq.draft[i - produced]!);
          for (let j = 0; j <= k; j++) applyMasks(slot.masks, rows.subarray(j * V, (j + 1) * V), produced + j, out, this.keep(slot.masks));
        }
        if (slot.constraint) {
          // mask each verify row with the grammar state after the draft tokens before it; a draft token the grammar
          // refuses has probability 0 there, so verification stops at it and the rows after are never read
          const st = slot.constraint.fork();
          for (let j = 0; j <= k && !st.finished; j++) {
            st.apply(rows.subarray(j * V, (j + 1) * V));
            this.maskedSamples++;
            if (j < k && !st.advance(seq.draft[j]!)) break;
          }
        }
        const v = verifyDraft(slot.sampler, slot.counts, rows, seq.draft, seq.draftQ);
        const toks = v.tokens.map((token, j) => ({
          token, logprob: slot.logprobs === null ? null : this.entry(rows.subarray(j * V, (j + 1) * V), token, slot.logprobs),
        }));
        verified = { tokens: toks, accepted: v.accepted };
      } else if (p.sample >= 0) {
        const row = logits.subarray(p.sample * V, (p.sample + 1) * V);
        sampled = seq.slots.map((slot) => {
          let r = row;
          if (slot.constraint) {
            this.masked.set(row);
            slot.constraint.apply(this.masked);
            r = this.masked;
            this.maskedSamples++;
          }
          const produced = seq.tokens.length - seq.promptLen;
          if (masksRow(slot.masks, produced)) {
            if (r !== this.masked) this.masked.set(row);
            r = this.masked;
            applyMasks(slot.masks, r, produced, (i) => seq.tokens[seq.promptLen + i]!, this.keep(slot.masks));
          }
          const token = slot.sampler.sample(r, slot.counts);
          return { token, logprob: slot.logprobs === null ? null : this.entry(r, token, slot.logprobs) };
        });
      }
      let hidden: SeqResult['hidden'] = null;
      if (p.hidden.length > 0) {
        const rows = new Float32Array(p.hidden.length * D);
        p.hidden.forEach((r, i) => rows.set(hiddenOut!.subarray(r * D, (r + 1) * D), i * D));
        hidden = { start: p.hiddenStart, rows };
      }
      results.push({ id: sch.id, sampled, verified, promptLogprobs, hidden });
    }
    return results;
  }

  /** log-softmax of a raw logits row (V): the chosen token's logprob and the top k, as generate() reports them. */
  private entry(row: Float32Array, token: number, k: number): LogprobEntry {
    const be = this.model.backend;
    const V = this.model.config.vocabSize;
    be.logSoftmax(this.logp, row, 1);
    const top = k > 0 ? be.topk(this.logp, Math.min(k, V)) : null;
    return {
      token,
      logprob: this.logp[token]!,
      top: top ? Array.from(top.ids, (id, i) => [id, top.values[i]!] as const) : [],
    };
  }
}
