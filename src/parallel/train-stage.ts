// Pipeline-parallel LoRA fine-tuning: one stage per rank, a step's micro-batches on a 1F1B schedule, activations sent
// forward and their gradients backward over a Transport; per-stage checkpoints; rank 0 writes the metrics and
// assembles the one PEFT adapter. Equal to `finetune` with --grad-accum M (the same micro-batches, the same order).
//
// T tokens of a micro-batch, D hidden, M micro-batches per step, P stages.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { selectBackend } from '../backend/select.js';
import { tokenizerFromGguf } from '../formats/gguf-tokenizer.js';
import { loadModel } from '../formats/load.js';
import { peftKey, PEFT_WEIGHTS, writePeftAdapter } from '../formats/peft.js';
import { loadTokenizer, type Tokenizer } from '../formats/tokenizer.js';
import type { LayerRange } from '../model/llama.js';
import { LlamaTrainModel, type PackedBatch } from '../model/llama-train.js';
import { LORA_TARGETS, type LoraAdapter } from '../model/lora.js';
import { listCheckpoints, loadCheckpoint, prepareOutDir, removeStaleTemps, resetMetrics, restoreInto, writeFinal, RunSetupError, saveCheckpoint, STATE_FILE, type TrainerState } from '../train/checkpoint.js';
import { DataLoader, loadSamples } from '../train/data.js';
import { Optimizer } from '../train/optimizer.js';
import { mix32 } from '../train/rng.js';
import { learningRate } from '../train/schedule.js';
import { asTrainBackend, baseFingerprint, baseWeights, checkBaseDtype, checkResumeOptions, dataFingerprint, initAdapter, loraConfigOf, nonFiniteLoss, planSteps, recordedBatch, trainingTemplate, type FinetuneOptions, type FinetuneSummary, type StepMetrics } from '../train/trainer.js';
import { oneFOneB, slotsNeeded } from './1f1b.js';
import { stagePlan } from './stage-model.js';
import { formatStages } from './stages.js';
import type { Transport } from './transport.js';

export interface PipelineFinetuneOptions extends FinetuneOptions {
  /** --pipeline-stages 0-2,3-5 (default: balanced, the head on the last stage). */
  readonly stages?: string;
  /** Micro-batches per optimizer step (the trainer's grad-accum micro-batches; default --grad-accum, else P). */
  readonly microBatches?: number;
}

export const TAG_ACT = 0x7a1; // stage s -> s+1: the output (T, D) of a micro-batch, in micro-batch order
export const TAG_GRAD = 0x7a2; // stage s+1 -> s: ∂loss/∂ that output (T, D)
export const TAG_ADAPTER = 0x7a3; // stage -> rank 0: its LoRA tensors (names, then values)
export const TAG_NORM = 0x7a4; // stage s -> s+1: the f64 sum of squared gradients over stages 0..s, once per step

/** `dir/stage-K`: stage K's checkpoints inside an output dir. */
export function stageDir(dir: string, stage: number): string {
  return path.join(dir, `stage-${stage}`);
}

/** The pipeline stages a checkpoint was trained with (its trainer state's options; 1: a one-process run). */
function recordedStages(dir: string): number {
  try {
    const st = JSON.parse(fs.readFileSync(path.join(dir, STATE_FILE), 'utf8')) as { options?: { pipeline?: { size?: number } } };
    return st.options?.pipeline?.size ?? 1;
  } catch {
    return 0; // unreadable: loadCheckpoint says why
  }
}

/** Why `dir` cannot resume this job (its stage count matched): a one-process run, or a stage without a checkpoint. */
function resumeLayoutError(dir: string, rank: number, newest: number): RunSetupError {
  const stages = (fs.existsSync(dir) ? fs.readdirSync(dir) : []).filter((n) => /^stage-\d+$/.test(n)).length;
  if (stages === 0 && listCheckpoints(dir).length > 0) {
    return new RunSetupError(`${dir} holds a one-process run's checkpoints (checkpoint-*), not per-stage ones: resume it without --pipeline-parallel-size`);
  }
  return new RunSetupError(newest < 0
    ? `${dir}: stage ${rank} has no complete checkpoint to resume from (looked for ${stageDir(dir, rank)}/checkpoint-*)`
    : `${dir}: stage ${rank} has checkpoints, another stage has none to resume from (looked for stage-K/checkpoint-*)`);
}

