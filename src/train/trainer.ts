// Trainer: `floe finetune` as a library call — data, LoRA or full fine-tuning, AdamW/SGD with clipping, grad
// accumulation and schedule, eval, checkpoints and exact resume, metrics.jsonl, progress, summary.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import type { Backend, TrainBackend, TrainKernels } from '../backend/backend.js';
import { selectBackend, type BackendName } from '../backend/select.js';
import { fileChunks } from '../formats/lines.js';
import { ChatTemplate, loadChatTemplate, selectChatTemplate } from '../formats/chat-template.js';
import { LOAD_DTYPES, loadModel, type LoadDType, type LoadedModel } from '../formats/load.js';
import { LayerStream, type OffloadOptions } from '../model/offload.js';
import { writePeftAdapter, PEFT_WEIGHTS } from '../formats/peft.js';
import { writeFileAtomic, writeSafetensors } from '../formats/safetensors.js';
import type { Tensor } from '../tensor/tensor.js';
import type { LlamaConfig } from '../formats/llama-config.js';
import { loadTokenizer, type Tokenizer } from '../formats/tokenizer.js';
import { tokenizerFromGguf } from '../formats/gguf-tokenizer.js';
import { readEmbeddingConfig } from '../model/embed.js';
import { LlamaTrainModel, type LogitsLoss, type PackedBatch } from '../model/llama-train.js';
import { DEFAULT_LORA, defaultLoraAlpha, initLora, type LoraAdapter, type LoraConfig } from '../model/lora.js';
import { listCheckpoints, loadCheckpoint, prepareOutDir, removeStaleTemps, resetMetrics, writeFinal, resolveCheckpoint, restoreInto, RunSetupError, saveCheckpoint, type TrainerState } from './checkpoint.js';
import type { PooledObjective } from './contrastive.js';
import { checkDataFile, DataLoader, loadSamples, splitValidation, type Sample } from './data.js';
import { writeHfModel, type SaveDType } from './export.js';
import { clipGradNorm, Optimizer, type OptimizerName } from './optimizer.js';
import { mix32, Rng } from './rng.js';
import { learningRate, type DecayKind, type ScheduleConfig } from './schedule.js';
import { checkOptions, describe, type OptionKeys } from '../tensor/options.js';
import { FINETUNE_FLAG_OPTIONS, withOptionNames } from './option-names.js';

export interface FinetuneOptions {
  readonly model: string; // HF dir or .gguf
  readonly data: string; // JSONL
  readonly out: string;
  readonly eval?: string; // JSONL, or
  readonly evalSplit?: number; // fraction of data held out
  readonly evalSteps?: number; // eval every N steps (default: at the end only)
  /** rank (default 8), alpha (default 2 × rank: 16 at rank 8), targets (default all seven), dropout (0), rslora (false) */
  readonly lora?: Partial<LoraConfig>;
  readonly full?: boolean;
  readonly epochs?: number; // default 1 unless maxSteps
  readonly maxSteps?: number;
  readonly lr?: number; // default 2e-4 (LoRA) / 1e-4 (full)
  readonly batchSize?: number;
  readonly batchTokens?: number;
  readonly gradAccum?: number;
  readonly maxSeqLen?: number; // default min(2048, model context); a pooled objective's: the base's embedding max tokens
  readonly checkpointActivations?: boolean;
  readonly offload?: OffloadOptions; // stream a share of the frozen base's layers from disk (LoRA only)
  /** Convert the frozen base while loading, as generate's --dtype (LoRA only): 'bf16' every f32 / f16 weight matrix,
   *  'fp8' the linear weights (E4M3, per-row scales); streamed layers on their way to the spill file. Default: as stored. */
  readonly dtype?: LoadDType;
  readonly optimizer?: OptimizerName;
  readonly weightDecay?: number;
  readonly warmupSteps?: number;
  readonly decay?: DecayKind;
  readonly minLrRatio?: number;
  readonly maxGradNorm?: number; // default 1; 0 = off
  readonly saveSteps?: number;
  readonly saveInitial?: boolean;
  readonly saveTotalLimit?: number; // keep the last K checkpoints (default 3)
  readonly shuffle?: boolean; // default true
  readonly resume?: string; // checkpoint dir or output dir
  readonly overwrite?: boolean; // clear a non-empty `out` (else refused unless resuming)
  readonly seed?: number;
  readonly trainOnPrompt?: boolean;
  readonly saveDtype?: SaveDType; // full fine-tuning output (default f32)
  readonly backend?: BackendName;
  readonly threads?: number;
  /** A backend object (tests); overrides `backend`. */
  readonly backendImpl?: TrainBackend;
  readonly progress?: boolean; // progress bar on stderr
  readonly onStep?: (m: StepMetrics) => void;
  readonly log?: (line: string) => void; // human-readable notes (default stderr when progress)
  /** A loss beside cross-entropy (distillation): the step loss becomes ceWeight · CE + weight · part; or one on pooled
   *  hidden states instead of it (contrastive), which reads its own data format and is also the eval loss. */
  readonly objective?: Objective | PooledObjective;
}

