// Training kernel conformance beyond the shared suite: each broken kernel fails its check; native results do not
// depend on the thread count.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import type { AttentionShape, TrainBackend } from '../../src/backend/backend.js';
import { referenceBackend as ref } from '../../src/backend/reference.js';
import { bf16ToF32, f32ToBf16 } from '../../src/tensor/codecs.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { f32Tensor } from '../../src/tensor/tensor.js';
import { conformanceChecks, loraComposite, withSeed } from './helpers.js';
import { repoPath } from '../repo.js';

/** Query heads permuted so head h reads kv head h % K instead of h / (H/K) (rows (T, H*E)). */
function permuteHeads(x: Float32Array, shape: AttentionShape, inverse: boolean): Float32Array {
  const { numHeads: H, numKvHeads: K, headDim: E } = shape;
  const G = H / K;
  const perm = (h: number): number => (h % K) * G + Math.floor(h / K);
  const T = x.length / (H * E);
  const y = new Float32Array(x.length);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const [from, to] = inverse ? [perm(h), h] : [h, perm(h)];
      y.set(x.subarray((t * H + from) * E, (t * H + from + 1) * E), (t * H + to) * E);
    }
  }
  return y;
}

describe('training conformance checks catch broken kernels', () => {
  const checks = conformanceChecks();
  const mutants: { check: string; why: string; be: Partial<TrainBackend> }[] = [
    {
      check: 'matmulBackwardInput bf16', why: 'accumulate ignored',
      be: { matmulBackwardInput: (dx, dy, w, M) => ref.matmulBackwardInput(dx, dy, w, M, false) },
    },
    {
      check: 'matmulBackwardInput f32', why: 'dy rounded to bf16',
      be: { matmulBackwardInput: (dx, dy, w, M, acc) => ref.matmulBackwardInput(dx, dy.map((v) => bf16ToF32(f32ToBf16(v))), w, M, acc) },
    },
    {
      check: 'matmulBackwardInput q8_0', why: 'last weight row skipped',
      be: {
        matmulBackwardInput: (dx, dy, w, M, acc) => {
          const N = w.rows;
          ref.matmulBackwardInput(dx, dy.map((v, i) => (i % N === N - 1 ? 0 : v)), w, M, acc);
        },
      },
    },
    {
      check: 'matmulBackwardWeight', why: 'dw overwritten instead of accumulated',
      be: { matmulBackwardWeight: (dw, dy, x, M, N, C) => { dw.fill(0); ref.matmulBackwardWeight(dw, dy, x, M, N, C); } },
    },
    {
      check: 'rmsnormBackward', why: 'dg overwritten instead of accumulated',
      be: { rmsnormBackward: (dx, dg, dy, x, g, M, eps) => { dg?.fill(0); ref.rmsnormBackward(dx, dg, dy, x, g, M, eps); } },
    },
    { check: 'rmsnormBackward', why: 'eps ignored', be: { rmsnormBackward: (dx, dg, dy, x, g, M) => ref.rmsnormBackward(dx, dg, dy, x, g, M, 0) } },
    { check: 'ropeBackward', why: 'forward rotation instead of its transpose', be: { ropeBackward: (dx, p, nH, E, inv) => ref.rope(dx, p, nH, E, inv) } },
    {
      check: 'swigluBackward', why: 'silu\'(g) taken as σ(g)',
      be: {
        swigluBackward: (dg, du, dout, gate, up) => {
          for (let i = 0; i < gate.length; i++) {
            const s = 1 / (1 + Math.exp(-gate[i]!));
            const [g, u] = [gate[i]!, up[i]!];
            dg[i] = dout[i]! * u * s;
            du[i] = dout[i]! * g * s;
          }
        },
      },
    },
    {
      check: 'attentionDense GQA H/K=4', why: 'attention crosses packed samples',
      be: { attentionDense: (out, lse, q, k, v, seg, shape) => ref.attentionDense(out, lse, q, k, v, Int32Array.of(0, seg[seg.length - 1]!), shape) },
    },
    {
      check: 'attentionDense MHA', why: 'lse in log2',
      be: { attentionDense: (out, lse, q, k, v, seg, shape) => { ref.attentionDense(out, lse, q, k, v, seg, shape); lse.forEach((x, i) => { lse[i] = x / Math.LN2; }); } },
    },
    {
      check: 'attentionDenseBackward GQA H/K=4', why: 'kv head h % K instead of h / (H/K)',
      be: {
        attentionDenseBackward: (dq, dk, dv, dout, q, k, v, out, lse, seg, shape) => {
          const p = (x: Float32Array): Float32Array => permuteHeads(x, shape, false);
          const lseP = permuteHeads(lse, { ...shape, headDim: 1 }, false);
          const dq2 = new Float32Array(dq.length);
          ref.attentionDenseBackward(dq2, dk, dv, p(dout), p(q), k, v, p(out), lseP, seg, shape);
          dq.set(permuteHeads(dq2, shape, true));
        },
      },
    },
    {
      check: 'attentionDenseBackward MQA', why: 'shape.scale ignored (always 1/sqrt(E))',
      be: { attentionDenseBackward: (dq, dk, dv, dout, q, k, v, out, lse, seg, shape) => ref.attentionDenseBackward(dq, dk, dv, dout, q, k, v, out, lse, seg, { ...shape, scale: 1 / Math.sqrt(shape.headDim) }) },
    },
    {
      check: 'embeddingBackward', why: 'repeated ids overwrite instead of adding',
      be: {
        embeddingBackward: (dt, dy, ids, D) => {
          ref.embeddingBackward(dt, dy, ids, D);
          for (let t = 0; t < ids.length; t++) for (let d = 0; d < D; d++) dt[ids[t]! * D + d] = dy[t * D + d]!;
        },
      },
    },
    {
      check: 'crossEntropy', why: 'ignored rows counted against token 0',
      be: { crossEntropy: (dl, logits, targets, M, scale) => ref.crossEntropy(dl, logits, targets.map((t) => (t === -1 ? 0 : t)), M, scale) },
    },
    {
      check: 'crossEntropy', why: 'scale applied to the loss too',
      be: { crossEntropy: (dl, logits, targets, M, scale) => scale * ref.crossEntropy(dl, logits, targets, M, scale) },
    },
    {
      check: 'loraForward', why: 'u left unscaled (s applied to y\'s term only)',
      be: {
        loraForward: (y, u, x, a, b, s, M, N, C, r) => {
          loraComposite(ref).loraForward(y, u, x, a, b, s, M, N, C, r);
          for (let i = 0; i < u.length; i++) u[i]! /= s;
        },
      },
    },
    {
      check: 'loraBackward', why: 'dB overwritten instead of accumulated',
      be: {
        loraBackward: (dx, dA, dB, dy, x, u, a, b, s, M, N, C, r, acc) => {
          dB.fill(0);
          loraComposite(ref).loraBackward(dx, dA, dB, dy, x, u, a, b, s, M, N, C, r, acc);
        },
      },
    },
    {
      check: 'loraBackward', why: 'dx computed after x was overwritten (dx is x)',
      be: {
        loraBackward: (dx, dA, dB, dy, x, u, a, b, s, M, N, C, r, acc) => {
          // dx first, then dA from x, which dx may have replaced
          loraComposite(ref).loraBackward(dx, new Float32Array(dA.length), dB, dy, x.slice(), u, a, b, s, M, N, C, r, acc);
          const du = new Float32Array(M * r);
          ref.matmulBackwardInput(du, dy, f32Tensor([N, r], b), M, false);
          for (let i = 0; i < du.length; i++) du[i]! *= s;
          ref.matmulBackwardWeight(dA, du, x, M, r, C);
        },
      },
    },
  ];
  for (const m of mutants) {
    it(`${m.check}: ${m.why}`, () => {
      const check = checks.find((c) => c.name.startsWith(m.check));
      assert.ok(check, `no conformance check named '${m.check}…'`);
      const broken = { ...ref, ...m.be } as TrainBackend;
      assert.throws(() => check.run(broken), assert.AssertionError, `the '${check.name}' check passed a kernel with ${m.why}`);
    });
  }

  it('a backend without training kernels fails the checks with a clear message', () => {
    const check = conformanceChecks().find((c) => c.name.startsWith('crossEntropy'))!;
    const { crossEntropy: _drop, ...partial } = ref;
    assert.throws(() => check.run(partial as TrainBackend), /backend 'reference' has no training kernel crossEntropy/);
  });
});

