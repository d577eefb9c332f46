// Flags and options shared by `floe finetune` and `floe distill`: parsing, conflicts and ranges in one place.

import { defaultLoraAlpha, LORA_TARGETS, parseLoraTargets, type LoraTarget } from '../model/lora.js';
import type { FinetuneOptions } from '../train/trainer.js';
import { flagWording } from '../train/option-names.js';
import { conflicts, loadDtype, optNum, threadsFlag, UsageError, type Range } from './args.js';
import { RunSetupError } from '../train/checkpoint.js';
import { OFFLOAD_FLAGS, offloadOptions } from './offload-args.js';

const str = { type: 'string' } as const;
const bool = { type: 'boolean' } as const;

/** parse() option table of the training flags (the model flags are each command's own). */
export const TRAIN_FLAGS = {
  data: str, eval: str, 'eval-split': str, 'eval-steps': str, 'lora-rank': str, 'lora-alpha': str,
  'lora-targets': str, 'lora-dropout': str, rslora: bool, full: bool, epochs: str, 'max-steps': str, lr: str,
  'lr-schedule': str, 'warmup-steps': str, 'batch-size': str, 'batch-tokens': str, 'grad-accum': str, 'max-seq-len': str,
  'checkpoint-activations': bool, optimizer: str, 'weight-decay': str, 'max-grad-norm': str, 'train-on-prompt': bool,
  'save-steps': str, 'save-initial': bool, 'save-total-limit': str, 'save-dtype': str, 'no-shuffle': bool, out: str,
  resume: str, seed: str, threads: str, backend: str, quiet: bool, json: bool, overwrite: bool, dtype: str, ...OFFLOAD_FLAGS,
} as const;

type Values = Record<string, string | boolean | undefined>;

/** `--name` must be one of `allowed`. */
export function oneOf<T extends string>(name: string, val: string | undefined, allowed: readonly T[]): T | undefined {
  if (val !== undefined && !allowed.includes(val as T)) throw new UsageError(`--${name} expects ${allowed.join(' or ')}, got '${val}'`);
  return val as T | undefined;
}

/** --lora-targets LIST: undefined when absent; an empty or unknown entry is a usage error naming the flag. */
export function loraTargetsFlag(v: string | undefined): LoraTarget[] | undefined {
  if (v === undefined) return undefined;
  if (v.trim() === '') throw new UsageError(`--lora-targets expects a subset of ${LORA_TARGETS.join(',')} (or all), got ''`);
  try { return parseLoraTargets(v); } catch (e) { throw new UsageError(`--lora-targets: ${(e as Error).message}`); }
}

/**
 * A training run; its refusal of --out or --resume (a non-empty dir, a checkpoint of other flags) is a usage error
 * (exit 2). Every refusal keeps the CLI's own wording (flags), without the option names finetune() / distill() add for
 * library callers.
 */
export async function setupAsUsage<T>(run: Promise<T>): Promise<T> {
  try {
    return await run;
  } catch (e) {
    const cli = flagWording(e);
    throw cli instanceof RunSetupError ? new UsageError(cli.message) : cli;
  }
}

/** Optional number flag with a range. */
export const optFlag = (v: Values, name: string, integer = false, range: Range = {}): number | undefined => optNum(v[name] as string | undefined, name, integer, range);

