// Distillation loss: PyTorch float64 fixture (scripts/make_kd_fixtures.py) for the teacher's top-k and every loss's value
// and gradient; zero when student = teacher; β = 0 / 1 are the KL forms and the JSD tends to them; finite differences.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KdRowLoss, TeacherTopK, type KdLossConfig } from '../../src/train/kd-loss.js';
import { FIXTURES, assertClose } from './fixtures.js';

interface KdFixture {
  R: number; V: number; k: number; temperature: number;
  teacher_logits: number[]; student_logits: number[]; ids: number[]; logp: number[]; log_rest: number[];
  cases: { kind: 'forward-kl' | 'reverse-kl' | 'jsd'; beta: number; loss: number; grad: number[] }[];
}
const fx = JSON.parse(readFileSync(join(FIXTURES, 'distill', 'kd.json'), 'utf8')) as KdFixture;

function randn(n: number, scale: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  return Float32Array.from({ length: n }, () => scale * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()));
}

/** The teacher's top-k of every row of `t` (R, V). */
function teacherRows(t: Float32Array, R: number, V: number, k: number, T: number) {
  const top = new TeacherTopK(V, k, T);
  const ids = new Int32Array(R * k), logp = new Float32Array(R * k), rest = new Float64Array(R);
  for (let r = 0; r < R; r++) rest[r] = top.row(t, r * V, ids, logp, r * k);
  return { ids, logp, rest };
}

/** Σ over rows of T² D, and its gradient (R, V). */
function total(z: Float32Array, R: number, V: number, k: number, cfg: KdLossConfig, tr: ReturnType<typeof teacherRows>, grad: Float32Array | null): number {
  const loss = new KdRowLoss(V, k, cfg);
  let s = 0;
  for (let r = 0; r < R; r++) s += loss.row(z, r * V, tr.ids, r * k, tr.logp, r * k, tr.rest[r]!, grad, 1);
  return s;
}

describe('distillation loss', () => {
  it('the teacher top-k (ids, log-probabilities, rest mass) equals PyTorch', () => {
    const tr = teacherRows(Float32Array.from(fx.teacher_logits), fx.R, fx.V, fx.k, fx.temperature);
    assert.deepEqual(Array.from(tr.ids), fx.ids);
    assertClose(tr.logp, fx.logp, 'logp', 1e-6, 1e-7);
    assertClose(tr.rest, fx.log_rest, 'log rest', 1e-9, 1e-12);
  });

  for (const c of fx.cases) {
    it(`${c.kind}${c.kind === 'jsd' ? ` β=${c.beta}` : ''}: value and gradient equal PyTorch autograd`, () => {
      const tr = { ids: Int32Array.from(fx.ids), logp: Float32Array.from(fx.logp), rest: Float64Array.from(fx.log_rest) };
      const grad = new Float32Array(fx.R * fx.V);
      const got = total(Float32Array.from(fx.student_logits), fx.R, fx.V, fx.k, { kind: c.kind, beta: c.beta, temperature: fx.temperature }, tr, grad);
      assert.ok(Math.abs(got - c.loss) <= 1e-5 * Math.abs(c.loss), `loss ${got} vs torch ${c.loss}`);
      assertClose(grad, c.grad, 'dlogits', 1e-4, 1e-5);
    });
  }

  it('is 0 with a 0 gradient when the student is the teacher (every loss, fresh logits, rest bucket in play)', () => {
    const R = 7, V = 300, k = 16, T = 1.7;
    const t = randn(R * V, 4, 0x51);
    const tr = teacherRows(t, R, V, k, T);
    for (const [kind, beta] of [['forward-kl', 0], ['reverse-kl', 1], ['jsd', 0.5], ['jsd', 0.1]] as const) {
      const g = new Float32Array(R * V);
      const l = total(t, R, V, k, { kind, beta, temperature: T }, tr, g);
      assert.ok(Math.abs(l) < 1e-6, `${kind} β=${beta}: loss ${l}`);
      assert.ok(g.every((x) => Math.abs(x) < 1e-6), `${kind}: gradient ${Math.max(...g.map(Math.abs))}`);
      // and a different student is not 0
      const z = randn(R * V, 4, 0x52);
      assert.ok(total(z, R, V, k, { kind, beta, temperature: T }, tr, null) > 0.1, `${kind}: a different student has a positive loss`);
    }
  });

  it('jsd at β = 0 / 1 is forward / reverse KL, and tends to them as β → 0 / 1', () => {
    const R = 5, V = 200, k = 8, T = 2;
    const tr = teacherRows(randn(R * V, 3, 7), R, V, k, T);
    const z = randn(R * V, 3, 8);
    const at = (kind: KdLossConfig['kind'], beta: number) => {
      const g = new Float32Array(R * V);
      return { l: total(z, R, V, k, { kind, beta, temperature: T }, tr, g), g };
    };
    const fwd = at('forward-kl', 0), rev = at('reverse-kl', 1);
    assert.notEqual(fwd.l, rev.l);
    assert.deepEqual(at('jsd', 0), fwd);
    assert.deepEqual(at('jsd', 1), rev);
    const near0 = at('jsd', 1e-6), near1 = at('jsd', 1 - 1e-6);
    assert.ok(Math.abs(near0.l - fwd.l) < 1e-4 * fwd.l, `β=1e-6: ${near0.l} vs forward ${fwd.l}`);
    assert.ok(Math.abs(near1.l - rev.l) < 1e-4 * rev.l, `β=1-1e-6: ${near1.l} vs reverse ${rev.l}`);
    assertClose(near0.g, fwd.g, 'β→0 gradient', 1e-3, 1e-4);
    assertClose(near1.g, rev.g, 'β→1 gradient', 1e-3, 1e-4);
  });

  for (const [kind, beta] of [['forward-kl', 0], ['reverse-kl', 1], ['jsd', 0.4]] as const) {
    it(`${kind}: gradient equals central finite differences`, () => {
      const R = 3, V = 60, k = 5, T = 1.5;
      const tr = teacherRows(randn(R * V, 2, 21), R, V, k, T);
      const z = randn(R * V, 2, 22);
      const cfg = { kind, beta, temperature: T };
      const g = new Float32Array(R * V);
      total(z, R, V, k, cfg, tr, g);
      const fd = new Float64Array(R * V);
      for (let i = 0; i < z.length; i++) {
        const z0 = z[i]!;
        z[i] = z0 + 1e-2; const hp = z[i]!; const lp = total(z, R, V, k, cfg, tr, null);
        z[i] = z0 - 1e-2; const hm = z[i]!; const lm = total(z, R, V, k, cfg, tr, null);
        z[i] = z0;
        fd[i] = (lp - lm) / (hp - hm);
      }
      assertClose(g, fd, `${kind} dlogits vs finite differences`, 2e-3, 2e-4);
    });
  }
});