// Every training kernel gives the same bits whatever the thread count (each output element has one writer and a
// fixed summation order), so a resumed or re-run training step reproduces its numbers exactly.
describe('native training kernels: bitwise independent of the thread count', () => {
  const be = process.env.FLOE_SKIP_NATIVE === '1' ? null : loadNativeBackend();
  const addon = loadAddon();
  it('1 thread and 3 threads agree bit for bit on every training kernel', { skip: be && addon ? false : 'native addon not built' }, () => {
    withSeed('native thread-count determinism', (rng) => {
      const TA = 700;  // attention tokens
      const run = (threads: number): Float32Array[] => {
        const initial = addon!.getThreads();
        addon!.setThreads(threads);
        try {
          const outs: Float32Array[] = [];
          const [M, N, C] = [70, 300, 130];
          const w = quantizeTensor(rngCopy.wv, [N, C], 'bf16');
          const dx = new Float32Array(M * C);
          be!.matmulBackwardInput(dx, rngCopy.dy, w, M, false);
          const dw = new Float32Array(N * C);
          be!.matmulBackwardWeight(dw, rngCopy.dy, rngCopy.x, M, N, C);
          // the 659-token sample runs as several key chunks, their partial dQ summed after (counter "chunked")
          const shape: AttentionShape = { numHeads: 4, numKvHeads: 2, headDim: 16, scale: 0.3 };
          const [out, lse] = [new Float32Array(TA * 64), new Float32Array(TA * 4)];
          be!.attentionDense(out, lse, rngCopy.q, rngCopy.k, rngCopy.v, rngCopy.seg, shape);
          const [dq, dk, dv] = [new Float32Array(TA * 64), new Float32Array(TA * 32), new Float32Array(TA * 32)];
          const chunked = (): number => Object.entries(nativeCounters()).reduce((n, [k, c]) => n + (k.startsWith('attentionDenseBackward.chunked.') ? c : 0), 0);
          const c0 = chunked();
          be!.attentionDenseBackward(dq, dk, dv, rngCopy.q, rngCopy.q, rngCopy.k, rngCopy.v, out, lse, rngCopy.seg, shape);
          assert.equal(chunked() - c0, 1, 'the 659-token sample did not run as key chunks');
          const dl = new Float32Array(M * C);
          const loss = be!.crossEntropy(dl, dx, Int32Array.from({ length: M }, (_, m) => m % 7 === 0 ? -1 : m), M, 0.5);
          const [rdx, rdg] = [new Float32Array(M * C), new Float32Array(C)];
          be!.rmsnormBackward(rdx, rdg, dx, rngCopy.x, rngCopy.wv.subarray(0, C), M, 1e-5);
          // LoRA factors, r = 16 and 40, dy past one 512-column block
          for (const r of [16, 40]) {
            const N2 = 900;
            const [a, b] = [rngCopy.wv.subarray(0, r * C), rngCopy.wv.subarray(0, N2 * r)];
            const [y, u] = [rngCopy.dy2.slice(), new Float32Array(M * r)];
            be!.loraForward!(y, u, rngCopy.x, a, b, 0.5, M, N2, C, r);
            const [lx, dA, dB] = [dx.slice(), new Float32Array(r * C), new Float32Array(N2 * r)];
            be!.loraBackward!(lx, dA, dB, rngCopy.dy2, rngCopy.x, u, a, b, 0.5, M, N2, C, r, true);
            outs.push(y, u, lx, dA, dB);
          }
          // a small model's projection (M 300, N 130, C 200, r 8): its rows run as splits with partial dB / dA
          {
            const [M3, N3, C3, r] = [300, 130, 200, 8];
            const [y, u] = [rngCopy.y3.slice(), new Float32Array(M3 * r)];
            be!.loraForward!(y, u, rngCopy.x3, rngCopy.a3, rngCopy.b3, 0.5, M3, N3, C3, r);
            const [lx, dA, dB] = [new Float32Array(M3 * C3), new Float32Array(r * C3), new Float32Array(N3 * r)];
            be!.loraBackward!(lx, dA, dB, rngCopy.y3, rngCopy.x3, u, rngCopy.a3, rngCopy.b3, 0.5, M3, N3, C3, r, false);
            outs.push(y, u, lx, dA, dB);
          }
          outs.push(dx, dw, out, lse, dq, dk, dv, dl, Float32Array.of(loss), rdx, rdg);
          return outs;
        } finally {
          addon!.setThreads(initial);
        }
      };
      const rngCopy = {
        wv: rng.normals(300 * 130), dy: rng.normals(70 * 300), dy2: rng.normals(70 * 900), x: rng.normals(70 * 130),
        q: rng.normals(TA * 64), k: rng.normals(TA * 32), v: rng.normals(TA * 32), seg: Int32Array.of(0, 40, 41, TA),
        x3: rng.normals(300 * 200), y3: rng.normals(300 * 130), a3: rng.normals(8 * 200, 0.3), b3: rng.normals(130 * 8, 0.3),
      };
      const one = run(1);
      const three = run(3);
      const lora = (r: number): string[] => ['y', 'u', 'dx', 'dA', 'dB'].map((k) => `lora r=${r} ${k}`);
      const names = [...lora(16), ...lora(40), ...lora(8), 'matmulBackwardInput', 'matmulBackwardWeight', 'attentionDense out', 'attentionDense lse', 'dq', 'dk', 'dv', 'crossEntropy dlogits', 'crossEntropy loss', 'rmsnorm dx', 'rmsnorm dg'];
      for (let i = 0; i < one.length; i++) assert.deepEqual(three[i], one[i], `${names[i]} differs between 1 and 3 threads`);
    });
  });
});

