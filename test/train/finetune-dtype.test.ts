// finetune({ dtype }) on floe-brown (stored f32): LoRA on a frozen base converted while loading. The first step's loss
// (B = 0: the base's own) is the converted base's loss through the inference path (openModel + evalSamples, as
// `floe eval --dtype` scores it) and not the f32 base's; streamed layers, pipeline stages and distill's student convert
// the same way; a resume refuses another dtype; the adapter is an ordinary PEFT adapter that serves on the f32 base.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { referenceBackend } from '../../src/backend/reference.js';
import type { LoadDType } from '../../src/formats/load.js';
import { applyAdapter } from '../../src/model/adapter.js';
import { openModel } from '../../src/model/open.js';
import { finetunePipeline } from '../../src/parallel/train-stage.js';
import { localGroup } from '../../src/parallel/transport.js';
import { distill } from '../../src/train/distill.js';
import { evalSamples, readEvalSamples } from '../../src/train/eval.js';
import { finetune, trainingTemplate, type FinetuneOptions, type StepMetrics } from '../../src/train/trainer.js';
import { asTrain } from './fixtures.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown');
const be = asTrain(referenceBackend); // the oracle backend on both sides: the training and inference paths agree to ~1e-8
const work = mkdtempSync(join(tmpdir(), 'floe-ft-dtype-'));
const data = join(work, 'train.jsonl');
writeFileSync(data, [
  'The jury said the election was conducted well, and the city was pleased with the result of the vote.',
  'It was a long night on the river, and the men rowed on without a word until the lights of the town came up.',
  'She wrote that the committee would meet again in the spring to consider the new rules for the schools.',
  'He had not seen the house since the war, but the garden was as he remembered it, green and quiet.',
].map((text) => JSON.stringify({ text })).join('\n') + '\n');
const first = join(work, 'first.jsonl'); // the first sample alone: what step 1 trains on (no shuffle, batch 1)
writeFileSync(first, readFileSync(data, 'utf8').split('\n')[0] + '\n');
const MAX_SEQ = 64;
let runs = 0;

function opts(extra: Partial<FinetuneOptions> = {}): FinetuneOptions {
  return { model: MODEL, data, out: join(work, `run${runs++}`), backendImpl: be, lora: { rank: 2 }, maxSteps: 1, maxSeqLen: MAX_SEQ, shuffle: false, seed: 3, ...extra };
}

async function firstLoss(o: FinetuneOptions): Promise<{ loss: number; steps: StepMetrics[]; summary: Awaited<ReturnType<typeof finetune>> }> {
  const steps: StepMetrics[] = [];
  const summary = await finetune({ ...o, onStep: (m) => steps.push(m) });
  return { loss: steps[0]!.loss, steps, summary };
}

/** The loss of the first sample under the base loaded with `dtype`, through the inference path (`floe eval --dtype`). */
async function evalLoss(dtype: LoadDType | undefined, adapter?: string): Promise<number> {
  const o = await openModel(MODEL, { backend: 'reference', load: dtype ? { dtype } : undefined });
  try {
    const s = readEvalSamples(first, o.tokenizer!, await trainingTemplate(o.loaded), { maxSeqLen: MAX_SEQ });
    return evalSamples(adapter ? applyAdapter(o.model, adapter) : o.model, s.samples, { kvDtype: 'f32' }).loss;
  } finally {
    o.loaded.dispose();
  }
}

const TOL = 1e-6; // the paths agree to ~1e-8 on these 27 tokens; bf16 moves the loss by ~3e-4, fp8 by ~5e-3