/** An extra training objective on the logits (see LogitsLoss); eval stays cross-entropy (perplexity). */
export interface Objective {
  readonly options: Readonly<Record<string, unknown>>; // recorded in checkpoints; a resume must match
  readonly ceWeight: number;
  readonly weight: number; // of its part in the reported loss
  /** The loss of one micro-batch (samples in packing order). */
  forBatch(samples: readonly Sample[], batch: PackedBatch): LogitsLoss;
  /** Called once with the model being trained (on-policy distillation samples from it). */
  bind?(student: LlamaTrainModel): void;
  /** Before a step's forward passes, per micro-batch: may replace it (on-policy distillation: the student's own
   *  continuations). `key` derives from (seed, step, micro-batch), so a resumed run makes the same choices. */
  prepare?(samples: readonly Sample[], batch: PackedBatch, key: number): PreparedBatch;
}

export interface PreparedBatch { readonly samples: readonly Sample[]; readonly batch: PackedBatch; readonly onPolicy: boolean }

export interface StepMetrics {
  readonly type: 'train';
  readonly step: number;
  readonly epoch: number;
  readonly loss: number;
  readonly ce?: number; // with an objective: the mean cross-entropy part
  readonly kd?: number; // and the objective's mean part (unweighted)
  readonly on_policy?: boolean[]; // with an objective that prepares batches: per micro-batch, whether it was the student's own samples
  readonly lr: number;
  readonly tokens: number; // tokens in this step's batches
  readonly target_tokens: number; // tokens with loss
  readonly total_tokens: number;
  readonly grad_norm: number;
  readonly tok_s: number;
  readonly elapsed_s: number;
  readonly base_dtype: string; // the frozen base's linear weights as trained on (BaseWeights.linear)
}

export interface EvalMetrics { readonly type: 'eval'; readonly step: number; readonly eval_loss: number; readonly eval_ppl: number; readonly eval_tokens: number }

/** The frozen base as the trainer holds it: the dtypes of the first (held) layer's q projection, the embedding and the
 *  head ('bf16' after --dtype bf16 on an f32 checkpoint, 'fp8_e4m3' after --dtype fp8), and the conversion asked for
 *  (null: as stored); as serve's /v1/floe/info engine.weights. */
export interface BaseWeights { readonly converted: LoadDType | null; readonly linear: string; readonly embedding: string; readonly head: string }

export function baseWeights(tensors: ReadonlyMap<string, Tensor>, firstLayer: number, converted: LoadDType | null): BaseWeights {
  const dtype = (name: string) => tensors.get(name)?.dtype ?? '?';
  const embedding = dtype('model.embed_tokens.weight');
  return { converted, linear: dtype(`model.layers.${firstLayer}.self_attn.q_proj.weight`), embedding, head: tensors.has('lm_head.weight') ? dtype('lm_head.weight') : embedding };
}

/**
 * The frozen base's dtype option, checked before anything loads: one of LOAD_DTYPES, and LoRA only (full fine-tuning
 * trains f32 master copies of every weight, made from the base as stored).
 */
export function checkBaseDtype(o: { readonly dtype?: unknown; readonly full?: boolean }): LoadDType | null {
  if (o.dtype === undefined) return null;
  if (!LOAD_DTYPES.includes(o.dtype as LoadDType)) throw new Error(`--dtype expects ${LOAD_DTYPES.join(' or ')}, got ${describe(o.dtype)}`);
  if (o.full) throw new Error(`--dtype ${String(o.dtype)} converts the frozen base of a LoRA run; --full trains f32 master copies of every weight, so there is no frozen base to convert: drop --dtype, or train an adapter (no --full)`);
  return o.dtype as LoadDType;
}

export interface FinetuneSummary {
  readonly steps: number;
  readonly startStep: number;
  readonly finalLoss: number | null;
  readonly eval: EvalMetrics | null;
  readonly initialEval: EvalMetrics | null;
  readonly tokens: number;
  readonly seconds: number;
  readonly tokensPerSecond: number;
  readonly trainableParams: number;
  readonly peakRssBytes: number;
  readonly activationBytes: number;
  readonly output: string; // OUT/final
  readonly checkpoints: string[];
  readonly base: BaseWeights; // the frozen base trained on (--dtype)
}

const TRAIN_KERNELS: readonly (keyof TrainKernels)[] = ['matmulBackwardInput', 'matmulBackwardWeight', 'rmsnormBackward', 'ropeBackward',
  'swigluBackward', 'attentionDense', 'attentionDenseBackward', 'embeddingBackward', 'crossEntropy'];

/**
 * Steps of a run: --max-steps, else the epochs' micro-batches over `perStep` micro-batches a step (gradient
 * accumulation; pipeline micro-batches), and the learning-rate schedule over them. Shared with the pipeline trainer so
 * that both count steps the same way.
 */
