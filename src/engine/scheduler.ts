// Scheduler: each step hands out a token budget, decode/continuation of running sequences first (oldest
// first), then chunks of waiting prompts; no prefill/decode phases, only numComputed vs numTokens (vLLM v1).
// Two lanes: low-priority (batch) sequences wait behind every interactive one, give up their sequence slots and
// KV blocks to a waiting interactive prompt, and are preempted first when KV blocks run out.
// A preempted sequence's KV is swapped out (its bytes kept aside) when a swap space has room, and swapped back into
// fresh blocks when it is re-admitted; otherwise it is recomputed from its tokens.

import type { KvManager } from './block-pool.js';

/** What the scheduler needs to know about one sequence (one completion of a request). */
export interface SchedSeq {
  readonly id: string;
  readonly tokens: readonly number[]; // prompt + output so far; numTokens = tokens.length
  numComputed: number; // tokens whose KV is in the cache
  readonly usePrefixCache: boolean;
  readonly lookahead?: number; // draft tokens to verify after the one pending token (speculative decoding)
  readonly lowPriority?: boolean; // batch lane: admitted only when no interactive prompt waits
  readonly adapterId?: number; // LoRA adapter version (prefix-cache key); 0 / absent → base
}

export interface ScheduledSeq {
  readonly id: string;
  readonly start: number; // first position computed this step (== numComputed before the step)
  readonly numTokens: number; // tokens computed this step
  readonly blockTable: readonly number[];
  readonly prefixHit: number; // tokens taken from the prefix cache when admitted this step, else 0
  readonly numLookahead: number; // of numTokens, slots for draft tokens after the sequence's own (0 unless speculating)
}

export interface SchedulerOutput {
  readonly seqs: readonly ScheduledSeq[];
  readonly numBatchedTokens: number;
  readonly preempted: readonly string[]; // sent back to the waiting queue, KV freed (swapped out or to be recomputed)
}

/** Where preempted sequences' KV goes instead of being recomputed (src/model/kv-cache.ts KvSwapSpace). */
export interface KvSwapper {
  /** Copy these blocks' KV out (table order); false, copying nothing, when the swap space lacks room. */
  swapOut(id: string, blocks: readonly number[]): boolean;
  /** Copy a swapped-out sequence's KV into these fresh blocks (table order) and forget it. */
  swapIn(id: string, blocks: readonly number[]): void;
  /** Forget a swapped-out sequence (finished or aborted while waiting). */
  drop(id: string): void;
}

export interface SchedulerConfig {
  readonly maxBatchedTokens: number; // token budget per step
  readonly maxNumSeqs: number; // sequences per step and running at once (interactive ones: always)
  /**
   * The batch lane's width (default maxNumSeqs): while no interactive sequence runs or waits, batch sequences run up
   * to this many at once, in wider steps whose matmuls run nearer the GEMM's peak. Once an interactive sequence is
   * there, steps go back to maxNumSeqs rows, interactive rows first, and no batch row runs while an interactive
   * prompt is in prefill; the batch sequences left out keep their KV and wait for the next step.
   */
  readonly maxBatchSeqs?: number;
  /**
   * A wide lane widens again only after this many steps without interactive work (default 8), so interactive
   * requests that come one after another (a chat, an agent loop) do not each wait behind a wide step.
   */
  readonly widenAfterSteps?: number;
  /**
   * Swap space for preempted sequences (absent: always recompute). The copies are made inside schedule(): the pool's
   * bytes change only in a forward pass or a fork's block copy, both after it, so a victim's blocks still hold its KV
   * when they are copied out even if the same step hands them to another sequence.
   */
  readonly swap?: KvSwapper;
}

export class Scheduler {
  readonly waiting: SchedSeq[] = []; // FIFO per lane, interactive lane first; preempted sequences go to the front of their lane
  readonly running: SchedSeq[] = []; // in admission order: the last is the newest, preempted first
  preemptions = 0;
  swappedOut = 0; // preemptions whose KV went to the swap space (the rest are recomputed)
  private readonly swapped = new Map<string, number>(); // waiting sequences swapped out → their numComputed then
  prefixQueriedTokens = 0;
  prefixHitTokens = 0;

