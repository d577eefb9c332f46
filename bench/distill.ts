// Does distillation pay? A 2-layer hidden-128 student (floe-brown-draft's shape) trained twice from the same init on the
// same Brown tokens with the same budget: CE only (`finetune --full`) vs distilled from models/floe-brown (`distill --full`).
// Reports held-out perplexity of both (and of the teacher) through the inference path, and the teacher cache's cost.
//
// usage: node --import tsx bench/distill.ts [--quick] [--steps N] [--train-lines N] [--threads 1] [--kd-ratio 0.9]
//          [--temperature 1] [--top-k 64] [--loss forward-kl] [--heldout-tokens N] [--keep-cache] [--out FILE]
//          [--on-policy λ [--sample-temperature 1]]   (GKD: a share λ of the distilled run's batches are the student's samples)
// Needs data/brown (node --import tsx scripts/make-default-model.ts corpora). Work files: bench/.cache/distill/.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { openModel } from '../src/model/open.js';
import { distill } from '../src/train/distill.js';
import { writeInitModel } from '../src/train/init-model.js';
import { heldOutLoss } from '../src/train/perplexity.js';
import { finetune } from '../src/train/trainer.js';
import type { KdLossKind } from '../src/train/kd-loss.js';
import { machineInfo, machineLine } from './machine.js';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH);
const TEACHER = path.join(ROOT, 'models', 'floe-brown');
const BROWN = path.join(ROOT, 'data', 'brown');
const WORK = path.join(BENCH, '.cache', 'distill');

const { values: a } = parseArgs({
  options: {
    quick: { type: 'boolean' }, steps: { type: 'string' }, 'train-lines': { type: 'string' }, threads: { type: 'string' },
    'kd-ratio': { type: 'string' }, temperature: { type: 'string' }, 'top-k': { type: 'string' }, loss: { type: 'string' },
    'heldout-tokens': { type: 'string' }, 'keep-cache': { type: 'boolean' }, out: { type: 'string' },
    'on-policy': { type: 'string' }, 'sample-temperature': { type: 'string' },
  },
});
const quick = !!a.quick;
// full: ~2.5M tokens per student run (a few minutes at 1 thread on a quiet core); quick: ~0.25M
const steps = Number(a.steps ?? (quick ? 60 : 600));
const trainLines = Number(a['train-lines'] ?? (quick ? 1500 : 0)); // 0 = all of data/brown/train.jsonl
const threads = Number(a.threads ?? 1);
const kdRatio = Number(a['kd-ratio'] ?? 0.9); // 0.5 gave x0.88 of the CE-only perplexity at 200 steps, 0.9 gave x0.67
const temperature = Number(a.temperature ?? 1); // T = 2 gave x0.99: softened targets do not serve T = 1 perplexity here
const topK = Number(a['top-k'] ?? 64);
const loss = (a.loss ?? 'forward-kl') as KdLossKind;
const heldoutTokens = Number(a['heldout-tokens'] ?? (quick ? 20000 : Infinity));
const onPolicy = Number(a['on-policy'] ?? 0);
const sampleTemperature = a['sample-temperature'] === undefined ? undefined : Number(a['sample-temperature']);
const mode = quick ? 'quick' : 'full';

/** The student: floe-brown-draft's architecture (scripts/make-draft-model.ts on the draft branch), ~0.9M parameters. */
const STUDENT_ARCH = { vocabSize: 4096, hiddenSize: 128, intermediateSize: 352, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositionEmbeddings: 1024, ropeTheta: 10000 };
/** Both runs: the draft model's pre-training settings (full fine-tuning of a random init). */
const TRAIN = { full: true, lr: 3e-3, warmupSteps: Math.min(50, Math.floor(steps / 10)), decay: 'cosine' as const, batchTokens: 4096, maxSeqLen: 256,
  weightDecay: 0.1, maxGradNorm: 1, seed: 0, backend: 'native' as const, threads, progress: true, overwrite: true, maxSteps: steps };


const texts = (file: string) => fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => (JSON.parse(l) as { text: string }).text);

async function perplexity(dir: string): Promise<{ loss: number; perplexity: number; tokens: number }> {
  const m = await openModel(dir, { threads });
  const r = heldOutLoss(m.model, m.tokenizer!, texts(path.join(BROWN, 'heldout.jsonl')), { maxSeqLen: 256, maxTokens: heldoutTokens, kvDtype: 'f32' });
  m.loaded.dispose();
  return { loss: r.loss, perplexity: r.perplexity, tokens: r.tokens };
}

