// On-policy distillation (GKD): the student's own samples, scored by the teacher in memory. λ = 1 gradients on the
// samples the student wrote equal an independent computation (teacher cache built from those samples + the cached KD
// loss); the student samples from its live weights (LoRA and full); metrics record which micro-batches were on-policy;
// resume draws the same batches; λ = 0 is the cached path bit for bit.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { referenceBackend } from '../../src/backend/reference.js';
import { loadModel } from '../../src/formats/load.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { loadChatTemplate } from '../../src/formats/chat-template.js';
import { generate } from '../../src/model/generate.js';
import { LlamaTrainModel } from '../../src/model/llama-train.js';
import { initLora } from '../../src/model/lora.js';
import { loadSamples, packSamples, type Sample } from '../../src/train/data.js';
import { distill, type DistillOptions } from '../../src/train/distill.js';
import { Rng } from '../../src/train/rng.js';
import { buildTeacherCache, CachedKdLoss, TeacherCache } from '../../src/train/teacher-cache.js';
import type { StepMetrics } from '../../src/train/trainer.js';
import { asTrain, tinyModelDir, writeTrainData } from './fixtures.js';

const be = asTrain(referenceBackend);
const teacher = tinyModelDir('gqa_f32');
const student = tinyModelDir('mha_f32');
const work = mkdtempSync(join(tmpdir(), 'floe-gkd-'));
const data = writeTrainData(work, 10);
let runs = 0;

function base(extra: Partial<DistillOptions> = {}): DistillOptions {
  const out = join(work, `run${runs++}`);
  return { teacher, student, data, out, backendImpl: be, lr: 1e-2, lora: { rank: 4, alpha: 8 }, maxSteps: 4, batchSize: 2, seed: 5, topK: 8, ...extra };
}

function trainMetrics(out: string): StepMetrics[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as StepMetrics).filter((m) => m.type === 'train');
}

async function fullParams(dir: string): Promise<Map<string, Float32Array>> {
  const l = await loadModel(dir);
  const m = LlamaTrainModel.fromTensors(l.config, l.tensors, be, { adapter: null, full: true, checkpointActivations: false }, l.ropeFreqFactors);
  return new Map(m.params.map((p) => [p.name, p.value]));
}