export function planSteps(o: FinetuneOptions, loader: DataLoader, perStep: number, lr: number): { totalMicro: number; totalSteps: number; sched: ScheduleConfig } {
  let totalMicro = Infinity;
  let totalSteps: number;
  if (o.maxSteps !== undefined) totalSteps = o.maxSteps;
  else {
    totalMicro = 0;
    for (let e = 0; e < (o.epochs ?? 1); e++) totalMicro += loader.microBatchesInEpoch(e);
    totalSteps = Math.ceil(totalMicro / perStep);
  }
  return { totalMicro, totalSteps, sched: { lr, warmupSteps: o.warmupSteps ?? 0, totalSteps, decay: o.decay ?? 'cosine', minLrRatio: o.minLrRatio ?? 0 } };
}

/**
 * Settings the model cannot take, refused before any work (distill: before its teacher pass): a sequence past its
 * context; a LoRA rank above its hidden size (every adapted linear has hidden-size rows or columns, so s·B·A has rank
 * <= hidden: a higher rank only adds factors and AdamW state; --lora-rank 100000 on floe-brown asked for ~45 GB).
 */
export function checkModelFits(model: string, cfg: Pick<LlamaConfig, 'maxPositionEmbeddings' | 'hiddenSize'>, maxSeqLen: number, o: Pick<FinetuneOptions, 'full' | 'lora'>): void {
  if (maxSeqLen > cfg.maxPositionEmbeddings) {
    throw new RunSetupError(`--max-seq-len ${maxSeqLen} exceeds the context of ${model} (${cfg.maxPositionEmbeddings} tokens); give at most ${cfg.maxPositionEmbeddings}`);
  }
  const rank = o.lora?.rank ?? DEFAULT_LORA.rank;
  if (!o.full && rank > cfg.hiddenSize) {
    throw new RunSetupError(`--lora-rank ${rank} is above the hidden size of ${model} (${cfg.hiddenSize}), the most rank an adapter of it can have; give at most ${cfg.hiddenSize}`);
  }
}

/** The run's LoRA options with the defaults filled in. */
export function loraConfigOf(o: FinetuneOptions): LoraConfig {
  const l = o.lora ?? {};
  const rank = l.rank ?? DEFAULT_LORA.rank;
  return {
    rank, alpha: l.alpha ?? defaultLoraAlpha(rank), targets: l.targets ?? DEFAULT_LORA.targets,
    rslora: l.rslora ?? DEFAULT_LORA.rslora, dropout: l.dropout ?? DEFAULT_LORA.dropout,
  };
}

/** A fresh adapter from the run's seed (its own RNG stream, so every stage of a pipeline draws the same factors). */
export function initAdapter(cfg: Parameters<typeof initLora>[0], lc: LoraConfig, seed: number): LoraAdapter {
  const r = new Rng(mix32(seed, 0x10a));
  return initLora(cfg, lc, () => r.next());
}

export function asTrainBackend(be: Backend): TrainBackend {
  const missing = TRAIN_KERNELS.filter((k) => typeof (be as Partial<TrainBackend>)[k] !== 'function');
  if (missing.length) throw new Error(`the ${be.name} backend has no training kernels (${missing.join(', ')}); try --backend reference`);
  return be as TrainBackend;
}

/** The training data in a checkpoint: a resume on another or an edited file is refused (its position would be meaningless). */
export interface DataFingerprint { readonly file: string; readonly bytes: number; readonly sha256: string }

export function dataFingerprint(file: string): DataFingerprint {
  // a chunk at a time: readFileSync stops at 2 GiB, and a data file may be larger
  const h = createHash('sha256');
  let bytes = 0;
  for (const c of fileChunks(file)) { h.update(c); bytes += c.length; }
  return { file, bytes, sha256: h.digest('hex') };
}

/**
 * The base model in a checkpoint: a resume on another base of the same shapes (another fine-tune of it, another size's
 * sibling) is refused, as its adapter or weights would go on training against weights they were not trained on.
 * Its weight files are sampled (sizes, 16 reads of 4 KiB each, config.json), not read whole: cheap on a large model,
 * and two different checkpoints differ in almost every block.
 */
export interface BaseFingerprint { readonly model: string; readonly sha256: string }

export function baseFingerprint(model: string): BaseFingerprint {
  const h = createHash('sha256');
  const isDir = fs.statSync(model).isDirectory();
  const files = isDir ? fs.readdirSync(model).filter((n) => n.endsWith('.safetensors') || n === 'config.json').sort().map((n) => path.join(model, n)) : [model];
  const buf = Buffer.alloc(4096);
  for (const f of files) {
    const size = fs.statSync(f).size;
    h.update(`${path.basename(f)}:${size}\n`);
    const fd = fs.openSync(f, 'r');
    try {
      for (let i = 0; i < 16; i++) {
        const at = Math.floor((i * Math.max(0, size - buf.length)) / 15);
        h.update(buf.subarray(0, fs.readSync(fd, buf, 0, buf.length, at)));
      }
    } finally { fs.closeSync(fd); }
  }
  return { model, sha256: h.digest('hex') };
}

