// Reference backend: every Backend and TrainKernels kernel in plain TypeScript, the oracle the native kernels are tested against.
//
// Dimension letters: M rows, C input features, N output features, T tokens, H heads, K kv heads, E head dim,
// V vocab, S sequences, L block size. Clarity over speed; f64 accumulators wherever they cost nothing.

import { bf16ToF32Bits, bitsToF32, dequantizeRow, f32BitsToBf16, f32ToBits, f32ToFp8, FP8_E4M3_MAX, fp8ToF32 } from '../tensor/codecs.js';
import type { Tensor } from '../tensor/tensor.js';
import type { AttentionBatch, AttentionShape, KvLayer, TrainBackend } from './backend.js';

function fail(op: string, msg: string): never {
  throw new Error(`reference.${op}: ${msg}`);
}

function checkLen(op: string, what: string, got: number, want: number): void {
  if (got !== want) fail(op, `${what} has ${got} values, expected ${want}`);
}

/** Bytes per element of a KV cache dtype. */
function kvElemBytes(layer: KvLayer): number {
  switch (layer.dtype) {
    case 'f32': return 4;
    case 'bf16': return 2;
    case 'fp8_e4m3': return 1;
  }
}

/** The layer's fp8 scale arrays (numBlocks, L, K), checked. */
function kvScales(op: string, layer: KvLayer): [Float32Array, Float32Array] {
  const n = layer.numBlocks * layer.blockSize * layer.numKvHeads;
  if (!layer.kScale || !layer.vScale) fail(op, 'fp8_e4m3 cache layer has no kScale / vScale arrays');
  checkLen(op, `kScale (numBlocks*L*K=${n})`, layer.kScale.length, n);
  checkLen(op, `vScale (numBlocks*L*K=${n})`, layer.vScale.length, n);
  return [layer.kScale, layer.vScale];
}

/** Cache element at element index `i` of k or v (both (numBlocks, L, K, E)). */
function kvRead(layer: KvLayer, buf: Uint8Array, i: number): number {
  if (layer.dtype === 'fp8_e4m3') {
    const scale = buf === layer.k ? layer.kScale! : layer.vScale!;
    return fp8ToF32(buf[i]!) * scale[Math.floor(i / layer.headDim)]!;
  }
  if (layer.dtype === 'f32') {
    const o = i * 4;
    return bitsToF32((buf[o]! | (buf[o + 1]! << 8) | (buf[o + 2]! << 16) | (buf[o + 3]! << 24)) >>> 0);
  }
  const o = i * 2;
  return bitsToF32(bf16ToF32Bits(buf[o]! | (buf[o + 1]! << 8)));
}

function kvStore(layer: KvLayer, buf: Uint8Array, i: number, x: number): void {
  const u = f32ToBits(x);
  if (layer.dtype === 'f32') {
    const o = i * 4;
    buf[o] = u & 0xff; buf[o + 1] = (u >>> 8) & 0xff; buf[o + 2] = (u >>> 16) & 0xff; buf[o + 3] = u >>> 24;
    return;
  }
  const h = f32BitsToBf16(u); // RNE
  const o = i * 2;
  buf[o] = h & 0xff; buf[o + 1] = h >>> 8;
}

/** Validates the dense attention arguments; returns T. segStart (S+1) must run 0 = segStart[0] <= ... <= segStart[S] = T. */
function checkDense(op: string, q: Float32Array, k: Float32Array, v: Float32Array, segStart: Int32Array, shape: AttentionShape): number {
  const { numHeads: H, numKvHeads: K, headDim: E } = shape;
  if (!(H > 0 && K > 0 && E > 0) || H % K !== 0) fail(op, `numHeads ${H} must be a positive multiple of numKvHeads ${K} (headDim ${E})`);
  const T = q.length / (H * E);
  if (!Number.isInteger(T)) fail(op, `q length ${q.length} is not a multiple of H*E=${H * E}`);
  checkLen(op, `k (T=${T}, K*E=${K * E})`, k.length, T * K * E);
  checkLen(op, `v (T=${T}, K*E=${K * E})`, v.length, T * K * E);
  const S = segStart.length - 1;
  if (S < 0 || segStart[0] !== 0 || segStart[S] !== T) fail(op, `segStart must run from 0 to T=${T}, got [${Array.from(segStart.subarray(0, 8)).join(',')}${S > 7 ? ',…' : ''}] (length ${segStart.length})`);
  for (let s = 0; s < S; s++) if (segStart[s + 1]! < segStart[s]!) fail(op, `segStart decreases at ${s + 1}: ${segStart[s]} then ${segStart[s + 1]}`);
  return T;
}