  constructor(readonly kv: KvManager, readonly cfg: SchedulerConfig) {
    if (!(Number.isInteger(cfg.maxBatchedTokens) && cfg.maxBatchedTokens >= 1)) throw new RangeError(`maxBatchedTokens must be an integer >= 1, got ${cfg.maxBatchedTokens}`);
    if (!(Number.isInteger(cfg.maxNumSeqs) && cfg.maxNumSeqs >= 1)) throw new RangeError(`maxNumSeqs must be an integer >= 1, got ${cfg.maxNumSeqs}`);
    if (cfg.maxBatchSeqs !== undefined && !(Number.isInteger(cfg.maxBatchSeqs) && cfg.maxBatchSeqs >= cfg.maxNumSeqs)) {
      throw new RangeError(`maxBatchSeqs must be an integer >= maxNumSeqs (${cfg.maxNumSeqs}), got ${cfg.maxBatchSeqs}`);
    }
    this.width = cfg.maxBatchSeqs ?? cfg.maxNumSeqs;
    this.widenAfter = cfg.widenAfterSteps ?? 8;
    if (!(Number.isInteger(this.widenAfter) && this.widenAfter >= 0)) throw new RangeError(`widenAfterSteps must be an integer >= 0, got ${cfg.widenAfterSteps}`);
  }

  private readonly widenAfter: number;
  /** Steps scheduled since one last had interactive work (a wide lane widens once this reaches widenAfterSteps). */
  quietSteps = Infinity;

  /** Sequences running at once at most: the batch lane's width (maxNumSeqs unless maxBatchSeqs is wider). */
  readonly width: number;

  add(seq: SchedSeq): void {
    if (seq.lowPriority) this.waiting.push(seq);
    else this.waiting.splice(this.firstLow(), 0, seq);
  }

  /** Index of the first low-priority waiting sequence (waiting.length when none). */
  private firstLow(): number {
    const i = this.waiting.findIndex((s) => s.lowPriority);
    return i < 0 ? this.waiting.length : i;
  }

  /** A sequence whose KV table already exists (a fork), joining the running set directly. */
  addRunning(seq: SchedSeq): void {
    this.running.push(seq);
  }

  /** Remove a sequence wherever it is and free its blocks. */
  finish(id: string): void {
    const r = this.running.findIndex((s) => s.id === id);
    if (r >= 0) this.running.splice(r, 1);
    const w = this.waiting.findIndex((s) => s.id === id);
    if (w >= 0) this.waiting.splice(w, 1);
    this.kv.free(id);
    if (this.swapped.delete(id)) this.cfg.swap!.drop(id);
  }

  /** Whether a waiting sequence's KV sits in the swap space. */
  isSwapped(id: string): boolean { return this.swapped.has(id); }

  /**
   * Tokens a waiting sequence would compute if admitted with `budget` tokens, and the blocks it needs for them: a
   * swapped-out sequence needs every block of its computed tokens at once (it resumes, never in chunks), as a running
   * sequence's growth does.
   */
  private admission(s: SchedSeq, budget: number): { tokens: number; blocks: number } {
    const computed = this.swapped.get(s.id) ?? 0;
    const tokens = Math.min(s.tokens.length - computed, budget);
    return { tokens, blocks: Math.ceil((computed + tokens) / this.kv.blockSize) };
  }

  get hasWork(): boolean {
    return this.running.length > 0 || this.waiting.length > 0;
  }