/**
 * The batching a run records: the batch size it trains with (the default where --batch-size is left out), or null with
 * --batch-tokens. Checkpoints written before recorded null for a left-out --batch-size: read as the default, so that
 * `--batch-size 1` and no --batch-size resume each other.
 */
export function recordedBatch(o: { readonly batchSize?: unknown; readonly batchTokens?: unknown }, defaultBatch: number): { batchSize: number | null; batchTokens: number | null } {
  const batchTokens = typeof o.batchTokens === 'number' ? o.batchTokens : null;
  return { batchSize: batchTokens !== null ? null : typeof o.batchSize === 'number' ? o.batchSize : defaultBatch, batchTokens };
}

/** Checked on resume only where the checkpoint has them: checkpoints written before the check lack them. */
const NEWER_KEYS = new Set(['optimizer', 'data', 'base']);

/** The flag of a recorded option (a field of `lora`, `objective`, `pipeline` included) where it is not the kebab-case name. */
const FLAG_OF: Readonly<Record<string, string>> = {
  rank: '--lora-rank', alpha: '--lora-alpha', targets: '--lora-targets', dropout: '--lora-dropout', rslora: '--rslora', kind: '--objective',
  size: '--pipeline-parallel-size', stages: '--pipeline-stages',
};
/** Recorded settings that no flag sets (the library's options, or derived ones): shown by name. */
const NO_FLAG = new Set(['skipBos', 'symmetric', 'distill', 'stage']);

/** One recorded setting as the command line says it: `--seed 5`, `--no-shuffle`, `no --objective (…)`; never a bare null. */
function showSetting(k: string, v: unknown, o: Record<string, unknown>, labels: Readonly<Record<string, string>>): string {
  const flag = labels[k] ?? FLAG_OF[k] ?? `--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`;
  if (k === 'batchSize' || k === 'batchTokens') return o.batchTokens == null ? `--batch-size ${String(o.batchSize)}` : `--batch-tokens ${String(o.batchTokens)}`;
  if (k === 'shuffle') return v === false ? '--no-shuffle' : 'shuffled data (no --no-shuffle)';
  if (k === 'lora' && v === null) return 'no adapter (--full)';
  if (k === 'objective' && v === null) return 'the language-model loss (no --objective)';
  if (k === 'dtype' && v === null) return 'the base as stored (no --dtype)';
  if (NO_FLAG.has(k)) return `${k} ${JSON.stringify(v)}`;
  if (v === null || v === undefined || v === false) return `no ${flag}`;
  if (v === true) return flag;
  if (Array.isArray(v)) return `${flag} ${v.join(',')}`;
  if (typeof v === 'object') return Object.entries(v).map(([f, x]) => showSetting(f, x, v as Record<string, unknown>, labels)).join(' ');
  return `${flag} ${String(v)}`;
}

/** The recorded and the given value of setting `k` as flags; for an object setting (lora, objective), its differing fields only. */
function showDifference(k: string, was: Record<string, unknown>, now: Record<string, unknown>, labels: Readonly<Record<string, string>>): [string, string] {
  const [a, b] = [was[k], now[k]];
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a)) {
    const [ra, rb] = [a as Record<string, unknown>, b as Record<string, unknown>];
    const fields = [...new Set([...Object.keys(ra), ...Object.keys(rb)])].filter((f) => JSON.stringify(ra[f]) !== JSON.stringify(rb[f]));
    return [fields.map((f) => showSetting(f, ra[f] ?? null, ra, labels)).join(' '), fields.map((f) => showSetting(f, rb[f] ?? null, rb, labels)).join(' ')];
  }
  return [showSetting(k, a ?? null, was, labels), showSetting(k, b ?? null, now, labels)];
}

/**
 * Refuse a resume whose settings differ from the checkpoint's (a NEWER_KEYS entry only where the checkpoint has it),
 * naming the flag with the recorded value and the one given: a resume repeats the run's flags, as the README's
 * `--resume` example does (a flag left out takes its default). `labels` renames a setting's flag (pipeline runs).
 */
export function checkResumeOptions(dir: string, was: Record<string, unknown>, now: Record<string, unknown>, keys: readonly string[],
  labels: Readonly<Record<string, string>> = {}): void {
  for (const k of keys) {
    if (!(k in was) && NEWER_KEYS.has(k)) continue;
    if (k === 'data') {
      const [a, b] = [was.data as DataFingerprint, now.data as DataFingerprint];
      if (a.bytes !== b.bytes || a.sha256 !== b.sha256) {
        const show = (d: DataFingerprint) => `${d.file} (${d.bytes} bytes, sha256 ${d.sha256.slice(0, 12)})`;
        throw new RunSetupError(`${dir}: the checkpoint was trained on the data file ${show(a)}, this run has ${show(b)}: resume with the same data, or start a new run`);
      }
      continue;
    }
    if (k === 'base') {
      const [a, b] = [was.base as BaseFingerprint, now.base as BaseFingerprint];
      if (a.sha256 !== b.sha256) {
        throw new RunSetupError(`${dir}: the checkpoint was trained on the base model ${a.model}, this run has ${b.model}, whose weights differ: ` +
          'resume with the --model the run was started with, or start a new run');
      }
      continue;
    }
    if (JSON.stringify(was[k] ?? null) !== JSON.stringify(now[k] ?? null)) {
      const [a, b] = showDifference(k, was, now, labels);
      throw new RunSetupError(`${dir}: the checkpoint was trained with ${a}, this run has ${b}: resume with the flags the run was started with ` +
        '(a flag left out takes its default), or start a new run');
    }
  }
}

