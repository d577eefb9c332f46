// Trainer end to end on a tiny model: reproducible losses, learning, metrics, checkpoints (keep K, save-initial),
// exact resume, eval, full fine-tuning output that loads back.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { referenceBackend } from '../../src/backend/reference.js';
import { loadModel } from '../../src/formats/load.js';
import { readPeftAdapter } from '../../src/model/adapter.js';
import { hfToGguf } from '../../src/formats/gguf-writer.js';
import { finetune, type FinetuneOptions, type StepMetrics } from '../../src/train/trainer.js';
import { asTrain, tinyModelDir, writeTrainData } from './fixtures.js';

const be = asTrain(referenceBackend);
const model = tinyModelDir();
const work = mkdtempSync(join(tmpdir(), 'floe-trainer-'));
const data = writeTrainData(work, 12);
let runs = 0;

function base(extra: Partial<FinetuneOptions> = {}): FinetuneOptions {
  return { model, data, out: join(work, `run${runs++}`), backendImpl: be, lr: 1e-2, lora: { rank: 4, alpha: 8 }, maxSteps: 6, batchSize: 2, seed: 11, ...extra };
}

function metrics(out: string): Record<string, number | string>[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number | string>);
}

describe('finetune', () => {
  it('same seed gives the same losses; the loss goes down; metrics and summary are written', async () => {
    const a = base({ maxSteps: 8, warmupSteps: 2 });
    const s = await finetune(a);
    const b = await finetune({ ...a, out: join(work, `run${runs++}`) });
    const la = metrics(a.out).filter((m) => m.type === 'train');
    const lb = metrics(b.output.replace(/final$/, '')).filter((m) => m.type === 'train');
    assert.equal(la.length, 8);
    assert.deepEqual(la.map((m) => m.loss), lb.map((m) => m.loss));
    for (const m of la) for (const k of ['step', 'loss', 'lr', 'tokens', 'grad_norm']) assert.equal(typeof m[k], 'number', k);
    assert.equal(la[0]!.lr, 0, 'warmup starts at 0 (HF LambdaLR)');
    assert.ok((la[7]!.loss as number) < (la[0]!.loss as number) - 0.5, `loss fell: ${la.map((m) => (m.loss as number).toFixed(3))}`);
    assert.equal(s.steps, 8);
    assert.ok(s.peakRssBytes > 0);
    assert.equal(s.trainableParams, 2 * 4 * (128 + 96 + 96 + 128 + 160 + 160 + 160), "r·(N + C) per adapted linear, 7 per layer, 2 layers");
    const ad = readPeftAdapter(s.output, (await loadModel(model)).config);
    assert.equal(ad.config.rank, 4);
    assert.ok(existsSync(join(a.out, 'summary.json')));
  });

  it('alpha defaults to 2 × rank at any rank, as on the CLI; the PEFT adapter records it', async () => {
    for (const rank of [3, 8]) {
      const o = base({ maxSteps: 1, lora: { rank } });
      const s = await finetune(o);
      const cfg = JSON.parse(readFileSync(join(s.output, 'adapter_config.json'), 'utf8')) as { r: number; lora_alpha: number };
      assert.deepEqual([cfg.r, cfg.lora_alpha], [rank, 2 * rank]);
    }
  });

  it('different seeds give different losses', async () => {
    const a = base({ maxSteps: 2, seed: 1 });
    const b = base({ maxSteps: 2, seed: 2 });
    await finetune(a);
    await finetune(b);
    assert.notDeepEqual(metrics(a.out).map((m) => m.loss), metrics(b.out).map((m) => m.loss));
  });

  it('resume from a checkpoint continues the loss curve exactly (weights, optimizer, schedule, data position)', async () => {
    const a = base({ maxSteps: 6, saveSteps: 3, gradAccum: 2, lora: { rank: 4, alpha: 8, dropout: 0.1 } });
    await finetune(a);
    const ck = join(a.out, 'checkpoint-000003');
    assert.ok(existsSync(ck));
    const b = base({ maxSteps: 6, saveSteps: 3, gradAccum: 2, lora: { rank: 4, alpha: 8, dropout: 0.1 }, resume: ck });
    const steps: StepMetrics[] = [];
    await finetune({ ...b, onStep: (m) => steps.push(m) });
    assert.deepEqual(steps.map((m) => m.step), [4, 5, 6]);
    const want = metrics(a.out).filter((m) => m.type === 'train' && (m.step as number) > 3);
    assert.deepEqual(steps.map((m) => m.loss), want.map((m) => m.loss));
    assert.deepEqual(steps.map((m) => m.lr), want.map((m) => m.lr));
    assert.deepEqual(steps.map((m) => m.grad_norm), want.map((m) => m.grad_norm));
  });

  it('resume with different batching is refused', async () => {
    const a = base({ maxSteps: 2 });
    await finetune(a);
    await assert.rejects(finetune(base({ maxSteps: 4, batchSize: 3, resume: a.out })), /trained with --batch-size 2, this run has --batch-size 3: resume with the flags the run was started with/);
  });

  it('resume with another optimizer or another (or edited) data file is refused, naming old and new', async () => {
    const a = base({ maxSteps: 2 });
    await finetune(a);
    await assert.rejects(finetune(base({ maxSteps: 4, optimizer: 'sgd', resume: a.out })), /trained with --optimizer adamw, this run has --optimizer sgd: /);
    const other = writeTrainData(mkdtempSync(join(work, 'other-')), 13);
    await assert.rejects(finetune(base({ maxSteps: 4, data: other, resume: a.out })), (e: Error) => {
      const size = (f: string) => readFileSync(f).length;
      assert.match(e.message, new RegExp(`trained on the data file ${data} \\(${size(data)} bytes, sha256 [0-9a-f]{12}\\), this run has ${other} \\(${size(other)} bytes`));
      return true;
    });
    // the same bytes in an edited file: one word changed, the length kept
    const edited = join(mkdtempSync(join(work, 'edited-')), 'train.jsonl');
    writeFileSync(edited, readFileSync(data, 'utf8').replace('cat', 'bat'));
    await assert.rejects(finetune(base({ maxSteps: 4, data: edited, resume: a.out })), /trained on the data file .*this run has .*edited-/);
    // the same content at another path resumes
    const copy = join(mkdtempSync(join(work, 'copy-')), 'train.jsonl');
    writeFileSync(copy, readFileSync(data));
    assert.equal((await finetune(base({ maxSteps: 3, data: copy, resume: a.out }))).steps, 3);
  });

  it('a checkpoint written before the optimizer and data were recorded still resumes', async () => {
    const a = base({ maxSteps: 2 });
    await finetune(a);
    const state = join(a.out, 'checkpoint-000002', 'trainer_state.json');
    const j = JSON.parse(readFileSync(state, 'utf8'));
    assert.equal(j.options.optimizer, 'adamw');
    assert.equal(typeof j.options.data.sha256, 'string');
    delete j.options.optimizer;
    delete j.options.data;
    writeFileSync(state, JSON.stringify(j));
    const other = writeTrainData(mkdtempSync(join(work, 'old-')), 12, 'renamed.jsonl');
    assert.equal((await finetune(base({ maxSteps: 3, data: other, resume: a.out }))).steps, 3);
  });

  it('keeps the last K checkpoints; --save-initial saves the untrained adapter (B = 0)', async () => {
    const a = base({ maxSteps: 5, saveSteps: 1, saveTotalLimit: 2, saveInitial: true });
    const s = await finetune(a);
    assert.deepEqual(readdirSync(a.out).filter((n) => n.startsWith('checkpoint-')).sort(), ['checkpoint-000004', 'checkpoint-000005']);
    assert.equal(s.checkpoints.length, 2);
    const b = base({ maxSteps: 2, saveInitial: true, saveTotalLimit: 0 });
    await finetune(b);
    const cfg = (await loadModel(model)).config;
    const init = readPeftAdapter(join(b.out, 'checkpoint-000000'), cfg);
    for (const lay of init.layers) for (const lin of Object.values(lay)) {
      assert.ok(lin!.b.every((x) => x === 0));
      assert.ok(lin!.a.some((x) => x !== 0));
    }
  });

  it('epochs with eval split: eval lines with loss and perplexity; full fine-tuning writes an HF dir that loads', async () => {
    const a = base({ maxSteps: undefined, epochs: 2, evalSplit: 0.25, evalSteps: 2, full: true, lr: 1e-3, batchSize: 3 });
    const s = await finetune(a);
    // 9 training samples, batch 3 -> 3 steps per epoch
    assert.equal(s.steps, 6);
    const ev = metrics(a.out).filter((m) => m.type === 'eval');
    assert.deepEqual(ev.map((m) => m.step), [0, 2, 4, 6]);
    for (const m of ev) assert.ok(Math.abs((m.eval_ppl as number) - Math.exp(m.eval_loss as number)) < 1e-9 * (m.eval_ppl as number));
    assert.ok(s.eval!.eval_loss < s.initialEval!.eval_loss);
    const m = await loadModel(s.output);
    assert.equal(m.tensors.get('model.layers.0.self_attn.q_proj.weight')!.dtype, 'f32');
    assert.ok(existsSync(join(s.output, 'tokenizer.json')));
  });

  it('a GGUF base renders {messages} data with its tokenizer.chat_template, as the HF dir it came from', async () => {
    const gguf = join(work, 'tiny.gguf');
    await hfToGguf(await loadModel(model), gguf, 'f32'); // tokenizer.json and the chat template beside it go into the file
    const chat = join(work, 'chat.jsonl');
    writeFileSync(chat, [0, 1, 2, 3].map((i) => JSON.stringify({ messages: [{ role: 'user', content: `q ${i}` }, { role: 'assistant', content: `a ${i}` }] })).join('\n') + '\n');
    const hf = metrics((await finetune(base({ data: chat, maxSteps: 2 }))).output.replace(/final$/, '')).filter((m) => m.type === 'train');
    const fromGguf = metrics((await finetune({ ...base({ data: chat, maxSteps: 2 }), model: gguf })).output.replace(/final$/, '')).filter((m) => m.type === 'train');
    assert.deepEqual(fromGguf.map((m) => m.target_tokens), hf.map((m) => m.target_tokens), 'the same assistant tokens carry the loss');
    fromGguf.forEach((m, i) => assert.ok(Math.abs((m.loss as number) - (hf[i]!.loss as number)) < 1e-4, `step ${i + 1}: loss ${m.loss} vs ${hf[i]!.loss}`));
  });
});
