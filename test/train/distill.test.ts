// `distill` end to end on tiny models: the teacher cache equals the inference path's top-k, KD is 0 when the student is
// the teacher, kd-ratio 0 is plain finetune, the KD part falls, exact resume, a different tokenizer is refused.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { referenceBackend } from '../../src/backend/reference.js';
import { loadNativeBackend } from '../../src/backend/native.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { generate } from '../../src/model/generate.js';
import { openModel } from '../../src/model/open.js';
import { loadSamples, packSamples } from '../../src/train/data.js';
import { distill, type DistillOptions } from '../../src/train/distill.js';
import { buildTeacherCache, bytesPerToken, TeacherCache } from '../../src/train/teacher-cache.js';
import { finetune, type StepMetrics } from '../../src/train/trainer.js';
import { asTrain, tinyModelDir, writeTrainData } from './fixtures.js';

const be = asTrain(referenceBackend);
const teacher = tinyModelDir('gqa_f32');
const student = tinyModelDir('mha_f32');
const work = mkdtempSync(join(tmpdir(), 'floe-distill-'));
const data = writeTrainData(work, 10);
let runs = 0;

function base(extra: Partial<DistillOptions> = {}): DistillOptions {
  const out = join(work, `run${runs++}`);
  return { teacher, student, data, out, backendImpl: be, lr: 1e-2, lora: { rank: 4, alpha: 8 }, maxSteps: 4, batchSize: 2, seed: 5, topK: 8, ...extra };
}

function trainMetrics(out: string): StepMetrics[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as StepMetrics).filter((m) => m.type === 'train');
}