/**
 * The error a non-finite training loss stops a run with. At step 1 no update has been made (a fresh adapter's B is 0;
 * a full run's weights are as loaded), so the model as loaded gives it, not the learning rate: say so.
 */
export function nonFiniteLoss(loss: number, step: number, model: string): Error {
  if (step === 1) return new Error(`loss is ${loss} at step 1, before any update: ${model} as loaded gives non-finite outputs on this data (a NaN or Inf weight in the checkpoint?); the learning rate is not the cause`);
  return new Error(`loss became ${loss} at step ${step}: lower the learning rate`);
}

/** The chat template {messages} data is rendered with: an HF dir's, or a GGUF's tokenizer.chat_template (as serve uses). */
export async function trainingTemplate(loaded: LoadedModel): Promise<ChatTemplate | null> {
  if (loaded.format === 'hf') return loadChatTemplate(loaded.path);
  const origin = `${loaded.path} tokenizer.chat_template`;
  const source = selectChatTemplate(loaded.ggufMetadata?.get('tokenizer.chat_template') ?? null, {}, origin);
  return source === null ? null : new ChatTemplate(source, origin);
}

function positiveInt(v: number | undefined, name: string, min = 1): void {
  if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new RangeError(`${name} must be an integer >= ${min}, got ${v}`);
}

const FINETUNE_OPTIONS = {
  model: true, data: true, out: true, eval: true, evalSplit: true, evalSteps: true, lora: true, full: true, epochs: true, maxSteps: true, lr: true,
  batchSize: true, batchTokens: true, gradAccum: true, maxSeqLen: true, checkpointActivations: true, offload: true, dtype: true, optimizer: true, weightDecay: true,
  warmupSteps: true, decay: true, minLrRatio: true, maxGradNorm: true, saveSteps: true, saveInitial: true, saveTotalLimit: true, shuffle: true,
  resume: true, overwrite: true, seed: true, trainOnPrompt: true, saveDtype: true, backend: true, threads: true, backendImpl: true, progress: true,
  onStep: true, log: true, objective: true,
} as const satisfies OptionKeys<FinetuneOptions>;
const LORA_OPTIONS = { rank: true, alpha: true, targets: true, dropout: true, rslora: true } as const satisfies OptionKeys<LoraConfig>;

export async function finetune(o: FinetuneOptions): Promise<FinetuneSummary> {
  try {
    return await finetuneRun(o);
  } catch (e) {
    throw withOptionNames(e, 'finetune', FINETUNE_FLAG_OPTIONS);
  }
}