  /** One step's plan; `maxSeqs` caps this step's sequences below maxNumSeqs (a pipeline micro-batch). */
  schedule(maxSeqs = this.width): SchedulerOutput {
    // a batch lane wider than maxNumSeqs narrows back to it while interactive sequences run or wait
    const wide = this.width > this.cfg.maxNumSeqs;
    const interactiveWaiting = this.firstLow();
    let interactiveRunning = 0;
    let interactivePrefill = interactiveWaiting > 0; // an interactive prompt not yet through its prefill
    for (const s of this.running) {
      if (s.lowPriority) continue;
      interactiveRunning++;
      if (s.tokens.length - s.numComputed > 1) interactivePrefill = true;
    }
    const interactive = interactiveRunning + interactiveWaiting > 0;
    this.quietSteps = interactive ? 0 : this.quietSteps + 1;
    const narrow = interactive || this.quietSteps <= this.widenAfter;
    const stepSeqs = Math.min(maxSeqs, wide && narrow ? this.cfg.maxNumSeqs : this.width);
    // batch rows this step leave room for every interactive sequence (only when the lane is wide: otherwise the
    // slot preemption below already guarantees it), and none run beside an interactive prefill: time to first token
    // is then that prefill alone, plus what is left of the step in flight when the request came
    const lowRows = !wide ? Infinity : interactivePrefill ? 0 : stepSeqs - Math.min(this.cfg.maxNumSeqs, interactiveRunning + interactiveWaiting);
    let lowPicked = 0;
    let budget = this.cfg.maxBatchedTokens;
    const picked: { seq: SchedSeq; n: number; hit: number; ahead: number }[] = [];
    const preempted: string[] = [];

    // an interactive prompt waiting for a sequence slot takes one from the newest running batch sequence
    // (a wide lane: as many as may still be admitted next to the interactive ones running, less the free slots)
    let slotsNeeded = wide
      ? Math.min(interactiveWaiting, Math.max(0, this.cfg.maxNumSeqs - interactiveRunning)) - (this.width - this.running.length)
      : Math.min(interactiveWaiting, this.running.length + interactiveWaiting - this.cfg.maxNumSeqs);
    while (slotsNeeded-- > 0) {
      const v = this.newestLow(0);
      if (v < 0) break;
      preempted.push(this.preemptAt(v));
    }
    // and one whose first chunk finds too few free KV blocks takes them from the newest running batch sequences
    const head = this.waiting[0];
    if (head !== undefined && !head.lowPriority && head.numComputed === 0) {
      const need = this.admission(head, this.cfg.maxBatchedTokens).blocks;
      while (this.kv.pool.numFree < need) {
        const v = this.newestLow(0);
        if (v < 0) break;
        preempted.push(this.preemptAt(v));
      }
    }
    let kvPressure = false;
    // A running prefill leaves room for the younger running sequences' decode tokens, and half the budget to a waiting
    // prompt that may be admitted this step (vLLM's long_prefill_token_threshold): a short request's first token and
    // a stream's next one then wait for one chunk of a long prompt, not its whole prefill.
    const reserveFor = (s: SchedSeq, i: number): number => {
      let decodes = 0;
      for (let j = i + 1; j < this.running.length; j++) if (this.running[j]!.tokens.length - this.running[j]!.numComputed === 1) decodes++;
      const w = this.waiting[0];
      if (w === undefined || this.running.length >= Math.min(this.width, maxSeqs) || (w.lowPriority && !s.lowPriority)) return decodes;
      if (wide && (w.lowPriority || interactiveRunning >= this.cfg.maxNumSeqs)) return decodes;
      // at most half the budget, and no more than the prompt can take (a short prompt leaves the rest to the prefill)
      const want = this.admission(w, Math.floor(this.cfg.maxBatchedTokens / 2));
      return decodes + (this.kv.pool.numFree >= want.blocks ? want.tokens : 0);
    };

    // running sequences, oldest first; when blocks run out the newest is preempted (possibly this one)
    for (let i = 0; i < this.running.length && budget > 0 && picked.length < stepSeqs; i++) {
      const s = this.running[i]!;
      if (s.lowPriority && lowPicked >= lowRows) continue; // left out this step, its KV kept
      const pending = s.tokens.length - s.numComputed;
      // a decoding sequence may verify draft tokens too: k + 1 positions
      let n = Math.min(pending + (pending === 1 ? s.lookahead ?? 0 : 0), budget);
      if (pending > 1) n = Math.min(n, Math.max(1, budget - reserveFor(s, i)));
      if (n <= 0) continue;
      // draft slots only from blocks no younger running sequence may need for its next token
      if (n > pending && this.kv.blocksNeeded(s.id, s.numComputed + n) > this.kv.pool.numFree - (this.running.length - i - 1)) n = pending;
      let fits = true;
      while (!this.kv.allocate(s.id, s.numComputed + n)) {
        // speculation never preempts: drop the draft slots first
        if (n > pending) { n = Math.min(pending, budget); continue; }
        kvPressure = true;
        // the newest batch sequence not yet scheduled this step goes first, else the newest of all
        const low = this.newestLow(s.lowPriority ? i : i + 1);
        const victim = this.running[low >= 0 ? low : this.running.length - 1]!;
        preempted.push(this.preemptAt(low >= 0 ? low : this.running.length - 1));
        if (victim === s) { fits = false; break; }
      }
      if (!fits) { i--; continue; } // s left running: the next sequence moved into its index
      picked.push({ seq: s, n, hit: 0, ahead: Math.max(0, n - pending) });
      if (s.lowPriority) lowPicked++;
      budget -= n;
    }

    // waiting prompts in arrival order, as long as budget, sequence slots and blocks allow (never preempting for them)
    while (!kvPressure && this.waiting.length > 0 && budget > 0
      && this.running.length < this.width && picked.length < stepSeqs) {
      const s = this.waiting[0]!;
      if (wide && (s.lowPriority ? lowPicked >= lowRows : interactiveRunning >= this.cfg.maxNumSeqs)) break;
      // a swapped-out sequence resumes: fresh blocks for all its computed tokens and this step's, its KV copied in
      const swapped = this.swapped.get(s.id);
      const prefix = swapped === undefined && s.usePrefixCache && s.numComputed === 0 ? this.kv.findCachedPrefix(s.tokens, s.adapterId ?? 0) : undefined;
      const hit = prefix ? prefix.blocks.length * this.kv.blockSize : 0;
      const start = swapped ?? hit;
      const n = Math.min(s.tokens.length - start, budget);
      if (!this.kv.allocate(s.id, start + n, prefix)) break;
      if (swapped !== undefined) {
        this.cfg.swap!.swapIn(s.id, this.kv.blockTable(s.id).slice(0, Math.ceil(swapped / this.kv.blockSize)));
        this.swapped.delete(s.id);
      }
      this.waiting.shift();
      this.running.push(s);
      s.numComputed = start;
      if (swapped === undefined && s.usePrefixCache) {
        this.prefixQueriedTokens += s.tokens.length;
        this.prefixHitTokens += hit;
      }
      picked.push({ seq: s, n, hit, ahead: 0 });
      if (s.lowPriority) lowPicked++;
      else interactiveRunning++;
      budget -= n;
    }

    const seqs: ScheduledSeq[] = picked.map(({ seq, n, hit, ahead }) => {
      const out = { id: seq.id, start: seq.numComputed, numTokens: n, blockTable: [...this.kv.blockTable(seq.id)], prefixHit: hit, numLookahead: ahead };
      seq.numComputed += n; // the runner computes them this step
      return out;
    });
    return { seqs, numBatchedTokens: this.cfg.maxBatchedTokens - budget, preempted };
  }

