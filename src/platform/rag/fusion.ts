// Reciprocal-rank fusion (Cormack, Clarke & Büttcher 2009): score(d) = Σ over lists of w_list / (k + rank of d), rank
// 1-based; the weights (default all 1, the paper's form) let one list count more, e.g. a dense model that beats BM25.

/** Fused ranking of ids, best first; ties keep the order of the best single rank, then of first appearance. */
export function rrf(lists: ReadonlyArray<readonly string[]>, k = 60, weights?: readonly number[]): Array<{ id: string; score: number }> {
  if (!(k >= 0)) throw new RangeError(`RRF constant must be ≥ 0, got ${k}`);
  if (weights !== undefined) {
    if (weights.length !== lists.length) throw new RangeError(`RRF weights: ${weights.length} given for ${lists.length} lists`);
    for (const w of weights) if (!(Number.isFinite(w) && w >= 0)) throw new RangeError(`RRF weights must be finite and ≥ 0, got ${JSON.stringify(weights)}`);
  }
  const score = new Map<string, number>();
  const best = new Map<string, number>();
  lists.forEach((list, l) => {
    const w = weights?.[l] ?? 1;
    list.forEach((id, i) => {
      score.set(id, (score.get(id) ?? 0) + w / (k + i + 1));
      best.set(id, Math.min(best.get(id) ?? Infinity, i));
    });
  });
  const order = [...score.keys()];
  const first = new Map(order.map((id, i) => [id, i]));
  return order
    .sort((a, b) => score.get(b)! - score.get(a)! || best.get(a)! - best.get(b)! || first.get(a)! - first.get(b)!)
    .map((id) => ({ id, score: score.get(id)! }));
}
