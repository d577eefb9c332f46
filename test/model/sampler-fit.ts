// Goodness of fit for sampler tests: draw frequencies against a reference distribution (chi-square, exact support).

import assert from 'node:assert/strict';
import chisquareCdf from '@stdlib/stats-base-dists-chisquare-cdf';

/**
 * Goodness of fit of observed counts (per cell) to expected probabilities: no draw outside the support, and a
 * chi-square over cells merged (most likely first) until each expects >= 20 draws must not reject at p = 1e-6.
 */
export function assertFits(what: string, observed: Float64Array, expected: Float64Array): void {
  const n = observed.reduce((s, c) => s + c, 0);
  observed.forEach((c, i) => { // the message built only on a failure: V of them cost ~0.1 s at V = 128256
    if (expected[i] === 0 && c !== 0) assert.equal(c, 0, `${what}: token ${i} has reference probability 0 but was drawn ${c} times`);
  });
  const order = Array.from(expected.keys()).filter((i) => expected[i]! > 0).sort((a, b) => expected[b]! - expected[a]!);
  const bins: Array<{ obs: number; exp: number }> = [];
  let cur = { obs: 0, exp: 0 };
  for (const i of order) {
    cur.obs += observed[i]!;
    cur.exp += expected[i]! * n;
    if (cur.exp >= 20) { bins.push(cur); cur = { obs: 0, exp: 0 }; }
  }
  if (cur.exp > 0) {
    if (bins.length === 0) bins.push(cur);
    else { bins.at(-1)!.obs += cur.obs; bins.at(-1)!.exp += cur.exp; }
  }
  if (bins.length < 2) return; // one cell: the support check above is the whole test
  const chi2 = bins.reduce((s, b) => s + (b.obs - b.exp) ** 2 / b.exp, 0);
  const pValue = 1 - chisquareCdf(chi2, bins.length - 1);
  const tv = 0.5 * expected.reduce((s, e, i) => s + Math.abs(observed[i]! / n - e), 0);
  assert.ok(pValue > 1e-6, `${what}: chi-square ${chi2.toFixed(1)} on ${bins.length - 1} dof, p = ${pValue.toExponential(2)} (total variation ${tv.toFixed(4)})`);
}