/** The options a pipeline run cannot take (checked on every rank before the job starts, and again by finetunePipeline). */
export function checkPipelineFinetune(o: PipelineFinetuneOptions): void {
  const no = (cond: unknown, what: string) => { if (cond) throw new RunSetupError(`pipeline-parallel fine-tuning does not support ${what} yet`); };
  no(o.full, '--full (it trains LoRA adapters on a frozen base)');
  no(o.offload, '--weights-memory / --offload-ratio');
  no(o.objective, 'objectives other than the language-model loss (--objective contrastive, distill)');
  no(o.eval !== undefined || o.evalSplit !== undefined, '--eval / --eval-split');
  checkBaseDtype(o);
  for (const [v, name, min] of [[o.epochs, 'epochs', 1], [o.maxSteps, 'max steps', 1], [o.gradAccum, 'grad accum', 1], [o.microBatches, 'micro-batches', 1],
    [o.maxSeqLen, 'max seq len', 2], [o.saveSteps, 'save steps', 1], [o.warmupSteps, 'warmup steps', 0], [o.saveTotalLimit, 'save total limit', 0]] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new RangeError(`${name} must be an integer >= ${min}, got ${v}`);
  }
  if (o.epochs !== undefined && o.maxSteps !== undefined) throw new RunSetupError('give either epochs or max steps, not both');
  if (o.microBatches !== undefined && o.gradAccum !== undefined && o.microBatches !== o.gradAccum) {
    throw new RunSetupError(`--micro-batches ${o.microBatches} and --grad-accum ${o.gradAccum} disagree: in a pipeline run the step's micro-batches are its gradient-accumulation micro-batches`);
  }
}

