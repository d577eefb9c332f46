// Predicted Outputs: drafts taken from the text a client expects the answer to repeat (OpenAI's `prediction`).
//
// M prediction tokens, O output tokens so far, n gram length.
//
//   prediction  p0 p1 p2 p3 p4 p5 p6 p7 ...    ptr: the prediction token expected next
//   output      p0 p1 X  ▲                      the output departs at p2 (an edit): lostAt = 2; the next draft
//                        └ ptr = 3               assumes a substitution (p3 ... after X) unless a longer suffix of
//                                                the output is found elsewhere in the prediction
//
// The far search reads an index of the prediction's minFar-grams (built on its first use), so a step costs the
// occurrences of the output's last minFar tokens, not M: a scan of a million-token prediction (searched on every
// step while nothing lines up) took 25 ms a step on the engine's thread, stalling every other request.

import { AdaptiveK } from './speculation.js';

/** Most prediction tokens one verify step checks (adaptive below it): 16 rows, the batch-invariant kernels' range. */
export const DEFAULT_NUM_PREDICTION_TOKENS = 15;

/**
 * Where one sequence's output stands in its prediction, kept as tokens are appended. While the output follows the
 * prediction token for token, the draft is the prediction's next tokens. When it departs (an edit), the alignment
 * is found again, as a diff would: the longest suffix of the output (minFar to maxN tokens) that occurs in the
 * prediction, at its first occurrence at or after the last aligned position (text after an edit goes on from
 * there), else at the nearest before it (text moved back); else a shorter suffix at its first occurrence at most
 * as many tokens after the last aligned position as the output made since departing (an insertion or a short
 * deletion); else the diagonal (a substitution: the output replaced as many prediction words as it began since
 * departing, or tokens as it made where it began none); else a shorter suffix within `window` tokens after the last
 * aligned position. "Since departing" counts from the last token that lined up: a diagonal guess that misses is
 * the same edit going on, not a new departure (counted from each miss, an edit that replaced 2 tokens by 3 left
 * the output's way back, 2 tokens past the anchor, "too far" after its third token, and the tracker drafted off by
 * one until the n-gram search caught up). Words matter because an edit replaces words, whose token counts differ:
 * on floe-brown's answers with 1 word in 10 replaced, both changes took the steps of a 128-token answer from 999 to
 * 774 over 16 prompts (`bench/prediction-replay.ts`). An output that departs at its first token never lined up:
 * it neither guesses a diagonal nor takes a 1- or 2-token match as an alignment, only 3 tokens in common (unrelated
 * predictions drafted 0.41 rows per output token on chance matches and blind guesses, 4.5% of decode time; now none).
 */
export class PredictionTracker {
  private ptr = 0; // prediction index expected next; -1 while the output is not aligned
  private anchor = 0; // prediction index after the last aligned token
  private seen = 0; // output tokens processed
  private lostAt = -1; // prediction index where the output last departed from it
  private lostOut = 0; // output index of that departure
  private guessed = false; // ptr is the diagonal's guess, not yet confirmed by a token that matched

  private ends: Map<number, number[]> | null = null; // minFar-gram key → the ends e of its occurrences (P[e] exists), ascending
  /** Prediction positions the searches compared: a work count, bounded per step whatever M. */
  compared = 0;

  /**
   * `wordStarts` (one flag per vocabulary id, from `wordStartTable`): which tokens begin a word. With it, an output
   * that has replaced words goes on at the prediction's next word after the replaced ones, whatever their tokens.
   */
  constructor(
    readonly prediction: readonly number[], readonly wordStarts: Uint8Array | null = null,
    readonly maxN = 8, readonly minFar = 3, readonly window = 64,
  ) {}

  /**
   * Up to k prediction tokens to propose after the output so far, tokens[start, N) (it only grows between calls);
   * empty when the output does not align with the prediction.
   */
  draft(tokens: readonly number[], start: number, k: number): number[] {
    const P = this.prediction;
    const O = tokens.length - start;
    if (O < this.seen) this.reset(); // another sequence's output: start over
    for (let i = this.seen; i < O; i++) {
      if (this.ptr >= 0 && this.ptr < P.length && P[this.ptr] === tokens[start + i]) {
        this.anchor = ++this.ptr;
        this.guessed = false;
      } else if (this.ptr >= 0) {
        // a missed guess is no new departure: the output is still in the edit that began at lostAt
        if (!this.guessed) {
          this.lostAt = this.ptr;
          this.lostOut = i;
        }
        this.ptr = -1;
      }
    }
    this.seen = O;
    if (this.ptr < 0) this.ptr = this.resync(tokens, start);
    return this.ptr < 0 || k <= 0 ? [] : P.slice(this.ptr, this.ptr + k) as number[];
  }

  private reset(): void {
    this.ptr = 0;
    this.anchor = 0;
    this.seen = 0;
    this.lostAt = -1;
    this.guessed = false;
  }