/** Calls fn(i, s0) for every query row i, with s0 the first row of its packed sample. */
function forEachQuery(segStart: Int32Array, fn: (i: number, s0: number) => void): void {
  for (let s = 0; s + 1 < segStart.length; s++) {
    for (let i = segStart[s]!; i < segStart[s + 1]!; i++) fn(i, segStart[s]!);
  }
}

/** p[j - s0] = scale · q(qo..qo+E) · k(j, kvh) for keys s0..i of one packed sample; returns the max score. */
function denseScores(p: Float64Array, q: Float32Array, qo: number, k: Float32Array, s0: number, i: number, K: number, kvh: number, E: number, scale: number): number {
  let max = -Infinity;
  for (let j = s0; j <= i; j++) {
    let dot = 0;
    for (let e = 0; e < E; e++) dot += q[qo + e]! * k[(j * K + kvh) * E + e]!;
    p[j - s0] = dot * scale;
    max = Math.max(max, p[j - s0]!);
  }
  return max;
}

export const referenceBackend: TrainBackend = {
  name: 'reference',

  matmul(y: Float32Array, x: Float32Array, w: Tensor, M: number): void {
    const N = w.rows;
    const C = w.cols;
    checkLen('matmul', `x (M=${M}, C=${C})`, x.length, M * C);
    checkLen('matmul', `y (M=${M}, N=${N})`, y.length, M * N);
    const row = new Float32Array(C); // one dequantized weight row at a time
    for (let n = 0; n < N; n++) {
      dequantizeRow(w, n, row);
      for (let m = 0; m < M; m++) {
        let acc = 0;
        for (let c = 0; c < C; c++) acc += x[m * C + c]! * row[c]!;
        y[m * N + n] = acc;
      }
    }
  },

  rmsnorm(y: Float32Array, x: Float32Array, g: Float32Array, M: number, eps: number): void {
    const D = g.length;
    checkLen('rmsnorm', `x (M=${M}, D=${D})`, x.length, M * D);
    checkLen('rmsnorm', `y (M=${M}, D=${D})`, y.length, M * D);
    for (let m = 0; m < M; m++) {
      let ss = 0;
      for (let d = 0; d < D; d++) ss += x[m * D + d]! * x[m * D + d]!;
      const inv = 1 / Math.sqrt(ss / D + eps);
      for (let d = 0; d < D; d++) y[m * D + d] = x[m * D + d]! * inv * g[d]!;
    }
  },

  rope(x: Float32Array, positions: Int32Array, nHeads: number, headDim: number, invFreq: Float32Array): void {
    const T = positions.length;
    const half = headDim / 2;
    checkLen('rope', `x (T=${T}, heads=${nHeads}, E=${headDim})`, x.length, T * nHeads * headDim);
    checkLen('rope', 'invFreq (E/2)', invFreq.length, half);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < half; i++) {
        // HF: freqs = (inv_freq.float() @ position_ids.float()) in f32, then cos/sin of that f32 angle.
        const angle = Math.fround(Math.fround(positions[t]!) * invFreq[i]!);
        const cos = Math.cos(angle);
        const sin = Math.sin(angle);
        for (let h = 0; h < nHeads; h++) {
          const o = (t * nHeads + h) * headDim;
          const a = x[o + i]!;
          const b = x[o + i + half]!;
          x[o + i] = a * cos - b * sin;
          x[o + i + half] = b * cos + a * sin;
        }
      }
    }
  },

  swiglu(out: Float32Array, gate: Float32Array, up: Float32Array): void {
    checkLen('swiglu', 'up', up.length, gate.length);
    checkLen('swiglu', 'out', out.length, gate.length);
    for (let i = 0; i < gate.length; i++) {
      const g = gate[i]!;
      out[i] = (g / (1 + Math.exp(-g))) * up[i]!;
    }
  },

  embedding(out: Float32Array, table: Tensor, ids: Int32Array): void {
    const V = table.rows;
    const D = table.cols;
    checkLen('embedding', `out (T=${ids.length}, D=${D})`, out.length, ids.length * D);
    for (let t = 0; t < ids.length; t++) {
      const id = ids[t]!;
      if (id < 0 || id >= V) fail('embedding', `token id ${id} at position ${t} is outside [0, ${V})`);
      dequantizeRow(table, id, out.subarray(t * D, (t + 1) * D));
    }
  },

  add(y: Float32Array, x: Float32Array): void {
    checkLen('add', 'x', x.length, y.length);
    for (let i = 0; i < y.length; i++) y[i] = y[i]! + x[i]!;
  },

  kvWrite(layer: KvLayer, k: Float32Array, v: Float32Array, slots: Int32Array): void {
    const KE = layer.numKvHeads * layer.headDim;
    const T = slots.length;
    const numSlots = layer.numBlocks * layer.blockSize;
    checkLen('kvWrite', `k (T=${T}, K*E=${KE})`, k.length, T * KE);
    checkLen('kvWrite', `v (T=${T}, K*E=${KE})`, v.length, T * KE);
    checkLen('kvWrite', `cache k bytes (numBlocks*L*K*E*${kvElemBytes(layer)})`, layer.k.length, numSlots * KE * kvElemBytes(layer));
    checkLen('kvWrite', 'cache v bytes', layer.v.length, layer.k.length);
    for (let t = 0; t < T; t++) {
      const slot = slots[t]!;
      if (slot < 0 || slot >= numSlots) fail('kvWrite', `slot ${slot} of token ${t} is outside [0, ${numSlots})`);
      if (layer.dtype === 'fp8_e4m3') {
        const [ks, vs] = kvScales('kvWrite', layer);
        for (const [src, dst, scale] of [[k, layer.k, ks], [v, layer.v, vs]] as const) {
          for (let h = 0; h < layer.numKvHeads; h++) {
            const o = t * KE + h * layer.headDim; // this head's E values
            let amax = 0;
            for (let e = 0; e < layer.headDim; e++) amax = Math.max(amax, Math.abs(src[o + e]!));
            const s = Math.fround(amax / FP8_E4M3_MAX) || 1; // 1 when all zero (or amax/448 underflows)
            scale[slot * layer.numKvHeads + h] = s;
            for (let e = 0; e < layer.headDim; e++) dst[slot * KE + h * layer.headDim + e] = f32ToFp8(src[o + e]! / s);
          }
        }
        continue;
      }
      for (let j = 0; j < KE; j++) {
        kvStore(layer, layer.k, slot * KE + j, k[t * KE + j]!);
        kvStore(layer, layer.v, slot * KE + j, v[t * KE + j]!);
      }
    }
  },

  attention(out: Float32Array, q: Float32Array, layer: KvLayer, shape: AttentionShape, batch: AttentionBatch): void {
    const { numHeads: H, numKvHeads: K, headDim: E, scale } = shape;
    const L = layer.blockSize;
    const S = batch.numSeqs;
    if (H % K !== 0) fail('attention', `numHeads ${H} is not a multiple of numKvHeads ${K}`);
    if (K !== layer.numKvHeads || E !== layer.headDim) {
      fail('attention', `shape (K=${K}, E=${E}) does not match the cache layer (K=${layer.numKvHeads}, E=${layer.headDim})`);
    }
    const Tq = batch.qStart[S]!;
    checkLen('attention', `q (Tq=${Tq}, H*E=${H * E})`, q.length, Tq * H * E);
    checkLen('attention', `out (Tq=${Tq}, H*E=${H * E})`, out.length, Tq * H * E);
    const group = H / K;
    if (layer.dtype === 'fp8_e4m3') kvScales('attention', layer);
    for (let s = 0; s < S; s++) {
      const q0 = batch.qStart[s]!;
      const qLen = batch.qStart[s + 1]! - q0;
      const ctx = batch.ctxLen[s]!;
      if (qLen < 0 || qLen > ctx) fail('attention', `sequence ${s} has ${qLen} queries but ctxLen ${ctx}`);
      if (Math.ceil(ctx / L) > batch.maxBlocks) fail('attention', `sequence ${s} ctxLen ${ctx} needs more than maxBlocks ${batch.maxBlocks}`);
      // slot of cached token i of this sequence
      const slotOf = (i: number): number => {
        const block = batch.blockTables[s * batch.maxBlocks + Math.floor(i / L)]!;
        if (block < 0 || block >= layer.numBlocks) fail('attention', `sequence ${s} token ${i} maps to block ${block}, outside [0, ${layer.numBlocks})`);
        return block * L + (i % L);
      };
      for (let j = 0; j < qLen; j++) {
        const pos = ctx - qLen + j; // attends cached tokens 0..pos
        const scores = new Float64Array(pos + 1);
        for (let h = 0; h < H; h++) {
          const kvh = Math.floor(h / group);
          const qo = (q0 + j) * H * E + h * E;
          let max = -Infinity;
          for (let i = 0; i <= pos; i++) {
            const ko = (slotOf(i) * K + kvh) * E;
            let dot = 0;
            for (let e = 0; e < E; e++) dot += q[qo + e]! * kvRead(layer, layer.k, ko + e);
            scores[i] = dot * scale;
            max = Math.max(max, scores[i]!);
          }
          let sum = 0;
          for (let i = 0; i <= pos; i++) {
            scores[i] = Math.exp(scores[i]! - max);
            sum += scores[i]!;
          }
          for (let e = 0; e < E; e++) {
            let acc = 0;
            for (let i = 0; i <= pos; i++) acc += scores[i]! * kvRead(layer, layer.v, (slotOf(i) * K + kvh) * E + e);
            out[qo + e] = acc / sum;
          }
        }
      }
    }
  },

  logSoftmax(out: Float32Array, logits: Float32Array, M: number): void {
    const V = logits.length / M;
    if (!Number.isInteger(V)) fail('logSoftmax', `logits length ${logits.length} is not a multiple of M=${M}`);
    checkLen('logSoftmax', 'out', out.length, logits.length);
    for (let m = 0; m < M; m++) {
      let max = -Infinity;
      for (let v = 0; v < V; v++) max = Math.max(max, logits[m * V + v]!);
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(logits[m * V + v]! - max);
      const lse = max + Math.log(sum);
      for (let v = 0; v < V; v++) out[m * V + v] = logits[m * V + v]! - lse;
    }
  },

  topk(x: Float32Array, k: number): { ids: Int32Array; values: Float32Array } {
    if (!Number.isInteger(k) || k < 0 || k > x.length) fail('topk', `k=${k} outside [0, ${x.length}]`);
    const order = Array.from(x.keys());
    // Descending by value, ties by lower index; NaN sorts last.
    const key = (i: number): number => (Number.isNaN(x[i]!) ? -Infinity : x[i]!);
    order.sort((a, b) => key(b) - key(a) || (Number.isNaN(x[a]!) ? 1 : 0) - (Number.isNaN(x[b]!) ? 1 : 0) || a - b);
    const ids = Int32Array.from(order.slice(0, k));
    const values = new Float32Array(k);
    for (let i = 0; i < k; i++) values[i] = x[ids[i]!]!;
    return { ids, values };
  },

  // ------------------------------------------------------------------------------------- training kernels

  matmulBackwardInput(dx: Float32Array, dy: Float32Array, w: Tensor, M: number, accumulate: boolean): void {
    const N = w.rows;
    const C = w.cols;
    checkLen('matmulBackwardInput', `dy (M=${M}, N=${N})`, dy.length, M * N);
    checkLen('matmulBackwardInput', `dx (M=${M}, C=${C})`, dx.length, M * C);
    const acc = new Float64Array(M * C); // (M, C)
    const row = new Float32Array(C); // one dequantized weight row at a time
    for (let n = 0; n < N; n++) {
      dequantizeRow(w, n, row);
      for (let m = 0; m < M; m++) {
        const d = dy[m * N + n]!; // no skip for d = 0: 0 · NaN stays NaN, as in IEEE arithmetic
        for (let c = 0; c < C; c++) acc[m * C + c] += d * row[c]!;
      }
    }
    for (let i = 0; i < M * C; i++) dx[i] = accumulate ? dx[i]! + acc[i]! : acc[i]!;
  },

  matmulBackwardWeight(dw: Float32Array, dy: Float32Array, x: Float32Array, M: number, N: number, C: number): void {
    checkLen('matmulBackwardWeight', `dw (N=${N}, C=${C})`, dw.length, N * C);
    checkLen('matmulBackwardWeight', `dy (M=${M}, N=${N})`, dy.length, M * N);
    checkLen('matmulBackwardWeight', `x (M=${M}, C=${C})`, x.length, M * C);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        let acc = 0;
        for (let m = 0; m < M; m++) acc += dy[m * N + n]! * x[m * C + c]!;
        dw[n * C + c] = dw[n * C + c]! + acc;
      }
    }
  },

  rmsnormBackward(dx: Float32Array, dg: Float32Array | null, dy: Float32Array, x: Float32Array, g: Float32Array, M: number, eps: number): void {
    const D = g.length;
    checkLen('rmsnormBackward', `x (M=${M}, D=${D})`, x.length, M * D);
    checkLen('rmsnormBackward', `dy (M=${M}, D=${D})`, dy.length, M * D);
    checkLen('rmsnormBackward', `dx (M=${M}, D=${D})`, dx.length, M * D);
    if (dg) checkLen('rmsnormBackward', `dg (D=${D})`, dg.length, D);
    for (let m = 0; m < M; m++) {
      const o = m * D;
      let ss = 0;
      for (let d = 0; d < D; d++) ss += x[o + d]! * x[o + d]!;
      const r = 1 / Math.sqrt(ss / D + eps); // y = x * r * g
      // dx = r * g*dy - x * r³/D * sum(g*dy*x)
      let dot = 0;
      for (let d = 0; d < D; d++) dot += g[d]! * dy[o + d]! * x[o + d]!;
      const k = (r * r * r * dot) / D;
      for (let d = 0; d < D; d++) {
        const xd = x[o + d]!;
        const dyd = dy[o + d]!;
        if (dg) dg[d] = dg[d]! + dyd * xd * r;
        dx[o + d] = r * g[d]! * dyd - k * xd;
      }
    }
  },

  ropeBackward(dx: Float32Array, positions: Int32Array, nHeads: number, headDim: number, invFreq: Float32Array): void {
    const T = positions.length;
    const half = headDim / 2;
    checkLen('ropeBackward', `dx (T=${T}, heads=${nHeads}, E=${headDim})`, dx.length, T * nHeads * headDim);
    checkLen('ropeBackward', 'invFreq (E/2)', invFreq.length, half);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(Math.fround(positions[t]!) * invFreq[i]!); // the forward's f32 angle
        const cos = Math.cos(angle);
        const sin = Math.sin(angle);
        for (let h = 0; h < nHeads; h++) {
          const o = (t * nHeads + h) * headDim;
          const a = dx[o + i]!;
          const b = dx[o + i + half]!;
          // transpose of [[cos, -sin], [sin, cos]]
          dx[o + i] = a * cos + b * sin;
          dx[o + i + half] = b * cos - a * sin;
        }
      }
    }
  },

  swigluBackward(dgate: Float32Array, dup: Float32Array, dout: Float32Array, gate: Float32Array, up: Float32Array): void {
    const n = gate.length;
    for (const [what, a] of [['up', up], ['dout', dout], ['dgate', dgate], ['dup', dup]] as const) checkLen('swigluBackward', what, a.length, n);
    for (let i = 0; i < n; i++) {
      const g = gate[i]!;
      const u = up[i]!;
      const d = dout[i]!;
      const sig = 1 / (1 + Math.exp(-g));
      // silu'(g) = σ(g) (1 + g (1 - σ(g)))
      dgate[i] = d * u * sig * (1 + g * (1 - sig));
      dup[i] = d * g * sig;
    }
  },

  attentionDense(out: Float32Array, lse: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, segStart: Int32Array, shape: AttentionShape): void {
    const { numHeads: H, numKvHeads: K, headDim: E, scale } = shape;
    const T = checkDense('attentionDense', q, k, v, segStart, shape);
    checkLen('attentionDense', `out (T=${T}, H*E=${H * E})`, out.length, T * H * E);
    checkLen('attentionDense', `lse (T=${T}, H=${H})`, lse.length, T * H);
    const G = H / K;
    forEachQuery(segStart, (i, s0) => {
      const p = new Float64Array(i - s0 + 1); // scores of keys s0..i
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / G);
        const qo = (i * H + h) * E;
        const max = denseScores(p, q, qo, k, s0, i, K, kvh, E, scale);
        let sum = 0;
        for (let j = s0; j <= i; j++) sum += Math.exp(p[j - s0]! - max);
        lse[i * H + h] = max + Math.log(sum);
        for (let e = 0; e < E; e++) {
          let acc = 0;
          for (let j = s0; j <= i; j++) acc += Math.exp(p[j - s0]! - max) * v[(j * K + kvh) * E + e]!;
          out[qo + e] = acc / sum;
        }
      }
    });
  },

  attentionDenseBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dout: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array,
    out: Float32Array, lse: Float32Array, segStart: Int32Array, shape: AttentionShape): void {
    const { numHeads: H, numKvHeads: K, headDim: E, scale } = shape;
    const T = checkDense('attentionDenseBackward', q, k, v, segStart, shape);
    for (const [what, a, n] of [['dq', dq, H], ['dout', dout, H], ['out', out, H], ['dk', dk, K], ['dv', dv, K]] as const) {
      checkLen('attentionDenseBackward', `${what} (T=${T}, ${n === H ? 'H' : 'K'}*E=${n * E})`, a.length, T * n * E);
    }
    checkLen('attentionDenseBackward', `lse (T=${T}, H=${H})`, lse.length, T * H);
    // Softmax recomputed in f64 from q and k (independent of the forward's saved out and lse).
    const G = H / K;
    const gq = new Float64Array(T * H * E);
    const gk = new Float64Array(T * K * E);
    const gv = new Float64Array(T * K * E);
    forEachQuery(segStart, (i, s0) => {
      const p = new Float64Array(i - s0 + 1);
      const dp = new Float64Array(i - s0 + 1);
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / G);
        const qo = (i * H + h) * E;
        const max = denseScores(p, q, qo, k, s0, i, K, kvh, E, scale);
        let sum = 0;
        for (let j = s0; j <= i; j++) { p[j - s0] = Math.exp(p[j - s0]! - max); sum += p[j - s0]!; }
        // P = softmax; dP_j = dout·v_j; dS_j = P_j (dP_j - Σ_l P_l dP_l)
        let pdp = 0;
        for (let j = s0; j <= i; j++) {
          p[j - s0] = p[j - s0]! / sum;
          let dot = 0;
          for (let e = 0; e < E; e++) dot += dout[qo + e]! * v[(j * K + kvh) * E + e]!;
          dp[j - s0] = dot;
          pdp += p[j - s0]! * dot;
        }
        for (let j = s0; j <= i; j++) {
          const ko = (j * K + kvh) * E;
          const pj = p[j - s0]!;
          const ds = pj * (dp[j - s0]! - pdp) * scale;
          for (let e = 0; e < E; e++) {
            gv[ko + e] += pj * dout[qo + e]!;
            gq[qo + e] += ds * k[ko + e]!;
            gk[ko + e] += ds * q[qo + e]!;
          }
        }
      }
    });
    dq.set(gq);
    dk.set(gk);
    dv.set(gv);
  },

  embeddingBackward(dtable: Float32Array, dy: Float32Array, ids: Int32Array, D: number): void {
    const T = ids.length;
    checkLen('embeddingBackward', `dy (T=${T}, D=${D})`, dy.length, T * D);
    const V = dtable.length / D;
    if (!Number.isInteger(V)) fail('embeddingBackward', `dtable length ${dtable.length} is not a multiple of D=${D}`);
    for (let t = 0; t < T; t++) {
      const id = ids[t]!;
      if (id < 0 || id >= V) fail('embeddingBackward', `token id ${id} at position ${t} is outside [0, ${V})`);
      for (let d = 0; d < D; d++) dtable[id * D + d] = dtable[id * D + d]! + dy[t * D + d]!;
    }
  },

  crossEntropy(dlogits: Float32Array, logits: Float32Array, targets: Int32Array, M: number, scale: number): number {
    checkLen('crossEntropy', `targets (M=${M})`, targets.length, M);
    const V = logits.length / M;
    if (!Number.isInteger(V)) fail('crossEntropy', `logits length ${logits.length} is not a multiple of M=${M}`);
    checkLen('crossEntropy', `dlogits (M=${M}, V=${V})`, dlogits.length, M * V);
    let loss = 0;
    for (let m = 0; m < M; m++) {
      const o = m * V;
      const target = targets[m]!;
      if (target === -1) {
        dlogits.fill(0, o, o + V);
        continue;
      }
      if (target < 0 || target >= V) fail('crossEntropy', `target ${target} of row ${m} is outside [0, ${V}) and not -1 (ignored)`);
      let max = -Infinity;
      for (let j = 0; j < V; j++) max = Math.max(max, logits[o + j]!);
      let sum = 0;
      for (let j = 0; j < V; j++) sum += Math.exp(logits[o + j]! - max);
      const lse = max + Math.log(sum);
      loss += lse - logits[o + target]!;
      for (let j = 0; j < V; j++) dlogits[o + j] = (Math.exp(logits[o + j]! - lse) - (j === target ? 1 : 0)) * scale;
    }
    return loss;
  },
};