describe('FLOE_TRAIN_FUSED=0 (A/B)', () => {
  it('drops the fused LoRA kernels and native AdamW from the native backend, so the trainer takes its other paths', { skip: loadNativeBackend() ? false : 'native addon not built' }, () => {
    const probe = "const m = await import('./src/backend/native.ts'); const b = m.loadNativeBackend();" +
      " console.log(JSON.stringify([typeof b.loraForward, typeof b.loraBackward, typeof b.adamwUpdate, typeof b.matmul]));";
    const run = (fused: string | undefined): string[] => {
      const env = { ...process.env };
      if (fused === undefined) delete env.FLOE_TRAIN_FUSED;
      else env.FLOE_TRAIN_FUSED = fused;
      const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', probe], { env, encoding: 'utf8', cwd: repoPath('') });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout.trim().split('\n').pop()!) as string[];
    };
    assert.deepEqual(run(undefined), ['function', 'function', 'function', 'function']);
    assert.deepEqual(run('0'), ['undefined', 'undefined', 'undefined', 'function']);
  });
});

describe('native size checks', () => {
  // sizes whose product wraps past 2^63 to 0 once matched empty arrays, and the kernel then wrote out of bounds
  it('a product of sizes past int64 is an error naming the overflow, not a crash', { skip: loadAddon() ? false : 'native addon not built' }, () => {
    const probe = "const m = await import('./src/backend/native-addon.ts'); const a = m.loadAddon(); const e = new Float32Array(0); const big = 2 ** 32;" +
      " const calls = { loraForward: () => a.loraForward(e, e, e, e, e, 1, big, big, big, big)," +
      "   loraBackward: () => a.loraBackward(e, e, e, e, e, e, e, e, 1, big, big, big, big, true)," +
      "   matmulBackwardWeight: () => a.matmulBackwardWeight(e, e, e, big, big, big) };" +
      " for (const [k, f] of Object.entries(calls)) { try { f(); console.log(k + ': no error'); } catch (err) { console.log(k + ': ' + err.message); } }";
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', probe], { encoding: 'utf8', cwd: repoPath('') });
    assert.equal(r.status, 0, `the probe died (signal ${r.signal}): ${r.stderr}`);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 3, r.stdout);
    for (const l of lines) assert.match(l, /: .*sizes overflow/, l);
  });
});
