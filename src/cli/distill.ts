// `floe distill`: teacher → student distillation; finetune's options plus the distillation ones (see the help text in main.ts).

import type { KdLossKind } from '../train/kd-loss.js';
import { conflicts, optNum, parse, UsageError, type Range } from './args.js';

export async function distillCmd(args: string[]): Promise<number> {
  const { distill } = await import('../train/distill.js');
  const { parseLoraTargets } = await import('../model/lora.js');
  const str = { type: 'string' } as const;
  const bool = { type: 'boolean' } as const;
  const { values: v } = parse(args, {
    teacher: str, student: str, 'kd-ratio': str, temperature: str, 'top-k': str, loss: str, beta: str, 'teacher-cache': str, 'cache-dtype': str,
    'on-policy': str,
    data: str, eval: str, 'eval-split': str, 'eval-steps': str, 'lora-rank': str, 'lora-alpha': str,
    'lora-targets': str, 'lora-dropout': str, rslora: bool, full: bool, epochs: str, 'max-steps': str, lr: str,
    'lr-schedule': str, 'warmup-steps': str, 'batch-size': str, 'batch-tokens': str, 'grad-accum': str, 'max-seq-len': str,
    'checkpoint-activations': bool, optimizer: str, 'weight-decay': str, 'max-grad-norm': str, 'train-on-prompt': bool,
    'save-steps': str, 'save-initial': bool, 'save-total-limit': str, 'save-dtype': str, 'no-shuffle': bool, out: str,
    resume: str, seed: str, threads: str, backend: str, quiet: bool, json: bool, overwrite: bool,
  });
  if (!v.teacher) throw new UsageError('--teacher DIR is required');
  if (!v.student) throw new UsageError('--student DIR is required');
  if (!v.data) throw new UsageError('--data FILE.jsonl is required');
  if (!v.out) throw new UsageError('--out DIR is required');
  if (v['on-policy'] !== undefined) throw new UsageError('--on-policy (student samples scored by the teacher) is not implemented yet; distillation runs on the cached teacher');
  conflicts(v, [['batch-size', 'batch-tokens'], ['epochs', 'max-steps'], ['eval', 'eval-split'], ['resume', 'overwrite']]);
  if (v['eval-steps'] !== undefined && v.eval === undefined && v['eval-split'] === undefined) throw new UsageError('--eval-steps needs --eval FILE or --eval-split F');
  const opt = (name: keyof typeof v, integer = false, range: Range = {}) => optNum(v[name] as string | undefined, name, integer, range);
  const oneOf = <T extends string>(name: string, val: string | undefined, allowed: readonly T[]): T | undefined => {
    if (val !== undefined && !allowed.includes(val as T)) throw new UsageError(`--${name} expects ${allowed.join(' or ')}, got '${val}'`);
    return val as T | undefined;
  };
  const loss = oneOf<KdLossKind>('loss', v.loss, ['forward-kl', 'reverse-kl', 'jsd']);
  if (v.beta !== undefined && loss !== 'jsd') throw new UsageError('--beta applies to --loss jsd');
  const full = !!v.full;
  if (full && (v['lora-rank'] ?? v['lora-alpha'] ?? v['lora-targets'] ?? v['lora-dropout'] ?? v.rslora) !== undefined) throw new UsageError('--full trains every weight: --lora-* options do not apply');
  if (!full && v['save-dtype'] !== undefined) throw new UsageError('--save-dtype sets the dtype of the --full output model; a LoRA adapter is saved in f32');
  const one = { min: 1 };
  const rank = opt('lora-rank', true, one) ?? 8;
  const s = await distill({
    teacher: v.teacher, student: v.student, kdRatio: opt('kd-ratio', false, { min: 0, max: 1 }), temperature: opt('temperature', false, { above: 0 }),
    topK: opt('top-k', true, one), loss, beta: opt('beta', false, { min: 0, max: 1 }), teacherCache: v['teacher-cache'],
    cacheDtype: oneOf('cache-dtype', v['cache-dtype'], ['f16', 'f32'] as const),
    data: v.data, out: v.out, eval: v.eval, evalSplit: opt('eval-split', false, { above: 0, below: 1 }), evalSteps: opt('eval-steps', true, one),
    full,
    lora: { rank, alpha: opt('lora-alpha', false, { above: 0 }) ?? 2 * rank, targets: v['lora-targets'] ? parseLoraTargets(v['lora-targets']) : undefined, dropout: opt('lora-dropout', false, { below: 1 }) ?? 0, rslora: !!v.rslora },
    epochs: opt('epochs', true, one), maxSteps: opt('max-steps', true, one), lr: opt('lr', false, { above: 0 }), decay: oneOf('lr-schedule', v['lr-schedule'], ['cosine', 'linear', 'constant'] as const),
    warmupSteps: opt('warmup-steps', true), batchSize: opt('batch-size', true, one), batchTokens: opt('batch-tokens', true, one),
    gradAccum: opt('grad-accum', true, one), maxSeqLen: opt('max-seq-len', true, { min: 2 }), checkpointActivations: !!v['checkpoint-activations'],
    optimizer: oneOf('optimizer', v.optimizer, ['adamw', 'sgd'] as const), weightDecay: opt('weight-decay'), maxGradNorm: opt('max-grad-norm'),
    trainOnPrompt: !!v['train-on-prompt'], saveSteps: opt('save-steps', true, one), saveInitial: !!v['save-initial'],
    saveTotalLimit: opt('save-total-limit', true), saveDtype: oneOf('save-dtype', v['save-dtype'], ['f32', 'bf16'] as const),
    shuffle: !v['no-shuffle'], resume: v.resume, overwrite: !!v.overwrite, seed: opt('seed', true),
    backend: oneOf('backend', v.backend, ['native', 'reference'] as const), threads: opt('threads', true, one), progress: !v.quiet,
  });
  if (v.json) { process.stdout.write(JSON.stringify(s) + '\n'); return 0; }
  const c = s.teacherCache;
  const ev = (e: typeof s.eval) => (e ? `loss ${e.eval_loss.toFixed(4)}, perplexity ${e.eval_ppl.toFixed(3)}` : 'none');
  process.stdout.write([
    `teacher cache ${c.file}: ${c.rows.toLocaleString('en-US')} target tokens, ${c.bytesPerToken} bytes/token, ${(c.bytes / 2 ** 20).toFixed(1)} MiB, ` +
      `${c.built ? `built in ${c.seconds.toFixed(1)} s` : 'reused'}`,
    `steps        ${s.startStep} -> ${s.steps}, ${s.tokens.toLocaleString('en-US')} tokens, ${s.seconds.toFixed(1)} s, ${s.tokensPerSecond.toFixed(1)} tok/s`,
    `final loss   ${s.finalLoss === null ? '-' : s.finalLoss.toFixed(4)}`,
    `eval         ${s.initialEval ? `before: ${ev(s.initialEval)}; after: ` : ''}${ev(s.eval)}`,
    `trainable    ${s.trainableParams.toLocaleString('en-US')} parameters (${full ? 'full' : 'LoRA'})`,
    `output       ${s.output}`,
  ].join('\n') + '\n');
  return 0;
}