async function main(): Promise<void> {
  if (!fs.existsSync(path.join(BROWN, 'train.jsonl'))) throw new Error(`${BROWN}/train.jsonl is missing: run 'node --import tsx scripts/make-default-model.ts corpora' first`);
  const c = machineInfo();
  process.stderr.write(`machine: ${machineLine(c)}; ${threads} thread(s)\n`);
  fs.mkdirSync(WORK, { recursive: true });
  const data = path.join(WORK, `train-${mode}.jsonl`);
  const lines = fs.readFileSync(path.join(BROWN, 'train.jsonl'), 'utf8').split('\n').filter((l) => l.trim());
  fs.writeFileSync(data, (trainLines > 0 ? lines.slice(0, trainLines) : lines).join('\n') + '\n');
  const tj = JSON.parse(fs.readFileSync(path.join(TEACHER, 'tokenizer.json'), 'utf8')) as { added_tokens: { id: number; content: string }[] };
  const idOf = (t: string) => tj.added_tokens.find((x) => x.content === t)!.id;
  const init = path.join(WORK, 'init');
  writeInitModel(init, { ...STUDENT_ARCH, tieWordEmbeddings: true, seed: 0, initStd: 0.02, bosTokenId: idOf('<|begin_of_text|>'), eosTokenIds: [idOf('<|end_of_text|>'), idOf('<|eot_id|>')] }, TEACHER);

  const t0 = performance.now();
  const ce = await finetune({ ...TRAIN, model: init, data, out: path.join(WORK, `ce-${mode}`) });
  const ceSeconds = (performance.now() - t0) / 1000;
  const cache = path.join(WORK, `teacher-${mode}-k${topK}-T${temperature}.cache`);
  if (!a['keep-cache']) fs.rmSync(cache, { force: true }); // time the teacher pass (--keep-cache: reuse the last one's, its time is reported)
  const t1 = performance.now();
  const kd = await distill({ ...TRAIN, teacher: TEACHER, student: init, data, out: path.join(WORK, `kd-${mode}`), teacherCache: cache, kdRatio, temperature, topK, loss,
    ...(onPolicy > 0 ? { onPolicy, sampleTemperature } : {}) });
  const kdSeconds = (performance.now() - t1) / 1000 - (kd.teacherCache.built ? kd.teacherCache.seconds : 0);

  const [pCe, pKd, pTeacher] = [await perplexity(ce.output), await perplexity(kd.output), await perplexity(TEACHER)];
  const result = {
    bench: 'distill', mode, date: new Date().toISOString(), cpu: c, threads, loadavg: os.loadavg(),
    note: 'taken while other jobs ran on the machine unless the load average says otherwise: times are distorted, perplexities are not',
    command: `node --import tsx bench/distill.ts ${process.argv.slice(2).join(' ')}`.trim(),
    budget: { steps, batchTokens: TRAIN.batchTokens, trainTokens: ce.tokens, trainLines: trainLines || lines.length },
    student: STUDENT_ARCH, distill: { kdRatio, temperature, topK, loss, onPolicy, sampleTemperature: sampleTemperature ?? null }, onPolicy: kd.onPolicy ?? null,
    heldout: { ce: pCe, distilled: pKd, teacher: pTeacher, ratio: pKd.perplexity / pCe.perplexity },
    teacherCache: { ...kd.teacherCache, reused: !kd.teacherCache.built, tokensPerSecond: kd.teacherCache.rows / kd.teacherCache.seconds },
    seconds: { ce: ceSeconds, distilled: kdSeconds, teacherPass: kd.teacherCache.seconds },
  };
  const out = a.out ?? path.join(BENCH, 'results', `distill-${mode}-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}.json`);
  fs.writeFileSync(out, JSON.stringify(result, null, 1) + '\n');
  process.stdout.write([
    `machine      ${machineLine(c)}, ${threads} thread(s), load at end ${os.loadavg()[0]!.toFixed(1)}`,
    `budget       ${steps} steps x ${TRAIN.batchTokens} tokens (${ce.tokens.toLocaleString('en-US')} tokens) per student run`,
    `held-out     CE only ppl ${pCe.perplexity.toFixed(2)} | distilled ppl ${pKd.perplexity.toFixed(2)} (x${result.heldout.ratio.toFixed(3)}) | teacher ppl ${pTeacher.perplexity.toFixed(2)} over ${pCe.tokens} tokens`,
    `teacher pass ${kd.teacherCache.rows.toLocaleString('en-US')} target tokens in ${kd.teacherCache.seconds.toFixed(1)} s, ${kd.teacherCache.bytesPerToken} bytes/token, ${(kd.teacherCache.bytes / 2 ** 20).toFixed(1)} MiB`,
    ...(kd.onPolicy ? [`on-policy    λ ${onPolicy}: ${kd.onPolicy.batches} micro-batches from the student, ${kd.onPolicy.generatedTokens} tokens sampled, ${kd.onPolicy.seconds.toFixed(1)} s sampling + teacher scoring`] : []),
    `train time   CE ${ceSeconds.toFixed(1)} s, distilled ${kdSeconds.toFixed(1)} s (after the teacher pass)`,
    `written      ${out}`,
  ].join('\n') + '\n');
}

await main();
