// Gradient checks: every backward kernel of the reference backend against central finite differences of its forward.
//
// Each check builds a scalar loss L = Σ dy ⊙ forward(inputs) (accumulated in f64), perturbs one f32 input element
// at a time by ±h (the step actually taken after f32 rounding is the denominator), and compares with the backward.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttentionShape } from '../../src/backend/backend.js';
import { WEIGHT_DTYPES } from '../../src/backend/backend.js';
import { referenceBackend as ref } from '../../src/backend/reference.js';
import { ropeInvFreq } from '../../src/model/config.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { f32Tensor } from '../../src/tensor/tensor.js';
import { assertClose, withSeed } from './helpers.js';

/** Σ a ⊙ b in f64. */
function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/**
 * Central differences of loss() w.r.t. every element of param (restored afterwards), compared with `analytic`.
 * Allowance: tol * (max |analytic| + |fd|), so a wrong formula (an O(1) error) cannot hide.
 */
function gradcheck(what: string, param: Float32Array, loss: () => number, analytic: ArrayLike<number>, h = 1e-2, tol = 2e-3): void {
  assert.equal(analytic.length, param.length, `${what}: gradient has ${analytic.length} values, parameter ${param.length}`);
  const fd = new Float64Array(param.length);
  for (let i = 0; i < param.length; i++) {
    const v = param[i]!;
    const step = h * Math.max(1, Math.abs(v));
    param[i] = v + step;
    const up = param[i]!;
    const lp = loss();
    param[i] = v - step;
    const down = param[i]!;
    const lm = loss();
    param[i] = v;
    fd[i] = (lp - lm) / (up - down);
  }
  let scale = 0;
  for (let i = 0; i < analytic.length; i++) scale = Math.max(scale, Math.abs(analytic[i]!), Math.abs(fd[i]!));
  assert.ok(scale > 0, `${what}: gradient is identically zero, nothing was checked`);
  assertClose(`${what} vs finite differences`, Float32Array.from(analytic), fd, { atol: tol * scale, rtol: tol });
}