describe('finetune --dtype: LoRA on a converted frozen base', () => {
  const asStored = evalLoss(undefined);
  // the one-step bf16 run (default options) that three tests compare with: trained once
  let bf16Run: ReturnType<typeof firstLoss> | null = null;
  const bf16 = () => (bf16Run ??= firstLoss(opts({ dtype: 'bf16' })));

  for (const dtype of ['bf16', 'fp8'] as const) {
    it(`${dtype}: the trainer holds the base converted, and step 1's loss is the converted base's (not the f32 base's)`, async () => {
      const { loss, steps, summary } = await (dtype === 'bf16' ? bf16() : firstLoss(opts({ dtype })));
      const [want, f32] = [await evalLoss(dtype), await asStored];
      assert.ok(Math.abs(f32 - want) > 100 * TOL, `the conversion moves the loss enough to tell (${f32} vs ${want})`);
      assert.ok(Math.abs(loss - want) < TOL, `step 1 loss ${loss} = the ${dtype} base's ${want} (f32 base: ${f32})`);
      const linear = dtype === 'bf16' ? 'bf16' : 'fp8_e4m3';
      assert.deepEqual(summary.base, { converted: dtype, linear, embedding: dtype === 'bf16' ? 'bf16' : 'f32', head: dtype === 'bf16' ? 'bf16' : 'f32' });
      assert.equal(steps[0]!.base_dtype, linear);
      const onDisk = JSON.parse(readFileSync(join(summary.output, '..', 'summary.json'), 'utf8')) as { base: unknown };
      assert.deepEqual(onDisk.base, summary.base);
      const line = JSON.parse(readFileSync(join(summary.output, '..', 'metrics.jsonl'), 'utf8').split('\n')[0]!) as { base_dtype: string };
      assert.equal(line.base_dtype, linear);
      const state = JSON.parse(readFileSync(join(summary.checkpoints.at(-1)!, 'trainer_state.json'), 'utf8')) as { options: { dtype: unknown } };
      assert.equal(state.options.dtype, dtype, 'the checkpoint records the base dtype');
    });
  }

  it('without dtype the base is trained as stored (f32), and the run records null', async () => {
    const { loss, summary } = await firstLoss(opts());
    assert.ok(Math.abs(loss - await asStored) < TOL);
    assert.deepEqual(summary.base, { converted: null, linear: 'f32', embedding: 'f32', head: 'f32' });
  });

  it('streamed layers (offloadRatio) convert the same way: the same step-1 loss as the resident bf16 base', async () => {
    const resident = await bf16();
    const streamed = await firstLoss(opts({ dtype: 'bf16', offload: { offloadRatio: 0.5, reader: 'sync' } }));
    assert.equal(streamed.loss, resident.loss);
    assert.equal(streamed.summary.base.linear, 'bf16');
    assert.ok(Math.abs(streamed.loss - await asStored) > 100 * TOL);
  });

  it('a resume with the recorded dtype continues the run exactly; another dtype, or none, is refused naming both', async () => {
    const a = opts({ dtype: 'bf16', maxSteps: 2, saveSteps: 1, saveTotalLimit: 0, lr: 1e-2 });
    const whole = await firstLoss(a);
    const ck1 = join(a.out, 'checkpoint-000001');
    const resumed = await firstLoss({ ...a, out: join(work, `run${runs++}`), resume: ck1 });
    assert.deepEqual(resumed.steps.map((m) => [m.step, m.loss]), [[2, whole.steps[1]!.loss]]);
    await assert.rejects(finetune({ ...a, dtype: 'fp8', out: join(work, `run${runs++}`), resume: ck1 }),
      /the checkpoint was trained with --dtype bf16, this run has --dtype fp8: resume with the flags/);
    await assert.rejects(finetune({ ...a, dtype: undefined, out: join(work, `run${runs++}`), resume: ck1 }),
      /the checkpoint was trained with --dtype bf16, this run has the base as stored \(no --dtype\)/);
    const plain = opts({ maxSteps: 1, saveSteps: 1 });
    await finetune(plain);
    await assert.rejects(finetune({ ...plain, dtype: 'bf16', out: join(work, `run${runs++}`), resume: join(plain.out, 'checkpoint-000001') }),
      /the checkpoint was trained with the base as stored \(no --dtype\), this run has --dtype bf16/);
  });

  it('refused before loading: dtype with full (f32 master copies), an unknown dtype', async () => {
    const missing = join(work, 'no-such-model');
    await assert.rejects(finetune(opts({ model: missing, full: true, dtype: 'bf16' })), (e: Error) => {
      assert.match(e.message, /--dtype bf16 converts the frozen base of a LoRA run; --full trains f32 master copies of every weight/);
      assert.doesNotMatch(e.message, /no-such-model/);
      return true;
    });
    await assert.rejects(finetune(opts({ model: missing, dtype: 'f16' as LoadDType })), /--dtype expects fp8 or bf16, got 'f16'/);
  });

  it('the adapter trained on a bf16 base is an ordinary PEFT adapter: it loads and serves on the f32 base', async () => {
    // 2 steps: the loss on the sample goes 3.11 -> 1.03 on both bases (8 steps: -> 0.04), 2.08 past the 0.05 asked, and
    // the bases differ by 2e-4 (the 0.01 asked); each step is ~0.7 s
    const { summary } = await firstLoss(opts({ dtype: 'bf16', data: first, maxSteps: 2, lr: 3e-2 }));
    const [base, onF32, onBf16] = [await asStored, await evalLoss(undefined, summary.output), await evalLoss('bf16', summary.output)];
    assert.ok(onF32 < base - 0.05, `the adapter learned the sample, on the f32 base too: ${base} -> ${onF32}`);
    assert.ok(Math.abs(onF32 - onBf16) < 0.01, `on the f32 base as on the bf16 one it was trained on: ${onF32} vs ${onBf16}`);
    const cfg = JSON.parse(readFileSync(join(summary.output, 'adapter_config.json'), 'utf8')) as { peft_type: string; base_model_name_or_path: string };
    assert.equal(cfg.peft_type, 'LORA');
  });

  it('pipeline stages load their layers converted: the same losses as one process with the same dtype', async () => {
    // samples cut to 12 tokens: the stages' losses are compared for equality, whatever the length, and bf16 still moves
    // them past 100 * TOL; the ~27-token samples made this the file's slowest test (~10 s, reference matmuls)
    const o = opts({ dtype: 'bf16', maxSteps: 2, batchSize: 1, lr: 1e-2, maxSeqLen: 12 });
    const one = await firstLoss({ ...o, gradAccum: 2 });
    const got: StepMetrics[][] = [[], []];
    const out = join(work, `run${runs++}`);
    const sums = await Promise.all(localGroup(2).map((tr) => finetunePipeline({ ...o, out, microBatches: 2, onStep: (m) => got[tr.rank]!.push(m) }, tr)));
    for (const g of got) assert.deepEqual(g.map((m) => m.loss), one.steps.map((m) => m.loss));
    assert.deepEqual(sums.map((s) => s.base.linear), ['bf16', 'bf16']);
    // three stages: the middle one converts its layers only (it never reads the embedding, norm or head)
    const got3: StepMetrics[][] = [[], [], []];
    const sums3 = await Promise.all(localGroup(3).map((tr) => finetunePipeline({ ...o, out: join(work, `run${runs++}`), microBatches: 2, onStep: (m) => got3[tr.rank]!.push(m) }, tr)));
    for (const g of got3) assert.deepEqual(g.map((m) => m.loss), one.steps.map((m) => m.loss));
    assert.deepEqual(sums3.map((s) => [s.base.linear, s.base.embedding]), [['bf16', 'bf16'], ['bf16', 'f32'], ['bf16', 'bf16']]);
    assert.ok(Math.abs(one.loss - (await firstLoss({ ...o, out: join(work, `run${runs++}`), dtype: undefined, gradAccum: 2, maxSteps: 1 })).loss) > 100 * TOL, 'and not the f32 base\'s');
  });

  it('distill trains its student on the converted base (the teacher as stored): kd ratio 0 gives finetune\'s bf16 loss', async () => {
    const out = join(work, `run${runs++}`);
    const s = await distill({ teacher: MODEL, student: MODEL, data, out, backendImpl: be, lora: { rank: 2 }, maxSteps: 1, maxSeqLen: MAX_SEQ, shuffle: false, seed: 3, dtype: 'bf16', kdRatio: 0, topK: 4 });
    const { loss } = await bf16();
    assert.equal(s.finalLoss, loss);
    assert.equal(s.base.linear, 'bf16');
  });
});