const f32 = (m: Uint8Array): Float32Array => m.byteOffset % 4 === 0 ? new Float32Array(m.buffer, m.byteOffset, m.byteLength >> 2) : new Float32Array(m.slice().buffer);
const bytes = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** This rank's stage of `mpirun -np P floe finetune --pipeline-parallel-size P`; every rank returns the same summary. */
export async function finetunePipeline(o: PipelineFinetuneOptions, tr: Transport): Promise<FinetuneSummary> {
  const t0 = performance.now();
  const { rank, size: P } = tr;
  const first = rank === 0, last = rank === P - 1;
  const log = o.log ?? (o.progress && first ? (s: string) => process.stderr.write(s + '\n') : () => {});
  checkPipelineFinetune(o);
  const dtype = checkBaseDtype(o);
  const seed = (o.seed ?? 0) >>> 0;
  const M = o.microBatches ?? o.gradAccum ?? P;
  const lr = o.lr ?? 2e-4;
  if (!(lr > 0)) throw new RangeError(`learning rate must be > 0, got ${lr}`);
  if (first) prepareOutDir(o.out, o);
  await tr.barrier(); // the output dir is ready (or rank 0 failed and aborts the job)

  // this stage's layers only (converted with --dtype, as one process converts them); embedding, norm and head stay
  // memory-mapped views, converted (bf16) only on the first stage (the embedding) and the last (norm and head): a
  // middle stage never reads them
  let stages: LayerRange[] | null = null;
  const LAYER = /^model\.layers\.(\d+)\./;
  const loaded = await loadModel(o.model, {
    dtype: dtype ?? undefined,
    convertIf: (name) => first || last || LAYER.test(name),
    keep: (name, cfg) => {
      stages ??= stagePlan(cfg, P, o.stages, 'last');
      const m = LAYER.exec(name);
      return !m || (Number(m[1]) >= stages[rank]!.start && Number(m[1]) < stages[rank]!.end);
    },
  });
  const cfg = loaded.config;
  stages ??= stagePlan(cfg, P, o.stages, 'last');
  const range = stages[rank]!;
  const base = baseWeights(loaded.tensors, range.start, dtype);
  let tok: Tokenizer | null;
  if (loaded.format === 'gguf') tok = loaded.ggufMetadata ? tokenizerFromGguf(loaded.ggufMetadata) : null;
  else tok = await loadTokenizer(o.model);
  if (!tok) throw new Error(`${o.model}: no tokenizer (tokenizer.json), which training data needs`);
  const template = await trainingTemplate(loaded); // a GGUF's tokenizer.chat_template too, as finetune() reads it
  const maxSeqLen = o.maxSeqLen ?? Math.min(2048, cfg.maxPositionEmbeddings);
  if (maxSeqLen > cfg.maxPositionEmbeddings) throw new RangeError(`max seq len ${maxSeqLen} exceeds the model's context ${cfg.maxPositionEmbeddings}`);

  // every rank reads the data and batches it alike: positions and sample bounds are needed on every stage
  const train = loadSamples(o.data, tok, template, { maxSeqLen, trainOnPrompt: o.trainOnPrompt });
  const samples = train.samples;
  const batchSize = o.batchSize ?? 1;
  log(`data: ${samples.length} training samples; ${P} stages ${formatStages(stages)}, ${M} micro-batches per step (1F1B)`);
  const loader = new DataLoader(samples, { batchSize: o.batchTokens === undefined ? batchSize : undefined, batchTokens: o.batchTokens, shuffle: o.shuffle ?? true, seed });
  const { totalMicro, totalSteps, sched } = planSteps(o, loader, M, lr);

  // the whole adapter is initialised as one process does (same RNG stream); this stage trains its layers' factors
  const backend = o.backendImpl ?? asTrainBackend(selectBackend(o.backend, o.threads));
  const loraCfg = loraConfigOf(o);
  const adapter: LoraAdapter = initAdapter(cfg, loraCfg, seed);
  const mine: LoraAdapter = { config: loraCfg, layers: adapter.layers.map((x, i) => (i >= range.start && i < range.end ? x : {})) };
  const model = LlamaTrainModel.fromTensors(cfg, loaded.tensors, backend, { adapter, full: false, checkpointActivations: !!o.checkpointActivations },
    loaded.ropeFreqFactors, range);
  const opt = new Optimizer(model.params, { name: o.optimizer ?? 'adamw', betas: [0.9, 0.999], eps: 1e-8, weightDecay: o.weightDecay ?? 0, momentum: 0 }, model.backend);
  const runOptions = { full: false, lora: loraCfg, dtype, lr, gradAccum: M, maxSeqLen, ...recordedBatch(o, 1),
    totalSteps, warmupSteps: sched.warmupSteps, decay: sched.decay, optimizer: opt.cfg.name, weightDecay: opt.cfg.weightDecay, seed, shuffle: o.shuffle ?? true,
    objective: null, pipeline: { size: P, stage: rank, stages: formatStages(stages) }, data: dataFingerprint(o.data), base: baseFingerprint(o.model) };

  // resume: the newest step that every stage has a complete checkpoint of
  const myDir = stageDir(o.out, rank);
  let step = 0, tokensSeen = 0, elapsedBefore = 0;
  if (o.resume !== undefined) {
    const from = stageDir(o.resume, rank);
    removeStaleTemps(from);
    const newestCk = listCheckpoints(from).at(-1);
    const newest = newestCk?.step ?? -1;
    // the stage count the run was trained with, from the checkpoints' own records (a stage dir may be on another host)
    const recorded = newestCk ? recordedStages(newestCk.dir) : 0;
    const [trained] = await tr.allreduce(Float64Array.of(recorded), 'max');
    if (trained! > 0 && trained !== P) {
      throw new RunSetupError(`${o.resume} holds a run of ${trained} pipeline stages, this job has ${P}: resume it with ` +
        `\`mpirun -np ${trained} floe finetune --pipeline-parallel-size ${trained} ...\` and the flags it was started with`);
    }
    const [common] = await tr.allreduce(Float64Array.of(newest), 'min');
    if (common! < 0) throw resumeLayoutError(o.resume, rank, newest);
    const dir = listCheckpoints(from).find((c) => c.step === common)?.dir;
    if (!dir) throw new Error(`${from}: no checkpoint of step ${common}, the newest step every stage saved (saved: ${listCheckpoints(from).map((c) => c.step).join(', ')})`);
    const ck = loadCheckpoint(dir);
    checkResumeOptions(ck.dir, { ...ck.state.options, ...recordedBatch(ck.state.options, 1) }, runOptions,
      ['full', 'lora', 'dtype', 'gradAccum', 'maxSeqLen', 'batchSize', 'batchTokens', 'seed', 'shuffle', 'pipeline', 'optimizer', 'data', 'base'], { gradAccum: '--micro-batches' });
    restoreInto(ck, model.params, opt);
    loader.restore(ck.state.data);
    step = ck.state.step;
    tokensSeen = ck.state.tokens;
    elapsedBefore = ck.state.elapsedS;
    log(`resumed from ${o.resume} (every stage) at step ${step}`);
  }
  removeStaleTemps(myDir);
  const metricsPath = path.join(o.out, 'metrics.jsonl');
  if (first) {
    removeStaleTemps(o.out); // a final/ write that was killed
    resetMetrics(metricsPath, o.resume !== undefined ? step : null);
  }
  const save = () => {
    const state: TrainerState = {
      format: 'floe-trainer-state-1', step, data: loader.position(), seed, tokens: tokensSeen,
      elapsedS: elapsedBefore + (performance.now() - t0) / 1000, optimizerStep: opt.step, kind: 'lora', weightsFile: PEFT_WEIGHTS, options: runOptions,
    };
    saveCheckpoint(myDir, state, opt, (dir) => writePeftAdapter(dir, mine, path.resolve(o.model)), o.saveTotalLimit ?? 3);
  };
  if (o.saveInitial && step === 0) save();

  // training loop
  const nSlots = slotsNeeded(rank, P, M);
  const sentX: Promise<void>[] = new Array(nSlots).fill(Promise.resolve()); // a slot's output may be overwritten once sent
  const sentDx: Promise<void>[] = new Array(nSlots).fill(Promise.resolve());
  const tLoop = performance.now();
  const startStep = step;
  const logEvery = Math.max(1, Math.round((totalSteps - step) / 20)); // a line per 5% of the run
  let loopTokens = 0;
  let lastLoss: number | null = null;
  while (step < totalSteps) {
    const nMicro = Math.min(M, totalMicro - step * M);
    const micro: { batch: PackedBatch; epoch: number }[] = [];
    for (let i = 0; i < nMicro; i++) micro.push(loader.next());
    const counted = micro.reduce((a, m) => a + m.batch.targets.reduce((c, t) => c + (t >= 0 ? 1 : 0), 0), 0);
    const tokens = micro.reduce((a, m) => a + m.batch.tokens.length, 0);
    model.zeroGrad();
    let lossSum = 0;
    // receives are posted up to two ahead of need, so the MPI thread lands a message while this stage computes;
    // they match in posting order, which is micro-batch order on both tags
    const acts: Promise<Uint8Array>[] = [], grads: Promise<Uint8Array>[] = [];
    let actsPosted = first ? nMicro : 0, gradsPosted = last ? nMicro : 0;
    const post = () => {
      for (; actsPosted < nMicro && acts.length < 2; actsPosted++) acts.push(tr.recv(rank - 1, TAG_ACT));
      for (; gradsPosted < nMicro && grads.length < 2; gradsPosted++) grads.push(tr.recv(rank + 1, TAG_GRAD));
    };
    for (const op of oneFOneB(rank, P, nMicro)) {
      post();
      const { batch } = micro[op.micro]!;
      const slot = op.micro % nSlots;
      model.dropoutKey = mix32(seed, step, op.micro, 0xd0); // as one process: a backward's recompute reuses the masks
      if (op.kind === 'F') {
        const xIn = first ? null : f32(await acts.shift()!);
        await sentX[slot];
        const out = model.stageForward(slot, batch, xIn);
        if (!last) sentX[slot] = tr.send(rank + 1, TAG_ACT, bytes(out));
      } else {
        const dOut = last ? null : f32(await grads.shift()!);
        await sentDx[slot];
        const r = model.stageBackward(slot, batch, dOut, 1 / counted);
        if (r.loss) lossSum += r.loss.lossSum;
        if (!first) sentDx[slot] = tr.send(rank - 1, TAG_GRAD, bytes(r.dx));
      }
    }
    await Promise.all([...sentX, ...sentDx]);
    // global gradient norm and the loss, which only the last stage has. The sum of squares continues from the previous
    // stage's partial sum, so it adds in gradNorm's order over the same params: the norm, the clipping and so every
    // later step are bit-identical to one process (a sum of per-stage sums is not). The allreduce adds only zeros to
    // the last stage's values: exact.
    let ss = first ? 0 : new DataView((await tr.recv(rank - 1, TAG_NORM)).slice().buffer).getFloat64(0, true);
    for (const p of model.params) for (let j = 0; j < p.grad.length; j++) ss += p.grad[j]! * p.grad[j]!;
    if (!last) {
      const msg = new Uint8Array(8);
      new DataView(msg.buffer).setFloat64(0, ss, true);
      await tr.send(rank + 1, TAG_NORM, msg);
    }
    const [ssAll, lossAll] = await tr.allreduce(Float64Array.of(last ? ss : 0, lossSum), 'sum');
    const gradNorm = Math.sqrt(ssAll!);
    const maxNorm = o.maxGradNorm ?? 1;
    if (maxNorm > 0 && Number.isFinite(gradNorm)) {
      const k = maxNorm / (gradNorm + 1e-6);
      if (k < 1) for (const p of model.params) for (let j = 0; j < p.grad.length; j++) p.grad[j]! *= k;
    }
    const lrNow = learningRate(sched, step);
    opt.update(lrNow);
    step++;
    tokensSeen += tokens;
    loopTokens += tokens;
    lastLoss = lossAll! / counted;
    const elapsed = (performance.now() - tLoop) / 1000;
    const m: StepMetrics = {
      type: 'train', step, epoch: micro[micro.length - 1]!.epoch, loss: lastLoss, lr: lrNow, tokens, target_tokens: counted,
      total_tokens: tokensSeen, grad_norm: gradNorm, tok_s: loopTokens / Math.max(elapsed, 1e-9), elapsed_s: elapsedBefore + (performance.now() - t0) / 1000,
      base_dtype: base.linear,
    };
    if (first) fs.appendFileSync(metricsPath, JSON.stringify(m) + '\n');
    o.onStep?.(m);
    if (step % logEvery === 0 || step === totalSteps) log(`step ${step}/${totalSteps} loss ${lastLoss.toFixed(4)} lr ${lrNow.toExponential(2)} ${m.tok_s.toFixed(0)} tok/s`);
    if (!Number.isFinite(lastLoss)) throw nonFiniteLoss(lastLoss, step, o.model);
    if (o.saveSteps && step % o.saveSteps === 0 && step < totalSteps) save();
  }
  if (listCheckpoints(myDir).at(-1)?.step !== step) save();

  // rank 0 gathers every stage's factors into the one adapter (global layer indices) and writes OUT/final
  const final = path.join(o.out, 'final');
  if (!first) {
    const names = model.params.map((p) => p.name);
    const all = new Float32Array(model.params.reduce((a, p) => a + p.value.length, 0));
    let at = 0;
    for (const p of model.params) { all.set(p.value, at); at += p.value.length; }
    await tr.send(0, TAG_ADAPTER, new TextEncoder().encode(JSON.stringify(names)));
    await tr.send(0, TAG_ADAPTER, bytes(all));
  } else {
    const byName = new Map<string, Float32Array>();
    adapter.layers.forEach((lay, li) => {
      for (const t of LORA_TARGETS) {
        const lin = lay[t];
        if (lin) { byName.set(peftKey(li, t, 'A'), lin.a); byName.set(peftKey(li, t, 'B'), lin.b); }
      }
    });
    for (let r = 1; r < P; r++) {
      const names = JSON.parse(new TextDecoder().decode(await tr.recv(r, TAG_ADAPTER))) as string[];
      const values = f32(await tr.recv(r, TAG_ADAPTER));
      let at = 0;
      for (const n of names) {
        const dst = byName.get(n);
        if (!dst) throw new Error(`stage ${r} sent an adapter tensor "${n}" this run does not have`);
        if (at + dst.length > values.length) throw new Error(`stage ${r} sent ${values.length} adapter values, fewer than its tensors need`);
        dst.set(values.subarray(at, at + dst.length));
        at += dst.length;
      }
      if (at !== values.length) throw new Error(`stage ${r} sent ${values.length} adapter values, its tensors hold ${at}`);
    }
    writeFinal(o.out, (dir) => writePeftAdapter(dir, adapter, path.resolve(o.model)));
  }
  const seconds = (performance.now() - tLoop) / 1000;
  const [trainable] = await tr.allreduce(Float64Array.of(model.params.reduce((a, p) => a + p.value.length, 0)), 'sum');
  const summary: FinetuneSummary = {
    steps: step, startStep, finalLoss: lastLoss, eval: null, initialEval: null, tokens: tokensSeen, seconds,
    tokensPerSecond: loopTokens / Math.max(seconds, 1e-9), trainableParams: trainable!,
    peakRssBytes: process.resourceUsage().maxRSS * 1024, activationBytes: model.activationBytes, output: final,
    checkpoints: listCheckpoints(myDir).map((c) => c.dir), base,
  };
  if (first) fs.writeFileSync(path.join(o.out, 'summary.json'), JSON.stringify(summary, null, 1) + '\n');
  await tr.barrier(); // OUT/final is complete before any rank reports
  loaded.dispose();
  return summary;
}
