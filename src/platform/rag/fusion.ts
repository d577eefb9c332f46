// Reciprocal-rank fusion (Cormack, Clarke & Büttcher 2009): score(d) = Σ over lists of 1 / (k + rank of d), rank 1-based.

/** Fused ranking of ids, best first; ties keep the order of the best single rank, then of first appearance. */
export function rrf(lists: ReadonlyArray<readonly string[]>, k = 60): Array<{ id: string; score: number }> {
  if (!(k >= 0)) throw new RangeError(`RRF constant must be ≥ 0, got ${k}`);
  const score = new Map<string, number>();
  const best = new Map<string, number>();
  for (const list of lists) {
    list.forEach((id, i) => {
      score.set(id, (score.get(id) ?? 0) + 1 / (k + i + 1));
      best.set(id, Math.min(best.get(id) ?? Infinity, i));
    });
  }
  const order = [...score.keys()];
  const first = new Map(order.map((id, i) => [id, i]));
  return order
    .sort((a, b) => score.get(b)! - score.get(a)! || best.get(a)! - best.get(b)! || first.get(a)! - first.get(b)!)
    .map((id) => ({ id, score: score.get(id)! }));
}
