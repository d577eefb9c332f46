// Predicted Outputs: drafts taken from the text a client expects the answer to repeat (OpenAI's `prediction`).
//
// M prediction tokens, O output tokens so far, n gram length.
//
//   prediction  p0 p1 p2 p3 p4 p5 p6 p7 ...    ptr: the prediction token expected next
//   output      p0 p1 X  ▲                      the output departs at p2 (an edit): lostAt = 2; the next draft
//                        └ ptr = 3               assumes a substitution (p3 ... after X) unless a longer suffix of
//                                                the output is found elsewhere in the prediction

/** Most prediction tokens one verify step checks (adaptive below it): 16 rows, the batch-invariant kernels' range. */
export const DEFAULT_NUM_PREDICTION_TOKENS = 15;

/**
 * Where one sequence's output stands in its prediction, kept as tokens are appended. While the output follows the
 * prediction token for token, the draft is the prediction's next tokens. When it departs (an edit), the alignment
 * is found again, as a diff would: the longest suffix of the output (minFar to maxN tokens) that occurs in the
 * prediction, at its first occurrence at or after the last aligned position (text after an edit goes on from
 * there), else at the nearest before it (text moved back); failing that, the diagonal (the output replaced as many
 * prediction tokens as it made since it departed); failing that, a shorter suffix, only within `window` tokens
 * after the last aligned position (one common token says little about where a long prediction resumes).
 */
export class PredictionTracker {
  private ptr = 0; // prediction index expected next; -1 while the output is not aligned
  private anchor = 0; // prediction index after the last aligned token
  private seen = 0; // output tokens processed
  private lostAt = -1; // prediction index where the output last departed from it
  private lostOut = 0; // output index of that departure

  constructor(readonly prediction: readonly number[], readonly maxN = 8, readonly minFar = 3, readonly window = 64) {}

  /**
   * Up to k prediction tokens to propose after the output so far, tokens[start, N) (it only grows between calls);
   * empty when the output does not align with the prediction.
   */
  draft(tokens: readonly number[], start: number, k: number): number[] {
    const P = this.prediction;
    const O = tokens.length - start;
    if (O < this.seen) this.reset(); // another sequence's output: start over
    for (let i = this.seen; i < O; i++) {
      if (this.ptr >= 0 && this.ptr < P.length && P[this.ptr] === tokens[start + i]) this.anchor = ++this.ptr;
      else if (this.ptr >= 0) {
        this.lostAt = this.ptr;
        this.lostOut = i;
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
  }

  /** The prediction index after the best occurrence of the output's longest matching suffix, or -1. */
  private resync(tokens: readonly number[], start: number): number {
    const P = this.prediction;
    const N = tokens.length;
    // a substitution of as many tokens as the output made since it departed: the prediction goes on past them
    const diag = this.lostAt < 0 ? -1 : this.lostAt + (N - start - this.lostOut);
    for (let n = Math.min(this.maxN, N - start); n >= 1; n--) {
      if (n < this.minFar && diag >= 0 && diag < P.length) return diag;
      // occurrences end at e (P[e - n, e) equals the output's last n tokens); only those with a token after them
      let before = -1;
      const last = n >= this.minFar ? P.length - 1 : Math.min(P.length - 1, this.anchor + this.window + n - 1);
      for (let e = n >= this.minFar ? n : this.anchor + n; e <= last; e++) {
        let same = true;
        for (let i = 1; i <= n && same; i++) same = P[e - i] === tokens[N - i];
        if (!same) continue;
        if (e - n >= this.anchor) return (this.anchor = e);
        if (n >= this.minFar) before = e;
      }
      if (before >= 0) return (this.anchor = before);
    }
    return -1;
  }
}