/** The training flags' checks (required, conflicts, dependencies), then FinetuneOptions without the model. */
export function trainingOptions(v: Values): Omit<FinetuneOptions, 'model'> {
  if (!v.data) throw new UsageError('--data FILE.jsonl is required');
  if (!v.out) throw new UsageError('--out DIR is required');
  conflicts(v, [['batch-size', 'batch-tokens'], ['epochs', 'max-steps'], ['eval', 'eval-split'], ['resume', 'overwrite']]);
  if (v['eval-steps'] !== undefined && v.eval === undefined && v['eval-split'] === undefined) throw new UsageError('--eval-steps needs --eval FILE or --eval-split F');
  const opt = (name: string, integer = false, range: Range = {}) => optFlag(v, name, integer, range);
  const s = (name: string) => v[name] as string | undefined;
  const full = !!v.full;
  if (full && (v['lora-rank'] ?? v['lora-alpha'] ?? v['lora-targets'] ?? v['lora-dropout'] ?? v.rslora) !== undefined) throw new UsageError('--full trains every weight: --lora-* options do not apply');
  if (!full && v['save-dtype'] !== undefined) throw new UsageError('--save-dtype sets the dtype of the --full output model; a LoRA adapter is saved in f32');
  const dtype = baseDtype(v.dtype as string | undefined, full);
  const one = { min: 1 };
  const rank = opt('lora-rank', true, one) ?? 8;
  return {
    data: s('data')!, out: s('out')!, eval: s('eval'), evalSplit: opt('eval-split', false, { above: 0, below: 1 }), evalSteps: opt('eval-steps', true, one),
    full,
    lora: { rank, alpha: opt('lora-alpha', false, { above: 0 }) ?? defaultLoraAlpha(rank), targets: loraTargetsFlag(s('lora-targets')), dropout: opt('lora-dropout', false, { below: 1 }) ?? 0, rslora: !!v.rslora },
    epochs: opt('epochs', true, one), maxSteps: opt('max-steps', true, one), lr: opt('lr', false, { above: 0 }), decay: oneOf('lr-schedule', s('lr-schedule'), ['cosine', 'linear', 'constant'] as const),
    warmupSteps: opt('warmup-steps', true), batchSize: opt('batch-size', true, one), batchTokens: opt('batch-tokens', true, one),
    gradAccum: opt('grad-accum', true, one), maxSeqLen: opt('max-seq-len', true, { min: 2 }), checkpointActivations: !!v['checkpoint-activations'],
    optimizer: oneOf('optimizer', s('optimizer'), ['adamw', 'sgd'] as const), weightDecay: opt('weight-decay'), maxGradNorm: opt('max-grad-norm'),
    trainOnPrompt: !!v['train-on-prompt'], saveSteps: opt('save-steps', true, one), saveInitial: !!v['save-initial'],
    saveTotalLimit: opt('save-total-limit', true), saveDtype: oneOf('save-dtype', s('save-dtype'), ['f32', 'bf16'] as const),
    shuffle: !v['no-shuffle'], resume: s('resume'), overwrite: !!v.overwrite, seed: opt('seed', true),
    backend: oneOf('backend', s('backend'), ['native', 'reference'] as const), threads: threadsFlag(v.threads as string | undefined), progress: !v.quiet,
    offload: streamed(v, full), dtype,
  };
}

/** --dtype fp8|bf16 (as generate's: the frozen base converted while loading); refused with --full (its f32 masters are trained). */
function baseDtype(val: string | undefined, full: boolean) {
  const dtype = loadDtype(val)?.dtype;
  if (dtype && full) {
    throw new UsageError(`--dtype ${dtype} converts the frozen base of a LoRA run; --full trains f32 master copies of every weight, so there is no frozen base to convert: drop --dtype, or train an adapter (no --full)`);
  }
  return dtype;
}

/** --weights-memory / --offload-ratio; refused with --full (its f32 weights are trained in memory). */
function streamed(v: Values, full: boolean) {
  const o = offloadOptions(v as Record<string, string | undefined>);
  if (o && full) throw new UsageError('--weights-memory / --offload-ratio stream a frozen base: they do not apply to --full');
  return o;
}

/** `floe finetune`'s objective flags (distill has its own --temperature). */
export const OBJECTIVE_FLAGS = { objective: str, temperature: str, pooling: str } as const;

/** --objective lm (default) | contrastive, with the contrastive --temperature and --pooling. */
export async function objectiveOption(v: Values): Promise<Pick<FinetuneOptions, 'objective'>> {
  const kind = oneOf('objective', v.objective as string | undefined, ['lm', 'contrastive'] as const) ?? 'lm';
  const pooling = oneOf('pooling', v.pooling as string | undefined, ['mean', 'last'] as const);
  const temperature = optFlag(v, 'temperature', false, { above: 0 });
  if (kind !== 'contrastive') {
    if (temperature !== undefined || pooling !== undefined) throw new UsageError('--temperature and --pooling apply to --objective contrastive');
    return {};
  }
  if (v['train-on-prompt']) throw new UsageError('--train-on-prompt applies to language-model data, not to --objective contrastive');
  const { contrastiveObjective } = await import('../train/contrastive.js');
  return { objective: contrastiveObjective({ ...(temperature !== undefined ? { temperature } : {}), ...(pooling ? { pooling } : {}) }) };
}
