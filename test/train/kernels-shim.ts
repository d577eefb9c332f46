// Naive TrainKernels used by the train tests only while a backend lacks them (prefers the backend's own).
//
// M rows, C in, N out, T tokens, H heads, K kv heads, E head dim, V vocab.

import type { AttentionShape, Backend, TrainBackend, TrainKernels } from '../../src/backend/backend.js';
import { dequantizeRow } from '../../src/tensor/codecs.js';
import type { Tensor } from '../../src/tensor/tensor.js';

const shim: TrainKernels = {
  matmulBackwardInput(dx, dy, w: Tensor, M, accumulate) {
    const N = w.rows, C = w.cols;
    if (!accumulate) dx.fill(0, 0, M * C);
    const row = new Float32Array(C);
    for (let n = 0; n < N; n++) {
      dequantizeRow(w, n, row);
      for (let m = 0; m < M; m++) {
        const g = dy[m * N + n]!;
        if (g === 0) continue;
        for (let c = 0; c < C; c++) dx[m * C + c] += g * row[c]!;
      }
    }
  },
  matmulBackwardWeight(dw, dy, x, M, N, C) {
    for (let n = 0; n < N; n++) for (let m = 0; m < M; m++) {
      const g = dy[m * N + n]!;
      if (g === 0) continue;
      for (let c = 0; c < C; c++) dw[n * C + c] += g * x[m * C + c]!;
    }
  },
  rmsnormBackward(dx, dg, dy, x, g, M, eps) {
    const D = g.length;
    for (let m = 0; m < M; m++) {
      let ss = 0;
      for (let i = 0; i < D; i++) ss += x[m * D + i]! ** 2;
      const r = 1 / Math.sqrt(ss / D + eps);
      let dot = 0;
      for (let i = 0; i < D; i++) dot += dy[m * D + i]! * g[i]! * x[m * D + i]!;
      for (let i = 0; i < D; i++) {
        const xi = x[m * D + i]!;
        if (dg) dg[i] += dy[m * D + i]! * xi * r;
        dx[m * D + i] = r * dy[m * D + i]! * g[i]! - (r * r * r * dot * xi) / D;
      }
    }
  },
  ropeBackward(dx, positions, nHeads, E, invFreq) {
    const half = E / 2;
    for (let t = 0; t < positions.length; t++) for (let h = 0; h < nHeads; h++) {
      const o = (t * nHeads + h) * E;
      for (let i = 0; i < half; i++) {
        const a = Math.fround(positions[t]! * invFreq[i]!);
        const c = Math.cos(a), s = Math.sin(a);
        const x0 = dx[o + i]!, x1 = dx[o + i + half]!;
        dx[o + i] = x0 * c + x1 * s;
        dx[o + i + half] = x1 * c - x0 * s;
      }
    }
  },
  swigluBackward(dgate, dup, dout, gate, up) {
    for (let i = 0; i < dout.length; i++) {
      const g = gate[i]!, u = up[i]!, d = dout[i]!;
      const s = 1 / (1 + Math.exp(-g));
      dup[i] = d * g * s;
      dgate[i] = d * u * s * (1 + g * (1 - s));
    }
  },
  attentionDense(out, lse, q, k, v, segStart, sh: AttentionShape) {
    const { numHeads: H, numKvHeads: K, headDim: E, scale } = sh;
    const p = new Float64Array(q.length / (H * E));
    for (let s = 0; s + 1 < segStart.length; s++) for (let t = segStart[s]!; t < segStart[s + 1]!; t++) for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / (H / K));
      let mx = -Infinity;
      for (let u = segStart[s]!; u <= t; u++) {
        let d = 0;
        for (let e = 0; e < E; e++) d += q[(t * H + h) * E + e]! * k[(u * K + kh) * E + e]!;
        p[u] = d * scale;
        mx = Math.max(mx, p[u]!);
      }
      let z = 0;
      for (let u = segStart[s]!; u <= t; u++) { p[u] = Math.exp(p[u]! - mx); z += p[u]!; }
      lse[t * H + h] = mx + Math.log(z);
      for (let e = 0; e < E; e++) {
        let acc = 0;
        for (let u = segStart[s]!; u <= t; u++) acc += (p[u]! / z) * v[(u * K + kh) * E + e]!;
        out[(t * H + h) * E + e] = acc;
      }
    }
  },
  attentionDenseBackward(dq, dk, dv, dout, q, k, v, out, lse, segStart, sh) {
    const { numHeads: H, numKvHeads: K, headDim: E, scale } = sh;
    dq.fill(0); dk.fill(0); dv.fill(0);
    for (let s = 0; s + 1 < segStart.length; s++) for (let t = segStart[s]!; t < segStart[s + 1]!; t++) for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / (H / K));
      let delta = 0;
      for (let e = 0; e < E; e++) delta += dout[(t * H + h) * E + e]! * out[(t * H + h) * E + e]!;
      for (let u = segStart[s]!; u <= t; u++) {
        let d = 0;
        for (let e = 0; e < E; e++) d += q[(t * H + h) * E + e]! * k[(u * K + kh) * E + e]!;
        const pr = Math.exp(d * scale - lse[t * H + h]!);
        let dp = 0;
        for (let e = 0; e < E; e++) dp += dout[(t * H + h) * E + e]! * v[(u * K + kh) * E + e]!;
        const ds = pr * (dp - delta) * scale;
        for (let e = 0; e < E; e++) {
          dv[(u * K + kh) * E + e] += pr * dout[(t * H + h) * E + e]!;
          dq[(t * H + h) * E + e] += ds * k[(u * K + kh) * E + e]!;
          dk[(u * K + kh) * E + e] += ds * q[(t * H + h) * E + e]!;
        }
      }
    }
  },
  embeddingBackward(dtable, dy, ids, D) {
    for (let t = 0; t < ids.length; t++) for (let i = 0; i < D; i++) dtable[ids[t]! * D + i] += dy[t * D + i]!;
  },
  crossEntropy(dlogits, logits, targets, M, scale) {
    const V = logits.length / M;
    let total = 0;
    for (let m = 0; m < M; m++) {
      const o = m * V;
      const tg = targets[m]!;
      if (tg < 0) { dlogits.fill(0, o, o + V); continue; }
      let mx = -Infinity;
      for (let i = 0; i < V; i++) mx = Math.max(mx, logits[o + i]!);
      let z = 0;
      for (let i = 0; i < V; i++) z += Math.exp(logits[o + i]! - mx);
      const lz = mx + Math.log(z);
      total += lz - logits[o + tg]!;
      for (let i = 0; i < V; i++) dlogits[o + i] = (Math.exp(logits[o + i]! - lz) - (i === tg ? 1 : 0)) * scale;
    }
    return total;
  },
};

/** The backend itself when it has the training kernels, else the backend plus the naive shim. */
export function withTrainKernels(be: Backend): TrainBackend {
  const missing = (Object.keys(shim) as (keyof TrainKernels)[]).filter((k) => typeof (be as Partial<TrainBackend>)[k] !== 'function');
  if (missing.length === 0) return be as TrainBackend;
  const out = Object.create(be) as Record<string, unknown>;
  for (const k of missing) out[k] = shim[k];
  return out as unknown as TrainBackend;
}

/** True when the backend implements every training kernel itself. */
export function hasOwnTrainKernels(be: Backend): boolean {
  return (Object.keys(shim) as (keyof TrainKernels)[]).every((k) => typeof (be as Partial<TrainBackend>)[k] === 'function');
}
