// Reading prom-client's JSON (GET /v1/floe/stats): counter and gauge values, histogram buckets and quantiles.

/** The value of an unlabelled counter or gauge (summed over label sets), or null when absent. */
export function scalar(metrics, name) {
  const m = metrics.find((x) => x.name === name);
  if (!m || !m.values.length) return null;
  return m.values.reduce((s, v) => s + v.value, 0);
}

/** Cumulative buckets of a histogram: [{ le, count }] by increasing le, the last le Infinity. */
export function buckets(metrics, name) {
  const m = metrics.find((x) => x.name === name);
  if (!m) return [];
  return m.values
    .filter((v) => v.metricName === `${name}_bucket`)
    .map((v) => ({ le: v.labels.le === '+Inf' ? Infinity : Number(v.labels.le), count: v.value }))
    .sort((a, b) => a.le - b.le);
}

/**
 * The q-quantile of the observations made between two snapshots of one histogram (cumulative buckets),
 * interpolated linearly inside its bucket as Prometheus' histogram_quantile does; null when none were made.
 * A quantile in the +Inf bucket is reported as the largest finite bound.
 */
export function quantile(q, now, before = []) {
  const prev = new Map(before.map((b) => [b.le, b.count]));
  const d = now.map((b) => ({ le: b.le, count: b.count - (prev.get(b.le) ?? 0) }));
  const total = d.length ? d[d.length - 1].count : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const b of d) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lower;
      const inBucket = b.count - below;
      return inBucket > 0 ? lower + (b.le - lower) * ((rank - below) / inBucket) : b.le;
    }
    lower = b.le;
    below = b.count;
  }
  return lower;
}
