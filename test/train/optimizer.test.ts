// Optimizer, clipping and schedule against their definitions (AdamW itself is checked against torch in llama-train).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { TrainParam } from '../../src/model/llama-train.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { clipGradNorm, gradNorm, Optimizer } from '../../src/train/optimizer.js';
import { learningRate } from '../../src/train/schedule.js';
import { Rng } from '../../src/train/rng.js';

const seed = (Math.random() * 2 ** 32) >>> 0;
const rng = new Rng(seed);
const param = (n: number, decay = true): TrainParam => ({
  name: 'p', shape: [n], decay,
  value: Float32Array.from({ length: n }, () => rng.next() - 0.5), grad: Float32Array.from({ length: n }, () => rng.next() - 0.5),
});

describe(`optimizer (seed ${seed})`, () => {
  it('SGD with weight decay and momentum follows torch.optim.SGD', () => {
    const p = param(7);
    const w0 = p.value.slice(), g = p.grad.slice();
    const opt = new Optimizer([p], { name: 'sgd', betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.1, momentum: 0.5 });
    opt.update(0.2);
    const buf = w0.map((w, i) => g[i]! + 0.1 * w);
    const w1 = w0.map((w, i) => Math.fround(w - 0.2 * buf[i]!));
    assert.deepEqual(Array.from(p.value), Array.from(w1));
    opt.update(0.2); // same grads: buf = 0.5 buf + (g + wd w1)
    for (let i = 0; i < 7; i++) {
      const b2 = 0.5 * Math.fround(buf[i]!) + (g[i]! + 0.1 * w1[i]!);
      assert.ok(Math.abs(p.value[i]! - (w1[i]! - 0.2 * b2)) < 1e-6);
    }
  });

  it('AdamW: first step moves each weight by lr·g/(|g| + eps), ~lr·sign(g) (plus decay); no decay where decay is false', () => {
    const p = param(9), q = param(9, false);
    const wp = p.value.slice(), wq = q.value.slice();
    new Optimizer([p, q], { name: 'adamw', betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.5, momentum: 0 }).update(0.01);
    // bias-corrected m = g and v = g² after one step; g/(|g| + eps) rather than sign(g), which misses by more than
    // the tolerance for |g| < 1e-4 (one run in ~300 drew one)
    const step = (g: number) => (0.01 * g) / (Math.abs(g) + 1e-8);
    for (let i = 0; i < 9; i++) {
      assert.ok(Math.abs(p.value[i]! - (wp[i]! * (1 - 0.005) - step(p.grad[i]!))) < 1e-6);
      assert.ok(Math.abs(q.value[i]! - (wq[i]! - step(q.grad[i]!))) < 1e-6);
    }
  });

  it('AdamW on the native backend gives the TypeScript update\'s bits (decay on and off, spans past 16K, 5 steps)', { skip: loadNativeBackend() ? false : 'native addon not built' }, () => {
    const be = loadNativeBackend()!;
    const c0 = nativeCounters()['adamwUpdate.f64'] ?? 0;
    const make = (): TrainParam[] => [param(40_001), param(17, false), param(1)];
    const ts = make();
    const nat = ts.map((p) => ({ ...p, value: p.value.slice(), grad: p.grad.slice() }));
    // awkward moments: a zero gradient, a huge one, a tiny one, a NaN
    for (const ps of [ts, nat]) { ps[0]!.grad[3] = 0; ps[0]!.grad[5] = 3e4; ps[0]!.grad[7] = 1e-30; ps[1]!.grad[2] = NaN; }
    const cfg = { name: 'adamw', betas: [0.9, 0.95], eps: 1e-6, weightDecay: 0.1, momentum: 0 } as const;
    const [a, b] = [new Optimizer(ts, cfg), new Optimizer(nat, cfg, be)];
    for (const lr of [3e-3, 1e-2, 2e-4, 5e-2, 1e-3]) {
      a.update(lr); b.update(lr);
      ts.forEach((p, i) => {
        assert.deepEqual(nat[i]!.value, p.value, `weights of param ${i} at lr ${lr}`);
        assert.deepEqual(b.m[i], a.m[i], `first moment of param ${i}`);
        assert.deepEqual(b.v[i], a.v[i], `second moment of param ${i}`);
      });
      for (const ps of [ts, nat]) ps.forEach((p) => p.grad.forEach((g, j) => { p.grad[j] = Number.isNaN(g) ? g : -0.7 * g + 1e-3; }));
    }
    assert.ok((nativeCounters()['adamwUpdate.f64'] ?? 0) >= c0 + 15, 'the native AdamW kernel ran');
  });

  it('clipGradNorm scales to the max norm and returns the norm before', () => {
    const ps = [param(5), param(11)];
    const n0 = Math.hypot(...ps.flatMap((p) => Array.from(p.grad)));
    assert.ok(Math.abs(clipGradNorm(ps, 0.5) - n0) < 1e-6);
    assert.ok(Math.abs(gradNorm(ps) - 0.5) < 1e-5);
    const before = ps.map((p) => p.grad.slice());
    clipGradNorm(ps, 10);
    ps.forEach((p, i) => assert.deepEqual(p.grad, before[i]));
  });

  it('schedule: linear warmup from 0, then cosine / linear to the floor', () => {
    const c = { lr: 1, warmupSteps: 4, totalSteps: 14, decay: 'cosine' as const, minLrRatio: 0 };
    assert.deepEqual([0, 1, 2, 3, 4].map((s) => learningRate(c, s)), [0, 0.25, 0.5, 0.75, 1]);
    assert.ok(Math.abs(learningRate(c, 9) - 0.5) < 1e-12);
    assert.ok(Math.abs(learningRate(c, 14)) < 1e-12);
    const l = { ...c, decay: 'linear' as const, minLrRatio: 0.1 };
    assert.ok(Math.abs(learningRate(l, 9) - (0.1 + 0.9 * 0.5)) < 1e-12);
    assert.equal(learningRate({ ...c, decay: 'constant' }, 12), 1);
  });
});