describe('distill', () => {
  it('the teacher cache holds the inference path\'s top-k log-probabilities for every target token (f32 and f16)', async () => {
    const tok = (await loadTokenizer(teacher))!;
    const text = join(work, 'text.jsonl');
    writeFileSync(text, ['the cat sat on a mat.', 'and the dog ran there in the rain', 'a hat'].map((t) => JSON.stringify({ text: t })).join('\n') + '\n');
    const samples = loadSamples(text, tok, null, { maxSeqLen: 64 }).samples;
    const k = 8;
    const opened = await openModel(teacher, { backend: 'reference' });
    for (const dt of ['f32', 'f16'] as const) {
      const file = join(work, `cache-${dt}`);
      const h = await buildTeacherCache({ teacher, samples, data: text, out: file, topK: k, temperature: 1, logpDtype: dt, backend: be });
      const cache = new TeacherCache(file);
      assert.equal(statSync(file).size, h.offsets.end);
      assert.ok(statSync(file).size - h.offsets.ids >= h.rows * bytesPerToken(k, dt) && statSync(file).size - h.offsets.ids < h.rows * bytesPerToken(k, dt) + 24);
      const b = packSamples(samples);
      const rowOf = new Int32Array(b.tokens.length);
      cache.rowsOf(samples, b, rowOf);
      const lp = new Float32Array(k);
      let checked = 0;
      samples.forEach((s, i) => {
        const res = generate(opened.model, Array.from(s.tokens), { maxTokens: 0, promptLogprobs: k, sampling: { temperature: 0 }, kvDtype: 'f32' });
        for (let j = 0; j + 1 < s.tokens.length; j++) {
          const r = rowOf[b.segStart[i]! + j]!;
          assert.ok(r >= 0);
          const want = res.promptLogprobs![j + 1]!.top;
          cache.logpRow(r, lp);
          let mass = 0;
          for (let q = 0; q < k; q++) {
            assert.equal(cache.ids[r * k + q], want[q]![0], `sample ${i} token ${j} rank ${q}`);
            assert.ok(Math.abs(lp[q]! - want[q]![1]) < (dt === 'f16' ? 4e-3 : 1e-4), `${dt} logp ${lp[q]} vs ${want[q]![1]}`);
            mass += Math.exp(want[q]![1]);
          }
          assert.ok(Math.abs(Math.exp(cache.rest[r]!) - (1 - mass)) < 1e-4, `rest mass ${Math.exp(cache.rest[r]!)} vs ${1 - mass}`);
          checked++;
        }
      });
      assert.equal(checked, h.rows);
      // a changed sample is refused, naming its line
      const changed = samples.map((s, i) => (i === 1 ? { ...s, tokens: s.tokens.map((t, j) => (j === 2 ? (t + 1) % 256 : t)) } : s));
      assert.throws(() => cache.rowsOf(changed, b, rowOf), /line 2 of the data is not in the teacher cache/);
    }
    opened.loaded.dispose();
  });

  it('KD part is 0 when the student is the teacher; kd-ratio 0 gives plain finetune\'s losses', async () => {
    const self = await distill(base({ student: teacher, kdRatio: 1, full: true, cacheDtype: 'f32', maxSteps: 1 }));
    const m = trainMetrics(self.output.replace(/final$/, ''))[0]!;
    assert.ok(m.kd !== undefined && Math.abs(m.kd) < 1e-5, `kd ${m.kd}`);
    assert.equal(m.loss, m.kd);
    assert.ok(m.grad_norm < 1e-4, `grad norm ${m.grad_norm}: no gradient from KD at the teacher`);
    const o = base({ kdRatio: 0 });
    await distill(o);
    const plain = join(work, `run${runs++}`);
    const { teacher: _t, student: s, kdRatio: _r, topK: _k, ...rest } = o;
    await finetune({ ...rest, model: s, out: plain });
    assert.deepEqual(trainMetrics(o.out).map((x) => x.loss), trainMetrics(plain).map((x) => x.loss));
    assert.deepEqual(trainMetrics(o.out).map((x) => x.ce), trainMetrics(plain).map((x) => x.loss));
  });

  for (const loss of ['forward-kl', 'reverse-kl', 'jsd'] as const) {
    it(`${loss}: training on the KD part lowers it; metrics carry ce and kd; the cache is reused`, async () => {
      const o = base({ loss, kdRatio: 1, full: true, lr: 3e-3, maxSteps: 8, batchSize: 10, shuffle: false, teacherCache: join(work, 'shared-cache') });
      const s = await distill(o);
      const ms = trainMetrics(o.out);
      assert.equal(ms.length, 8);
      for (const x of ms) { assert.equal(typeof x.ce, 'number'); assert.equal(typeof x.kd, 'number'); }
      assert.ok(ms[7]!.kd! < 0.7 * ms[0]!.kd!, `kd fell: ${ms.map((x) => x.kd!.toFixed(4))}`);
      assert.equal(s.teacherCache.built, loss === 'forward-kl', 'the first run builds the cache, the others reuse it');
      assert.equal(s.teacherCache.bytesPerToken, 8 * 6 + 4);
    });
  }

  it('resume continues exactly (KD part included); a resume with another loss is refused', async () => {
    const a = base({ maxSteps: 6, saveSteps: 3, kdRatio: 0.7, temperature: 1.5 });
    await distill(a);
    const ck = join(a.out, 'checkpoint-000003');
    assert.ok(existsSync(ck));
    const b = base({ maxSteps: 6, saveSteps: 3, kdRatio: 0.7, temperature: 1.5, resume: ck, teacherCache: `${a.out}.teacher-cache` });
    const steps: StepMetrics[] = [];
    await distill({ ...b, onStep: (m) => steps.push(m) });
    const want = trainMetrics(a.out).filter((m) => m.step > 3);
    assert.deepEqual(steps.map((m) => m.step), [4, 5, 6]);
    assert.deepEqual(steps.map((m) => [m.loss, m.ce, m.kd]), want.map((m) => [m.loss, m.ce, m.kd]));
    await assert.rejects(distill({ ...b, out: join(work, `run${runs++}`), kdRatio: 0.5 }), /trained with --kd-ratio 0\.7, this run has --kd-ratio 0\.5: /);
    await assert.rejects(distill({ ...b, out: join(work, `run${runs++}`), temperature: 2 }), /holds top-8 at temperature 1.5 .*this run asks top-8 at 2 /);
  });

  it('the native backend gives the reference backend\'s ce and kd parts', async (t) => {
    const native = loadNativeBackend();
    if (!native) { t.skip('native addon not built'); return; }
    const cache = join(work, 'native-cache');
    const r = base({ maxSteps: 2, full: true, teacherCache: cache, cacheDtype: 'f32' });
    await distill(r);
    const n = base({ maxSteps: 2, full: true, teacherCache: cache, backendImpl: asTrain(native) });
    const s = await distill(n);
    assert.equal(s.teacherCache.built, false);
    const [mr, mn] = [trainMetrics(r.out), trainMetrics(n.out)];
    assert.equal(native.name, 'native');
    for (let i = 0; i < 2; i++) {
      for (const k of ['ce', 'kd'] as const) assert.ok(Math.abs(mn[i]![k]! - mr[i]![k]!) < 1e-3 * mr[i]![k]!, `step ${i + 1} ${k}: native ${mn[i]![k]} vs reference ${mr[i]![k]}`);
    }
  });

  it('a student with another tokenizer is refused', async () => {
    const other = tinyModelDir('mha_f32');
    const tj = JSON.parse(readFileSync(join(other, 'tokenizer.json'), 'utf8')) as { added_tokens: { content: string }[] };
    tj.added_tokens[0]!.content = '<|other|>';
    writeFileSync(join(other, 'tokenizer.json'), JSON.stringify(tj));
    await assert.rejects(distill(base({ student: other })), /must share the tokenizer: .*tokenizer.json and .*tokenizer.json differ/);
    const big = tinyModelDir('mha_f32');
    const cfg = JSON.parse(readFileSync(join(big, 'config.json'), 'utf8')) as { vocab_size: number };
    cfg.vocab_size = 300;
    writeFileSync(join(big, 'config.json'), JSON.stringify(cfg));
    copyFileSync(join(teacher, 'tokenizer.json'), join(big, 'tokenizer.json'));
    await assert.rejects(distill(base({ student: big })), /vocab size 256 .* vs 300/);
  });
});