async function finetuneRun(o: FinetuneOptions): Promise<FinetuneSummary> {
  const t0 = performance.now();
  checkOptions('finetune', o, FINETUNE_OPTIONS, false);
  checkOptions('finetune: lora', o.lora, LORA_OPTIONS);
  const log = o.log ?? (o.progress ? (s: string) => process.stderr.write(s + '\n') : () => {});
  const full = !!o.full;
  positiveInt(o.epochs, 'epochs'); positiveInt(o.maxSteps, 'max steps'); positiveInt(o.gradAccum, 'grad accum');
  positiveInt(o.maxSeqLen, 'max seq len', 2); positiveInt(o.saveSteps, 'save steps'); positiveInt(o.evalSteps, 'eval steps');
  positiveInt(o.warmupSteps, 'warmup steps', 0); positiveInt(o.saveTotalLimit, 'save total limit', 0);
  if (o.epochs !== undefined && o.maxSteps !== undefined) throw new Error('give either epochs or max steps, not both');
  if (o.eval !== undefined && o.evalSplit !== undefined) throw new Error('give either an eval file or an eval split, not both');
  const dtype = checkBaseDtype(o);
  const seed = (o.seed ?? 0) >>> 0;
  const gradAccum = o.gradAccum ?? 1;
  const lr = o.lr ?? (full ? 1e-4 : 2e-4);
  if (!(typeof lr === 'number' && lr > 0)) throw new RangeError(`lr (the learning rate) must be a number > 0, got ${describe(lr)}`);
  for (const f of [o.data, o.eval]) if (f !== undefined) checkDataFile(f); // a missing file leaves no empty --out behind
  prepareOutDir(o.out, o);

  // model, tokenizer, chat template; with streamed layers the conversion is LayerStream.open's (as openModel does)
  const loaded = await loadModel(o.model, o.offload ? {} : { dtype: dtype ?? undefined });
  const cfg = loaded.config;
  let tok: Tokenizer | null;
  if (loaded.format === 'gguf') tok = loaded.ggufMetadata ? tokenizerFromGguf(loaded.ggufMetadata) : null;
  else tok = await loadTokenizer(o.model);
  if (!tok) throw new Error(`${o.model}: no tokenizer (tokenizer.json), which training data needs`);
  const template = await trainingTemplate(loaded);
  // an embedder (pooled objective) keeps its base's input limit, as sentence-transformers keeps max_seq_length: texts are
  // cut to it and the output's embedding_config.json says it again, so /v1/embeddings takes what the base took
  const pooled = o.objective && 'kind' in o.objective && o.objective.kind === 'pooled' ? o.objective : null;
  const maxSeqLen = o.maxSeqLen ?? (pooled ? readEmbeddingConfig(o.model, cfg.maxPositionEmbeddings).maxTokens : Math.min(2048, cfg.maxPositionEmbeddings));
  checkModelFits(o.model, cfg, maxSeqLen, o);

  // data: every line is checked before training starts
  const dataOpts = { maxSeqLen, trainOnPrompt: o.trainOnPrompt };
  const load = (file: string) => pooled ? { dropped: 0, ...pooled.load(file, tok, maxSeqLen) } : loadSamples(file, tok, template, dataOpts);
  const train = load(o.data);
  let trainSamples = train.samples;
  let evalSamples: Sample[] = [];
  if (o.eval !== undefined) evalSamples = load(o.eval).samples;
  else if (o.evalSplit !== undefined) ({ train: trainSamples, eval: evalSamples } = splitValidation(trainSamples, o.evalSplit, seed));
  const defaultBatch = pooled ? 32 : 1; // in-batch negatives need more than one pair
  const batchSize = o.batchSize ?? defaultBatch;
  log(`data: ${trainSamples.length} training samples${train.truncated ? ` (${train.truncated} truncated to ${maxSeqLen})` : ''}` +
    `${train.dropped ? `, ${train.dropped} without targets dropped` : ''}${evalSamples.length ? `, ${evalSamples.length} eval samples` : ''}`);
  const loader = new DataLoader(trainSamples, { batchSize: o.batchTokens === undefined ? batchSize : undefined, batchTokens: o.batchTokens, shuffle: o.shuffle ?? true, seed });

  // steps
  const { totalMicro, totalSteps, sched } = planSteps(o, loader, gradAccum, lr);

  // trainable model
  const backend = o.backendImpl ?? asTrainBackend(selectBackend(o.backend, o.threads));
  const loraCfg = loraConfigOf(o);
  const adapter: LoraAdapter | null = full ? null : initAdapter(cfg, loraCfg, seed);
  if (o.offload && full) throw new Error('streamed layers need a frozen base: full fine-tuning keeps every weight in memory');
  const stream = o.offload ? LayerStream.open(loaded, { ...o.offload, convert: dtype ? { dtype } : undefined }) : null;
  const base = baseWeights(loaded.tensors, 0, dtype);
  if (dtype) log(`base: converted to ${dtype} while loading (linear weights ${base.linear}, embedding ${base.embedding}, head ${base.head})`);
  const model = LlamaTrainModel.fromTensors(cfg, loaded.tensors, backend, { adapter, full, checkpointActivations: !!o.checkpointActivations }, loaded.ropeFreqFactors);
  if (stream) model.attachStream(stream);
  const obj = pooled ? null : o.objective as Objective | undefined;
  obj?.bind?.(model);
  const opt = new Optimizer(model.params, { name: o.optimizer ?? 'adamw', betas: [0.9, 0.999], eps: 1e-8, weightDecay: o.weightDecay ?? 0, momentum: 0 }, model.backend);
  const trainable = model.params.reduce((a, p) => a + p.value.length, 0);
  const runOptions = { full, lora: full ? null : loraCfg, dtype, lr, gradAccum, maxSeqLen, ...recordedBatch(o, defaultBatch),
    totalSteps, warmupSteps: sched.warmupSteps, decay: sched.decay, optimizer: opt.cfg.name, weightDecay: opt.cfg.weightDecay, seed, shuffle: o.shuffle ?? true,
    objective: o.objective?.options ?? null, data: dataFingerprint(o.data), base: baseFingerprint(o.model) };

  // output directory (checked by prepareOutDir), resume
  const metricsPath = path.join(o.out, 'metrics.jsonl');
  let step = 0;
  let tokensSeen = 0;
  let elapsedBefore = 0;
  if (o.resume !== undefined) {
    removeStaleTemps(o.resume);
    const ck = loadCheckpoint(resolveCheckpoint(o.resume));
    if (ck.state.kind !== (full ? 'full' : 'lora')) throw new RunSetupError(`${ck.dir}: a ${ck.state.kind} checkpoint cannot resume a ${full ? 'full' : 'lora'} run`);
    // checkpoints before objectives have none
    checkResumeOptions(ck.dir, { objective: null, ...ck.state.options, ...recordedBatch(ck.state.options, defaultBatch) }, runOptions, ['full', 'lora', 'dtype', 'gradAccum', 'maxSeqLen', 'batchSize', 'batchTokens', 'seed', 'shuffle', 'objective', 'optimizer', 'data', 'base']);
    restoreInto(ck, model.params, opt);
    loader.restore(ck.state.data);
    step = ck.state.step;
    tokensSeen = ck.state.tokens;
    elapsedBefore = ck.state.elapsedS;
    log(`resumed from ${ck.dir} at step ${step}`);
    // as HF's Trainer: nothing left to train is not an error, but a run that does nothing says so
    if (step >= totalSteps) log(`the checkpoint's step ${step} already reaches the run's ${totalSteps} steps${o.maxSteps !== undefined ? ' (--max-steps)' : ''}: nothing left to train; the final weights are the checkpoint's (raise --max-steps or --epochs to train on)`);
  }
  removeStaleTemps(o.out);
  // metrics continue the resumed run: lines after its step are dropped
  resetMetrics(metricsPath, o.resume !== undefined ? step : null);
  const metric = (m: object) => fs.appendFileSync(metricsPath, JSON.stringify(m) + '\n');

  const checkpoints: string[] = [];
  const writeWeights = (dir: string) => {
    if (adapter) writePeftAdapter(dir, adapter, path.resolve(o.model), pooled ? 'FEATURE_EXTRACTION' : 'CAUSAL_LM'); // an embedder's adapter (contrastive) is PEFT's feature extraction
    else writeSafetensors(path.join(dir, 'model.safetensors'), Object.fromEntries(model.params.map((p) => [p.name, { dtype: 'F32' as const, shape: p.shape, data: p.value }])), { format: 'pt' });
  };
  const save = () => {
    const state: TrainerState = {
      format: 'floe-trainer-state-1', step, data: loader.position(), seed, tokens: tokensSeen,
      elapsedS: elapsedBefore + (performance.now() - t0) / 1000, optimizerStep: opt.step, kind: full ? 'full' : 'lora',
      weightsFile: adapter ? PEFT_WEIGHTS : 'model.safetensors', options: runOptions,
    };
    const dir = saveCheckpoint(o.out, state, opt, writeWeights, o.saveTotalLimit ?? 3);
    checkpoints.push(dir);
    return dir;
  };

  const evalBatches = (): { batch: PackedBatch; indices: number[] }[] => {
    const bl = new DataLoader(evalSamples, { batchSize: o.batchTokens === undefined ? batchSize : undefined, batchTokens: o.batchTokens, shuffle: false, seed });
    const out: { batch: PackedBatch; indices: number[] }[] = [];
    while (bl.epoch === 0 && bl.cursor < evalSamples.length) out.push(bl.next());
    return out;
  };
  const evalCache = evalSamples.length ? evalBatches() : [];
  const runEval = (): EvalMetrics => {
    let sum = 0, n = 0;
    for (const { batch, indices } of evalCache) {
      if (pooled) { // eval_ppl is then exp(mean InfoNCE)
        const p = pooled.forBatch(indices.map((j) => evalSamples[j]!), 1);
        sum += model.evalHidden(p.batch, p.loss); n += p.counted;
      } else { const r = model.evalLoss(batch); sum += r.lossSum; n += r.counted; }
    }
    const m: EvalMetrics = { type: 'eval', step, eval_loss: sum / n, eval_ppl: Math.exp(sum / n), eval_tokens: n };
    metric(m);
    return m;
  };

  let initialEval: EvalMetrics | null = null;
  if (evalCache.length && step === 0) initialEval = runEval();
  if (o.saveInitial && step === 0) save();

  // training loop
  const bar = o.progress ? new Progress(totalSteps, step) : null;
  let lastLoss: number | null = null;
  let lastEval: EvalMetrics | null = initialEval;
  const tLoop = performance.now();
  const startStep = step;
  let loopTokens = 0;
  while (step < totalSteps) {
    const nMicro = Math.min(gradAccum, totalMicro - step * gradAccum);
    const micro: { batch: PackedBatch; indices: number[]; epoch: number }[] = [];
    for (let i = 0; i < nMicro; i++) micro.push(loader.next());
    const prepared = pooled ? [] : micro.map((m, i): PreparedBatch => {
      const samples = m.indices.map((j) => trainSamples[j]!);
      return obj?.prepare ? obj.prepare(samples, m.batch, mix32(seed, step, i, 0x0b)) : { samples, batch: m.batch, onPolicy: false };
    });
    const counted = pooled ? micro.reduce((a, m) => a + m.indices.length, 0) : prepared.reduce((a, p) => a + p.batch.targets.reduce((c, t) => c + (t >= 0 ? 1 : 0), 0), 0);
    model.zeroGrad();
    let lossSum = 0, ceSum = 0, partSum = 0;
    let tokens = 0;
    micro.forEach((m, i) => {
      model.dropoutKey = mix32(seed, step, i, 0xd0);
      if (pooled) {
        const p = pooled.forBatch(m.indices.map((j) => trainSamples[j]!), 1 / counted);
        lossSum += model.forwardBackwardHidden(p.batch, p.loss);
        tokens += p.batch.tokens.length;
        return;
      }
      const p = prepared[i]!;
      const extra = obj ? obj.forBatch(p.samples, p.batch) : null;
      const r = model.forwardBackward(p.batch, 1 / counted, extra);
      ceSum += r.lossSum;
      partSum += r.extraSum;
      lossSum += extra ? extra.ceWeight * r.lossSum + obj!.weight * r.extraSum : r.lossSum; // an on-policy batch trains no CE
      tokens += p.batch.tokens.length;
    });
    const gradNorm = clipGradNorm(model.params, o.maxGradNorm ?? 1);
    const lrNow = learningRate(sched, step);
    opt.update(lrNow);
    step++;
    tokensSeen += tokens;
    loopTokens += tokens;
    lastLoss = lossSum / counted;
    const elapsed = (performance.now() - tLoop) / 1000;
    const m: StepMetrics = {
      type: 'train', step, epoch: micro[micro.length - 1]!.epoch, loss: lastLoss, ...(obj ? { ce: ceSum / counted, kd: partSum / counted } : {}),
      ...(obj?.prepare ? { on_policy: prepared.map((p) => p.onPolicy) } : {}), lr: lrNow, tokens, target_tokens: counted,
      total_tokens: tokensSeen, grad_norm: gradNorm, tok_s: loopTokens / Math.max(elapsed, 1e-9), elapsed_s: elapsedBefore + (performance.now() - t0) / 1000,
      base_dtype: base.linear,
    };
    metric(m);
    o.onStep?.(m);
    bar?.update(m);
    if (!Number.isFinite(lastLoss)) throw nonFiniteLoss(lastLoss, step, o.model);
    if (o.evalSteps && evalCache.length && step % o.evalSteps === 0 && step < totalSteps) {
      lastEval = runEval();
      bar?.note(`eval step ${step}: loss ${lastEval.eval_loss.toFixed(4)} ppl ${lastEval.eval_ppl.toFixed(2)}`);
    }
    if (o.saveSteps && step % o.saveSteps === 0 && step < totalSteps) save();
  }
  bar?.done();
  if (evalCache.length && (lastEval === null || lastEval.step !== step)) lastEval = runEval();
  const last = listCheckpoints(o.out).at(-1);
  if (!last || last.step !== step) save();

  // final output: the adapter (PEFT) or the model (HF dir)
  const final = writeFinal(o.out, (dir) => {
    if (adapter) writePeftAdapter(dir, adapter, path.resolve(o.model), pooled ? 'FEATURE_EXTRACTION' : 'CAUSAL_LM');
    else writeHfModel(dir, cfg, loaded, new Map(model.params.map((p) => [p.name, { shape: p.shape, value: p.value }])), o.saveDtype ?? 'f32');
    pooled?.finish?.(dir, maxSeqLen);
  });

  const seconds = (performance.now() - tLoop) / 1000;
  const summary: FinetuneSummary = {
    steps: step, startStep, finalLoss: lastLoss, eval: lastEval, initialEval, tokens: tokensSeen, seconds,
    tokensPerSecond: loopTokens / Math.max(seconds, 1e-9), trainableParams: trainable,
    peakRssBytes: process.resourceUsage().maxRSS * 1024, activationBytes: model.activationBytes, output: final,
    checkpoints: listCheckpoints(o.out).map((c) => c.dir), base,
  };
  writeFileAtomic(path.join(o.out, 'summary.json'), [new TextEncoder().encode(JSON.stringify(summary, null, 1) + '\n')]);
  loaded.dispose();
  return summary;
}