describe('on-policy distillation', () => {
  it('λ = 1: the gradient on the samples the student wrote equals the cached KD loss on a cache built from them', async () => {
    const seed = new Rng(Date.now() >>> 0).int(1 << 30);
    const kdRatio = 0.6, temperature = 1.5, topK = 8;
    const written: { line: number; prompt: readonly number[]; output: readonly number[] }[] = [];
    // SGD at lr 1 without clipping: the update is the gradient
    const o = base({ full: true, optimizer: 'sgd', lr: 1, maxGradNorm: 0, maxSteps: 1, batchSize: 3, shuffle: false, seed, onPolicy: 1, kdRatio, temperature, topK,
      sampleTemperature: 1.3, onSample: (s) => written.push(s) });
    const sum = await distill(o);
    assert.deepEqual(sum.onPolicy && { batches: sum.onPolicy.batches, lambda: sum.onPolicy.lambda }, { batches: 1, lambda: 1 });
    assert.equal(sum.teacherCache.file, null, 'λ = 1 makes no teacher cache');
    assert.equal(written.length, 3);
    assert.equal(sum.onPolicy!.generatedTokens, written.reduce((a, w) => a + w.output.length, 0));
    assert.deepEqual(trainMetrics(o.out)[0]!.on_policy, [true]);

    // the prompts are the data's, the continuations the student's (not the data's completions)
    const tok = (await loadTokenizer(student))!;
    const orig = loadSamples(data, tok, await loadChatTemplate(student), { maxSeqLen: 2048 }).samples;
    let differs = 0;
    written.forEach((w, i) => {
      const s = orig[i]!;
      assert.equal(w.line, s.line);
      const p = s.mask.indexOf(1, 1);
      assert.deepEqual(w.prompt, Array.from(s.tokens.subarray(0, p)));
      assert.ok(w.output.length >= 1 && w.output.length <= s.tokens.length - p);
      if (w.output.join() !== Array.from(s.tokens.subarray(p, p + w.output.length)).join()) differs++;
    });
    assert.ok(differs >= 1, 'the student wrote its own tokens');

    // independent: teacher cache (f32) from exactly those samples, the cached KD loss, one forward/backward of the initial student
    const samples: Sample[] = written.map((w) => {
      const tokens = Int32Array.from([...w.prompt, ...w.output]);
      const mask = new Uint8Array(tokens.length).fill(1, w.prompt.length);
      return { tokens, mask, line: w.line };
    });
    const cacheFile = join(work, `gkd-cache-${runs}`);
    await buildTeacherCache({ teacher, samples, data: 'on-policy samples', out: cacheFile, topK, temperature, logpDtype: 'f32', backend: be });
    const kd = new CachedKdLoss(new TeacherCache(cacheFile), kdRatio, { kind: 'forward-kl', beta: 0.5, temperature });
    const l = await loadModel(student);
    const model = LlamaTrainModel.fromTensors(l.config, l.tensors, be, { adapter: null, full: true, checkpointActivations: false }, l.ropeFreqFactors);
    const b = packSamples(samples);
    kd.setBatch(samples, b);
    const counted = b.targets.reduce((a, t) => a + (t >= 0 ? 1 : 0), 0);
    model.zeroGrad();
    const r = model.forwardBackward(b, 1 / counted, { ceWeight: 0, chunk: kd.chunk.bind(kd) });
    const m = trainMetrics(o.out)[0]!;
    assert.ok(Math.abs(m.kd! - r.extraSum / counted) < 1e-6 * Math.abs(m.kd!) + 1e-9, `kd ${m.kd} vs ${r.extraSum / counted}`);
    assert.ok(Math.abs(m.loss - (kdRatio * r.extraSum) / counted) < 1e-6 * m.loss, 'the loss is the KD part alone');
    const [before, after] = [await fullParams(student), await fullParams(sum.output)];
    let checked = 0, maxErr = 0, maxGrad = 0;
    for (const p of model.params) {
      const x0 = before.get(p.name)!, x1 = after.get(p.name)!;
      for (let i = 0; i < p.grad.length; i++) {
        const got = x0[i]! - x1[i]!;
        maxErr = Math.max(maxErr, Math.abs(got - p.grad[i]!) - 1e-4 * Math.abs(p.grad[i]!));
        maxGrad = Math.max(maxGrad, Math.abs(p.grad[i]!));
        checked++;
      }
    }
    assert.ok(checked > 10000 && maxGrad > 1e-3, `${checked} values, largest gradient ${maxGrad}`);
    assert.ok(maxErr < 2e-6, `on-policy update vs independent gradient: max error ${maxErr} (largest gradient ${maxGrad})`);
  });

  it('the student samples from its live weights: the inference view follows LoRA and full updates', async () => {
    const l = await loadModel(student);
    const rng = new Rng(Date.now() >>> 0);
    const tokens = Array.from({ length: 12 }, () => 3 + rng.int(200));
    for (const full of [false, true]) {
      const adapter = full ? null : initLora(l.config, { rank: 4, alpha: 8, targets: ['q', 'v', 'gate', 'down'], rslora: false, dropout: 0 }, () => rng.next());
      const m = LlamaTrainModel.fromTensors(l.config, l.tensors, be, { adapter, full, checkpointActivations: false }, l.ropeFreqFactors);
      const view = m.inferenceModel();
      for (const p of m.params) for (let i = 0; i < p.value.length; i++) p.value[i]! += 0.05 * (rng.next() - 0.5); // after the view was made
      const g = generate(view, tokens, { maxTokens: 1, promptLogprobs: 0, kvDtype: 'f32' });
      const viaView = g.promptLogprobs!.slice(1).reduce((a, e) => a + e!.logprob, 0);
      const b = packSamples([{ tokens: Int32Array.from(tokens), mask: new Uint8Array(tokens.length).fill(1, 1), line: 1 }]);
      const ce = m.evalLoss(b).lossSum;
      assert.ok(Math.abs(viaView + ce) < 1e-3, `${full ? 'full' : 'LoRA'}: view log-likelihood ${viaView} vs train model CE ${ce}`);
    }
  });

  it('λ = 0.5: metrics record the on-policy micro-batches; a resume draws the same ones and continues exactly', async () => {
    const opts = { onPolicy: 0.5, gradAccum: 2, maxSteps: 6, saveSteps: 3, kdRatio: 0.7, sampleTemperature: 0.9, maxNewTokens: 4, loss: 'jsd' as const, beta: 0.3 };
    const a = base(opts);
    const sa = await distill(a);
    const ma = trainMetrics(a.out);
    const flags = ma.flatMap((m) => m.on_policy!);
    assert.equal(flags.length, 12);
    assert.ok(flags.includes(true) && flags.includes(false), `flags ${flags}`);
    assert.equal(sa.onPolicy!.batches, flags.filter(Boolean).length);
    assert.ok(sa.teacherCache.built && sa.teacherCache.rows > 0, 'off-policy batches read the cache');
    const b = base({ ...opts, resume: join(a.out, 'checkpoint-000003'), teacherCache: `${a.out}.teacher-cache` });
    const steps: StepMetrics[] = [];
    const sb = await distill({ ...b, onStep: (m) => steps.push(m) });
    assert.equal(sb.teacherCache.built, false);
    const want = ma.filter((m) => m.step > 3);
    assert.deepEqual(steps.map((m) => [m.step, m.on_policy, m.loss, m.ce, m.kd]), want.map((m) => [m.step, m.on_policy, m.loss, m.ce, m.kd]));
    await assert.rejects(distill({ ...b, out: join(work, `run${runs++}`), onPolicy: 0.25 }), /trained with --on-policy 0\.5, this run has --on-policy 0\.25: /);
  });

  it('λ = 0 is the cached-teacher path bit for bit; bad on-policy options are refused', async () => {
    const a = base({ maxSteps: 2 });
    const b = base({ maxSteps: 2, onPolicy: 0, teacherCache: `${a.out}.teacher-cache` });
    await distill(a);
    const sb = await distill(b);
    assert.equal(sb.onPolicy, undefined);
    assert.deepEqual(trainMetrics(b.out).map((m) => [m.loss, m.ce, m.kd, m.grad_norm, 'on_policy' in m]), trainMetrics(a.out).map((m) => [m.loss, m.ce, m.kd, m.grad_norm, false]));
    await assert.rejects(distill(base({ onPolicy: 1.5 })), /on-policy λ must be in \[0, 1\], got 1.5/);
    await assert.rejects(distill(base({ sampleTemperature: 0.5 })), /apply to on-policy distillation/);
    await assert.rejects(distill(base({ onPolicy: 1, maxNewTokens: 0 })), /max new tokens must be an integer >= 1, got 0/);
    await assert.rejects(distill(base({ onPolicy: 1, teacherCache: join(work, 'unused-cache') })), /λ = 1 .* a teacher cache is not used/);
  });
});