describe('gradcheck: reference backward kernels vs finite differences', () => {
  for (const dtype of WEIGHT_DTYPES) {
    it(`matmulBackwardInput over a ${dtype} weight (overwrite and accumulate)`, () => {
      withSeed(`gradcheck matmulBackwardInput ${dtype}`, (rng) => {
        const [M, C, N] = [3, 32, 5];
        const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], dtype);
        const x = rng.normals(M * C);
        const dy = rng.normals(M * N);
        const y = new Float32Array(M * N);
        const loss = (): number => { ref.matmul(y, x, w, M); return dot(dy, y); };
        const dx = new Float32Array(M * C).fill(NaN);
        ref.matmulBackwardInput(dx, dy, w, M, false);
        gradcheck(`dx (${dtype})`, x, loss, dx);
        const base = rng.normals(M * C);
        const acc = base.slice();
        ref.matmulBackwardInput(acc, dy, w, M, true);
        assertClose('accumulate adds to dx', acc, base.map((b, i) => b + dx[i]!), { atol: 1e-6, rtol: 1e-6 });
      });
    });
  }

  it('matmulBackwardWeight accumulates dyᵀ·x into dw', () => {
    withSeed('gradcheck matmulBackwardWeight', (rng) => {
      const [M, C, N] = [4, 7, 3];
      const wv = rng.normals(N * C);
      const w = f32Tensor([N, C], wv); // shares wv's storage, so perturbing wv moves w
      const x = rng.normals(M * C);
      const dy = rng.normals(M * N);
      const y = new Float32Array(M * N);
      const dw0 = rng.normals(N * C);
      const dw = dw0.slice();
      ref.matmulBackwardWeight(dw, dy, x, M, N, C);
      gradcheck('dw', wv, () => { ref.matmul(y, x, w, M); return dot(dy, y); }, dw.map((v, i) => v - dw0[i]!));
    });
  });

  it('rmsnormBackward: dx, and dg accumulated (dg null gives the same dx)', () => {
    withSeed('gradcheck rmsnorm', (rng) => {
      const [M, D] = [3, 10];
      const x = rng.normals(M * D, 2);
      const g = rng.f32(D, 0.5, 1.5);
      const dy = rng.normals(M * D);
      const eps = 0.05; // large enough that dropping it from the backward shows
      const y = new Float32Array(M * D);
      const loss = (): number => { ref.rmsnorm(y, x, g, M, eps); return dot(dy, y); };
      const dx = new Float32Array(M * D);
      const dg0 = rng.normals(D);
      const dg = dg0.slice();
      ref.rmsnormBackward(dx, dg, dy, x, g, M, eps);
      gradcheck('rmsnorm dx', x, loss, dx);
      gradcheck('rmsnorm dg', g, loss, dg.map((v, i) => v - dg0[i]!));
      const dx2 = new Float32Array(M * D);
      ref.rmsnormBackward(dx2, null, dy, x, g, M, eps);
      assert.deepEqual(dx2, dx);
    });
  });

  it('ropeBackward is the gradient of rope (llama3 frequencies, large positions)', () => {
    withSeed('gradcheck rope', (rng) => {
      const E = 16;
      const nHeads = 2;
      const invFreq = ropeInvFreq({ headDim: E, ropeTheta: 500000, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } });
      const positions = Int32Array.from([0, 3, rng.int(0, 131072), 131071]);
      const T = positions.length;
      const x = rng.normals(T * nHeads * E);
      const dy = rng.normals(T * nHeads * E);
      const loss = (): number => { const y = x.slice(); ref.rope(y, positions, nHeads, E, invFreq); return dot(dy, y); };
      const dx = dy.slice();
      ref.ropeBackward(dx, positions, nHeads, E, invFreq);
      gradcheck('rope dx', x, loss, dx);
    });
  });

  it('swigluBackward: dgate and dup (also written over gate and up)', () => {
    withSeed('gradcheck swiglu', (rng) => {
      const n = 40;
      const gate = rng.normals(n, 3);
      const up = rng.normals(n);
      const dout = rng.normals(n);
      const out = new Float32Array(n);
      const loss = (): number => { ref.swiglu(out, gate, up); return dot(dout, out); };
      const dgate = new Float32Array(n);
      const dup = new Float32Array(n);
      ref.swigluBackward(dgate, dup, dout, gate, up);
      gradcheck('swiglu dgate', gate, loss, dgate);
      gradcheck('swiglu dup', up, loss, dup);
      const g2 = gate.slice();
      const u2 = up.slice();
      ref.swigluBackward(g2, u2, dout, g2, u2);
      assert.deepEqual(g2, dgate);
      assert.deepEqual(u2, dup);
    });
  });

  const attnCases = [
    { label: 'GQA H/K=2', H: 4, K: 2, E: 8 },
    { label: 'MHA', H: 2, K: 2, E: 6 },
    { label: 'MQA', H: 3, K: 1, E: 4 },
  ];
  for (const c of attnCases) {
    it(`attentionDenseBackward ${c.label}, three packed samples`, () => {
      withSeed(`gradcheck attention ${c.label}`, (rng) => {
        const segStart = Int32Array.of(0, 3, 4, 9); // samples of 3, 1 and 5 tokens
        const T = 9;
        const shape: AttentionShape = { numHeads: c.H, numKvHeads: c.K, headDim: c.E, scale: rng.uniform(0.5, 1.5) / Math.sqrt(c.E) };
        const q = rng.normals(T * c.H * c.E);
        const k = rng.normals(T * c.K * c.E);
        const v = rng.normals(T * c.K * c.E);
        const dout = rng.normals(T * c.H * c.E);
        const out = new Float32Array(T * c.H * c.E);
        const lse = new Float32Array(T * c.H);
        const loss = (): number => { ref.attentionDense(out, lse, q, k, v, segStart, shape); return dot(dout, out); };
        loss();
        const [dq, dk, dv] = [new Float32Array(q.length), new Float32Array(k.length), new Float32Array(v.length)];
        ref.attentionDenseBackward(dq, dk, dv, dout, q, k, v, out.slice(), lse.slice(), segStart, shape);
        gradcheck(`attention dq ${c.label}`, q, loss, dq);
        gradcheck(`attention dk ${c.label}`, k, loss, dk);
        gradcheck(`attention dv ${c.label}`, v, loss, dv);
      });
    });
  }

  it('attentionDense: packed samples equal separate runs; lse of one token is its scaled score', () => {
    withSeed('attentionDense packing', (rng) => {
      const shape: AttentionShape = { numHeads: 4, numKvHeads: 2, headDim: 8, scale: 0.3 };
      const HE = 32;
      const KE = 16;
      const lens = [5, 1, 4];
      const T = 10;
      const q = rng.normals(T * HE);
      const k = rng.normals(T * KE);
      const v = rng.normals(T * KE);
      const out = new Float32Array(T * HE);
      const lse = new Float32Array(T * 4);
      ref.attentionDense(out, lse, q, k, v, Int32Array.of(0, 5, 6, 10), shape);
      let t0 = 0;
      for (const n of lens) {
        const o1 = new Float32Array(n * HE);
        const l1 = new Float32Array(n * 4);
        ref.attentionDense(o1, l1, q.slice(t0 * HE, (t0 + n) * HE), k.slice(t0 * KE, (t0 + n) * KE), v.slice(t0 * KE, (t0 + n) * KE), Int32Array.of(0, n), shape);
        assert.deepEqual(out.subarray(t0 * HE, (t0 + n) * HE), o1, `sample at row ${t0}: out differs from a separate run`);
        assert.deepEqual(lse.subarray(t0 * 4, (t0 + n) * 4), l1, `sample at row ${t0}: lse differs from a separate run`);
        t0 += n;
      }
      // row 5 is a one-token sample: out = v of the head's kv group, lse = scale * q·k
      for (let h = 0; h < 4; h++) {
        const kvh = Math.floor(h / 2);
        assertClose(`one-token out head ${h}`, out.subarray(5 * HE + h * 8, 5 * HE + h * 8 + 8), v.subarray(5 * KE + kvh * 8, 5 * KE + kvh * 8 + 8), { atol: 1e-6, rtol: 0 });
        const s = 0.3 * dot(q.subarray(5 * HE + h * 8, 5 * HE + h * 8 + 8), k.subarray(5 * KE + kvh * 8, 5 * KE + kvh * 8 + 8));
        assertClose(`one-token lse head ${h}`, lse.subarray(5 * 4 + h, 5 * 4 + h + 1), Float64Array.of(s), { atol: 1e-6, rtol: 1e-6 });
      }
    });
  });

  it('embeddingBackward scatters into repeated ids', () => {
    withSeed('gradcheck embedding', (rng) => {
      const [V, D] = [6, 5];
      const tv = rng.normals(V * D);
      const table = f32Tensor([V, D], tv);
      const ids = Int32Array.of(2, 0, 2, 5, 2);
      const dy = rng.normals(ids.length * D);
      const out = new Float32Array(ids.length * D);
      const loss = (): number => { ref.embedding(out, table, ids); return dot(dy, out); };
      const d0 = rng.normals(V * D);
      const dtable = d0.slice();
      ref.embeddingBackward(dtable, dy, ids, D);
      gradcheck('embedding dtable', tv, loss, dtable.map((x, i) => x - d0[i]!));
      assert.throws(() => ref.embeddingBackward(dtable, dy.subarray(0, D), Int32Array.of(V), D), /token id 6 at position 0 is outside \[0, 6\)/);
    });
  });

  it('crossEntropy: dlogits = scale * ∂(summed loss), ignored rows give 0 and no loss', () => {
    withSeed('gradcheck crossEntropy', (rng) => {
      const [M, V] = [4, 7];
      const logits = rng.normals(M * V, 3);
      const targets = Int32Array.of(3, -1, 0, 6);
      const scale = rng.uniform(0.2, 2);
      const scratch = new Float32Array(M * V);
      const loss = (): number => scale * ref.crossEntropy(scratch, logits, targets, M, scale);
      const dlogits = new Float32Array(M * V).fill(NaN);
      const l = ref.crossEntropy(dlogits, logits, targets, M, scale);
      gradcheck('crossEntropy dlogits', logits, loss, dlogits);
      assert.deepEqual(Array.from(dlogits.subarray(V, 2 * V)), new Array(V).fill(0), 'ignored row must get zero gradient');
      // the loss of the counted rows alone, by hand: Σ lse - logit[target]
      let want = 0;
      for (const m of [0, 2, 3]) {
        const row = Array.from(logits.subarray(m * V, (m + 1) * V));
        want += Math.log(row.reduce((a, x) => a + Math.exp(x), 0)) - row[targets[m]!]!;
      }
      assert.ok(Math.abs(l - want) < 1e-9 * Math.max(1, Math.abs(want)), `summed loss ${l}, expected ${want}`);
      const inPlace = logits.slice();
      assert.equal(ref.crossEntropy(inPlace, inPlace, targets, M, scale), l);
      assert.deepEqual(inPlace, dlogits);
      assert.throws(() => ref.crossEntropy(scratch, logits, Int32Array.of(0, 7, 0, 0), M, 1), /target 7 of row 1 is outside \[0, 7\)/);
    });
  });
});