/** A one-line progress bar on stderr (a plain line every few steps when stderr is not a terminal). */
class Progress {
  private readonly tty = !!process.stderr.isTTY;
  private readonly every: number;
  constructor(readonly total: number, readonly start: number) {
    this.every = Math.max(1, Math.round((total - start) / 20));
  }
  update(m: StepMetrics): void {
    const left = this.total - m.step;
    const rate = (m.step - this.start) / Math.max(m.elapsed_s, 1e-9);
    const eta = left / Math.max(rate, 1e-9);
    const w = 24;
    const fill = Math.round((w * m.step) / this.total);
    const line = `[${'#'.repeat(fill)}${'.'.repeat(w - fill)}] step ${m.step}/${this.total} loss ${m.loss.toFixed(4)} lr ${m.lr.toExponential(2)} ` +
      `${m.tok_s.toFixed(0)} tok/s ETA ${fmtTime(eta)}`;
    if (this.tty) process.stderr.write(`\r${line}\x1b[K`);
    else if (m.step % this.every === 0 || m.step === this.total) process.stderr.write(line + '\n');
  }
  note(s: string): void { process.stderr.write((this.tty ? '\r\x1b[K' : '') + s + '\n'); }
  done(): void { if (this.tty) process.stderr.write('\n'); }
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), x = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(x).padStart(2, '0')}s` : `${x}s`;
}
