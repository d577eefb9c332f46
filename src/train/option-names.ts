// CLI flag -> library option names: finetune() / distill() refusals name the flags (the CLI runs them and prints that
// text); a library caller is told the options too. One table per function, one wrapper (withOptionNames) for both.

import type { DistillOptions } from './distill.js';
import type { FinetuneOptions } from './trainer.js';
import { RunSetupError } from './checkpoint.js';

/** An option of O as a refusal names it: `out`, `lora.rank`, `overwrite: true`. */
export type OptionName<O> = Extract<keyof O, string> | `${Extract<keyof O, string>}${'.' | ': '}${string}`;

/**
 * The CLI flag -> option-name table of the training flags `floe finetune` and `floe distill` share (cli/train-args.ts's
 * TRAIN_FLAGS): refusals (finetune()'s own, checkpoint.ts's, data.ts's, contrastive.ts's, a resume's recorded settings)
 * name the flags as the CLI prints them; withOptionNames tells a library caller the options too.
 */
export const TRAIN_FLAG_OPTIONS = {
  data: 'data', eval: 'eval', 'eval-split': 'evalSplit', 'eval-steps': 'evalSteps', 'lora-rank': 'lora.rank', 'lora-alpha': 'lora.alpha',
  'lora-targets': 'lora.targets', 'lora-dropout': 'lora.dropout', rslora: 'lora.rslora', full: 'full', epochs: 'epochs', 'max-steps': 'maxSteps', lr: 'lr',
  'lr-schedule': 'decay', 'warmup-steps': 'warmupSteps', 'batch-size': 'batchSize', 'batch-tokens': 'batchTokens', 'grad-accum': 'gradAccum',
  'max-seq-len': 'maxSeqLen', 'checkpoint-activations': 'checkpointActivations', optimizer: 'optimizer', 'weight-decay': 'weightDecay',
  'max-grad-norm': 'maxGradNorm', 'train-on-prompt': 'trainOnPrompt', 'save-steps': 'saveSteps', 'save-initial': 'saveInitial',
  'save-total-limit': 'saveTotalLimit', 'save-dtype': 'saveDtype', 'no-shuffle': 'shuffle', out: 'out', resume: 'resume: DIR', seed: 'seed',
  threads: 'threads', backend: 'backend', quiet: 'progress', overwrite: 'overwrite: true', 'weights-memory': 'offload.weightsMemory',
  'offload-ratio': 'offload.offloadRatio', dtype: 'dtype',
} as const satisfies Record<string, OptionName<Omit<FinetuneOptions, 'model' | 'objective'>>>;

/** finetune()'s table: the training flags, --model, and contrastiveObjective()'s settings (recorded as the objective's). */
export const FINETUNE_FLAG_OPTIONS = {
  ...TRAIN_FLAG_OPTIONS, model: 'model', objective: 'objective', temperature: 'objective', pooling: 'objective',
} as const satisfies Record<string, OptionName<FinetuneOptions>>;

/** distill()'s table: the training flags and distill's own (its --temperature is the distillation temperature). */
export const DISTILL_FLAG_OPTIONS = {
  ...TRAIN_FLAG_OPTIONS, teacher: 'teacher', student: 'student', 'kd-ratio': 'kdRatio', temperature: 'temperature', 'top-k': 'topK', loss: 'loss',
  beta: 'beta', 'teacher-cache': 'teacherCache', 'cache-dtype': 'cacheDtype', 'on-policy': 'onPolicy', 'sample-temperature': 'sampleTemperature',
  'max-new-tokens': 'maxNewTokens',
} as const satisfies Record<string, OptionName<DistillOptions>>;

/** A plain Error that finetune() / distill() re-worded for a library caller: the CLI's text, then the options; `cause` is the CLI's text. */
export class OptionNamedError extends Error {
  declare readonly cause: Error;
}

/** The errors withOptionNames made: their cause is the refusal as the CLI words it. */
const reworded = new WeakSet<Error>();

/** The refusal as the CLI words it (flags only): what withOptionNames was given, or `e` itself. */
export function flagWording(e: unknown): unknown {
  return e instanceof Error && reworded.has(e) ? e.cause : e;
}

/**
 * A refusal that names CLI flags (the CLI runs finetune() / distill() and keeps that text, the cause) also names the
 * options they are, in the order the message names the flags: `<text> (distill() options: resume: DIR, overwrite: true,
 * out)`. A RunSetupError stays one (the CLI's usage error, exit 2); a plain Error becomes an OptionNamedError (the CLI
 * prints its cause, exit 1); any other error, or one naming no flag of `table` outside a `quoted` command line, is
 * returned as it is. An error already re-worded (finetune()'s, inside distill()) is re-worded from its cause.
 */
export function withOptionNames(e: unknown, fn: string, table: Readonly<Record<string, string>>): unknown {
  const base = flagWording(e);
  const setup = base instanceof RunSetupError;
  if (!setup && !(base instanceof Error && base.constructor === Error)) return e;
  const text = base.message.replace(/`[^`]*`/g, ''); // a quoted command line (`mpirun ... floe finetune ...`) is one to run: no option of fn() says it
  const names = [...new Set([...text.matchAll(/(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)/g)].map((m) => table[m[1]!]).filter((n) => n !== undefined))];
  if (names.length === 0) return base;
  const message = `${base.message} (${fn}() options: ${names.join(', ')})`;
  const named = setup ? new RunSetupError(message, { cause: base }) : new OptionNamedError(message, { cause: base });
  reworded.add(named);
  return named;
}