  /**
   * Give back draft slots a proposer did not fill: `unused` (id → slots) shrinks those sequences' numTokens and
   * numComputed. Their blocks stay allocated (the sequence grows into them).
   */
  retract(out: SchedulerOutput, unused: ReadonlyMap<string, number>): SchedulerOutput {
    if (unused.size === 0) return out;
    let total = 0;
    const seqs = out.seqs.map((s) => {
      const u = unused.get(s.id) ?? 0;
      if (u === 0) return s;
      if (u > s.numLookahead) throw new Error(`scheduler.retract: ${s.id} has ${s.numLookahead} draft slots, cannot give back ${u}`);
      const seq = this.running.find((r) => r.id === s.id)!;
      seq.numComputed -= u;
      total += u;
      return { ...s, numTokens: s.numTokens - u, numLookahead: s.numLookahead - u };
    });
    return { ...out, seqs, numBatchedTokens: out.numBatchedTokens - total };
  }

  /** Index in running of the newest low-priority sequence at or after `from`, or -1. */
  private newestLow(from: number): number {
    for (let j = this.running.length - 1; j >= from; j--) if (this.running[j]!.lowPriority) return j;
    return -1;
  }

  /** Free running[j]'s blocks (its KV swapped out when the swap space has room) and put it at the front of its lane; returns its id. */
  private preemptAt(j: number): string {
    const [s] = this.running.splice(j, 1) as [SchedSeq];
    const n = s.numComputed;
    if (this.cfg.swap && n > 0 && this.cfg.swap.swapOut(s.id, this.kv.blockTable(s.id).slice(0, Math.ceil(n / this.kv.blockSize)))) {
      this.swapped.set(s.id, n);
      this.swappedOut++;
    }
    this.kv.free(s.id);
    s.numComputed = 0;
    this.waiting.splice(s.lowPriority ? this.firstLow() : 0, 0, s);
    this.preemptions++;
    return s.id;
  }
}
