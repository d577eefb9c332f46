// "Synthetic data pays": from-documents QA pairs made by floe-brown from held-out Brown documents, split by question
// (question 0 of each passage to train, question 1 held out); LoRA fine-tuning on them vs on as many pairs from other
// held-out documents (control: the same format, other facts). The measure is the held-out answers' loss (mean nats per
// answer token, given the question alone, no passage) before and after each.
//
// usage: node --import tsx scripts/synth-pays.ts [--docs N] [--steps N] [--threads N] [--out DIR] [--json]

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEngine } from '../src/engine/client.js';
import { DocumentChunker } from '../src/platform/synth/chunk.js';
import { DEFAULT_LIMITS } from '../src/platform/synth/filters.js';
import { EngineLlm } from '../src/platform/synth/llm.js';
import { fromDocumentsUnits } from '../src/platform/synth/methods.js';
import { runSynth } from '../src/platform/synth/pipeline.js';
import { PromptSet } from '../src/platform/synth/prompts.js';
import { loadTextTools } from '../src/serve/server.js';
import { loadBrown } from '../src/train/corpus.js';
import { finetune } from '../src/train/trainer.js';
import { packageRoot } from '../src/model/builtin.js';

const ROOT = packageRoot();
const MODEL = join(ROOT, 'models/floe-brown');
const arg = (name: string, dflt: string) => { const i = process.argv.indexOf(`--${name}`); return i >= 0 ? process.argv[i + 1]! : dflt; };
const nDocs = Number(arg('docs', '4'));
const steps = Number(arg('steps', '150'));
const threads = Number(arg('threads', '2'));
const out = arg('out', join(tmpdir(), `synth-pays-${Date.now()}`));
mkdirSync(out, { recursive: true });
const log = (s: string) => process.stderr.write(s + '\n');

// held-out documents of floe-brown's pre-training split (splitBrown: every 20th file, offset 10)
const heldOut = loadBrown().filter((_, i) => i % 20 === 10).map((d) => ({ name: d.id, text: d.paragraphs.map((p) => p.join(' ')).join('\n\n') }));
const target = heldOut.slice(0, nDocs);
const control = heldOut.slice(nDocs, 2 * nDocs);

const [engine, tools] = await Promise.all([startEngine({ model: MODEL, modelId: 'floe-brown', threads, maxNumSeqs: 16 }), loadTextTools(MODEL)]);
const llm = new EngineLlm(engine, tools.tokenizer!, tools.template, 'floe-brown');
const chunker = new DocumentChunker({ maxTokens: 96, countTokens: (t) => tools.tokenizer!.encode(t, { addSpecialTokens: false }).length });
const make = async (name: string, docs: typeof target, perPassage: number) => {
  const file = join(out, `${name}.jsonl`);
  const s = await runSynth({
    method: 'from-documents', units: fromDocumentsUnits(docs, chunker, perPassage, 1, { minSupport: null, minGain: null }), llm, prompts: new PromptSet([join(ROOT, 'data/synth')]), out: file,
    format: 'messages', limits: DEFAULT_LIMITS, dedupThreshold: 0.7, window: 32, gen: { maxTokens: 96, temperature: 0.7, topP: 0.9 }, params: { name },
  });
  log(`${name}: ${s.kept} pairs of ${s.units} units (${JSON.stringify(s.rejected)}) in ${s.seconds.toFixed(0)} s`);
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { provenance: { id: string } });
};
const targetPairs = await make('target', target, 2);
const controlPairs = await make('control', control, 1);
await engine.shutdown(0);

const write = (name: string, rows: object[]) => { const f = join(out, `${name}.jsonl`); writeFileSync(f, rows.map((r) => JSON.stringify(r) + '\n').join('')); return f; };
const trainT = targetPairs.filter((p) => p.provenance.id.endsWith('/0'));
const evalT = targetPairs.filter((p) => p.provenance.id.endsWith('/1'));
const n = Math.min(trainT.length, controlPairs.length);
const files = { train: write('train-target', trainT.slice(0, n)), control: write('train-control', controlPairs.slice(0, n)), eval: write('eval-target', evalT) };
log(`train ${n} pairs (target) vs ${n} (control); ${evalT.length} held-out questions`);

const run = (name: string, data: string) => finetune({ model: MODEL, data, eval: files.eval, out: join(out, name), maxSteps: steps, lr: 1e-3, seed: 1, threads, overwrite: true, lora: { rank: 16 } });
const a = await run('ft-target', files.train);
const b = await run('ft-control', files.control);
const result = {
  docs: nDocs, steps, train_pairs: n, eval_pairs: evalT.length,
  base_answer_loss: a.initialEval?.eval_loss, after_target_qa: a.eval?.eval_loss, after_control_qa: b.eval?.eval_loss,
  eval_tokens: a.eval?.eval_tokens, out,
};
process.stdout.write(JSON.stringify(result, null, 2) + '\n');