  /** The prediction index where the output goes on after departing from it, or -1 (see the class comment). */
  private resync(tokens: readonly number[], start: number): number {
    const P = this.prediction;
    const N = tokens.length;
    const since = N - start - this.lostOut; // output tokens since it departed (>= 1 when it did)
    const diag = this.diagonal(tokens, start, since);
    const nMax = Math.min(this.maxN, N - start);
    const ends = nMax >= this.minFar ? this.farEnds(tokens, N) : [];
    for (let n = nMax; n >= 1; n--) {
      const far = n >= this.minFar;
      if (!far && this.lostAt <= 0) break; // never lined up: a short match anywhere near is chance, not an alignment
      // occurrences end at e (P[e - n, e) equals the output's last n tokens); only those with a token after them.
      // Far: the ends of the output's last minFar tokens; near: the window after the anchor.
      let before = -1;
      const first = this.anchor + n;
      const count = far ? ends.length : Math.min(P.length - 1, this.anchor + this.window + n - 1) - first + 1;
      for (let j = 0; j < count; j++) {
        const e = far ? ends[j]! : first + j;
        if (e < n) continue;
        this.compared++;
        let same = true;
        for (let i = 1; i <= n && same; i++) same = P[e - i] === tokens[N - i];
        if (!same) continue;
        // a short match beyond the tokens the output made since departing is less likely than a substitution
        if (e - n >= this.anchor && (far || diag < 0 || e - n - this.anchor <= since)) return this.found(e);
        if (!far) return this.guess(diag);
        before = e;
      }
      if (before >= 0) return this.found(before);
    }
    return this.guess(diag);
  }

  /**
   * Where the prediction goes on if the output substituted for what it skipped: as many words as the output began
   * since departing (the prediction's next word start after them), else as many tokens as it made; -1 if past the end.
   */
  private diagonal(tokens: readonly number[], start: number, since: number): number {
    const P = this.prediction;
    // an output that departed at its first token never lined up: nothing to substitute along (the prediction is
    // unrelated text, or the answer opens differently and the search will find where it joins)
    if (this.lostAt <= 0) return -1;
    const W = this.wordStarts;
    if (W) {
      let words = 0;
      for (let i = tokens.length - since; i < tokens.length; i++) words += W[tokens[i]!] ?? 0;
      if (words > 0) {
        // within reach of a substitution (a 1M-token prediction without word starts scanned to its end every step:
        // 2 ms a step on the engine's thread)
        const end = Math.min(P.length, this.lostAt + 1 + this.window + 4 * since);
        this.compared += end - this.lostAt - 1; // at most
        for (let j = this.lostAt + 1; j < end; j++) if (W[P[j]!] && --words === 0) return j;
        return -1;
      }
    }
    return this.lostAt + since < P.length ? this.lostAt + since : -1;
  }

  /** Aligned again after a match of the output's last tokens, ending before e. */
  private found(e: number): number {
    this.guessed = false;
    return (this.anchor = e);
  }

  private guess(diag: number): number {
    this.guessed = diag >= 0;
    return diag;
  }

  /**
   * Ends e of the prediction's occurrences of the output's last minFar tokens (P[e - minFar, e), with P[e] after),
   * ascending. Past MAX_FAR of them, the MAX_FAR / 2 on each side of the anchor, which the search prefers anyway.
   */
  private farEnds(tokens: readonly number[], N: number): readonly number[] {
    const P = this.prediction;
    const g = this.minFar;
    if (!this.ends) {
      this.ends = new Map();
      for (let e = g; e < P.length; e++) {
        const k = gramKey(P, e, g);
        const list = this.ends.get(k);
        if (list) list.push(e);
        else this.ends.set(k, [e]);
      }
    }
    const all = this.ends.get(gramKey(tokens, N, g)) ?? [];
    if (all.length <= MAX_FAR) return all;
    let lo = 0;
    let hi = all.length; // → the first end at or after the anchor
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (all[mid]! < this.anchor) lo = mid + 1;
      else hi = mid;
    }
    const from = Math.max(0, Math.min(lo - MAX_FAR / 2, all.length - MAX_FAR));
    return all.slice(from, from + MAX_FAR);
  }
}

/** Most far-search candidates one step compares: only a degenerate prediction (a few tokens repeated) has more. */
const MAX_FAR = 1024;

/** A key of the g tokens before `end`; a collision only adds candidates, each compared token by token. */
function gramKey(ids: readonly number[], end: number, g: number): number {
  let h = 0x811c9dc5;
  for (let i = end - g; i < end; i++) h = Math.imul(h ^ ids[i]!, 0x01000193) >>> 0;
  return h;
}

/**
 * AdaptiveK for prediction drafts: back to the full K after a draft is kept whole. A rejection there marks an edit,
 * not a poor proposer: once the output lines up again, the prediction runs on until the next edit. On floe-brown,
 * 120 tokens with 1 word in 10 of the prediction edited took 24, 39, 32 steps on three prompts, against 34, 51, 37
 * growing k by 1 as for proposers.
 */
export class PredictionK extends AdaptiveK {
  override update(proposed: number, accepted: number): void {
    super.update(proposed, accepted);
    if (this.k > 0 && proposed > 0 && accepted === proposed) this.k = this.max;
  }
}

/**
 * Which tokens begin a word, for PredictionTracker: those whose text opens with whitespace or a control byte (from
 * each id's bytes, e.g. `tokenBytes(tokenizer)`; null for special tokens, which begin none). Punctuation does not:
 * the replay measured (`bench/prediction-replay.ts`) counts words by their leading space.
 */
export function wordStartTable(bytes: readonly (Uint8Array | null)[]): Uint8Array {
  const t = new Uint8Array(bytes.length);
  for (let id = 0; id < bytes.length; id++) {
    const b = bytes[id]?.[0];
    if (b !== undefined && b <= 0x20) t[id] = 1;
  }
  return t;
}
