// `floe distill`: teacher → student distillation; finetune's options plus the distillation ones (see the help text in main.ts).

import type { KdLossKind } from '../train/kd-loss.js';
import { parse, UsageError, type Range } from './args.js';
import { oneOf, optFlag, setupAsUsage, TRAIN_FLAGS, trainingOptions } from './train-args.js';

const str = { type: 'string' } as const;

/** parse() option table of `floe distill`: its own flags and the training flags. */
export const DISTILL_FLAGS = {
  teacher: str, student: str, 'kd-ratio': str, temperature: str, 'top-k': str, loss: str, beta: str, 'teacher-cache': str, 'cache-dtype': str,
  'on-policy': str, 'sample-temperature': str, 'max-new-tokens': str, ...TRAIN_FLAGS,
} as const;

export async function distillCmd(args: string[]): Promise<number> {
  const { distill } = await import('../train/distill.js');
  let v;
  try {
    ({ values: v } = parse(args, DISTILL_FLAGS));
  } catch (e) {
    // finetune's --model is distill's --student: say so, not only "Unknown option '--model'"
    if ((e as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && /'--model'/.test((e as Error).message)) {
      throw new UsageError('distill has no --model: give the model to train as --student DIR and the one it learns from as --teacher DIR');
    }
    throw e;
  }
  if (!v.teacher) throw new UsageError('--teacher DIR is required');
  if (!v.student) throw new UsageError('--student DIR is required');
  const options = trainingOptions(v);
  const opt = (name: keyof typeof v, integer = false, range: Range = {}) => optFlag(v, name, integer, range);
  const loss = oneOf<KdLossKind>('loss', v.loss, ['forward-kl', 'reverse-kl', 'jsd']);
  if (v.beta !== undefined && loss !== 'jsd') throw new UsageError('--beta applies to --loss jsd');
  const onPolicy = opt('on-policy', false, { min: 0, max: 1 }); // checked first: a bad λ is the mistake to name
  if ((v['sample-temperature'] !== undefined || v['max-new-tokens'] !== undefined) && !(onPolicy! > 0)) {
    throw new UsageError('--sample-temperature and --max-new-tokens apply to --on-policy L with L > 0');
  }
  const cacheFlags = (['teacher-cache', 'cache-dtype'] as const).filter((f) => v[f] !== undefined);
  if (onPolicy === 1 && cacheFlags.length) {
    throw new UsageError(`${cacheFlags.map((f) => `--${f}`).join(' and ')} ${cacheFlags.length > 1 ? 'do' : 'does'} not apply to --on-policy 1: every batch is then scored by the teacher in memory (drop ${cacheFlags.length > 1 ? 'them' : 'it'}, or take --on-policy below 1)`);
  }
  const one = { min: 1 };
  const s = await setupAsUsage(distill({
    teacher: v.teacher, student: v.student, kdRatio: opt('kd-ratio', false, { min: 0, max: 1 }), temperature: opt('temperature', false, { above: 0 }),
    topK: opt('top-k', true, one), loss, beta: opt('beta', false, { min: 0, max: 1 }), teacherCache: v['teacher-cache'],
    cacheDtype: oneOf('cache-dtype', v['cache-dtype'], ['f16', 'f32'] as const),
    onPolicy, sampleTemperature: opt('sample-temperature', false, { min: 0 }), maxNewTokens: opt('max-new-tokens', true, one),
    ...options,
  }));
  if (v.json) { process.stdout.write(JSON.stringify(s) + '\n'); return 0; }
  const c = s.teacherCache;
  const ev = (e: typeof s.eval) => (e ? `loss ${e.eval_loss.toFixed(4)}, perplexity ${e.eval_ppl.toFixed(3)}` : 'none');
  process.stdout.write([
    ...(s.onPolicy ? [`on-policy    λ ${s.onPolicy.lambda}: ${s.onPolicy.batches} micro-batches sampled by the student, ${s.onPolicy.generatedTokens.toLocaleString('en-US')} tokens, ${s.onPolicy.seconds.toFixed(1)} s`] : []),
    c.file === null ? 'teacher cache none (every batch on-policy)' : `teacher cache ${c.file}: ${c.rows.toLocaleString('en-US')} target tokens, ${c.bytesPerToken} bytes/token, ${(c.bytes / 2 ** 20).toFixed(1)} MiB, ` +
      `${c.built ? `built in ${c.seconds.toFixed(1)} s` : 'reused'}`,
    `steps        ${s.startStep} -> ${s.steps}, ${s.tokens.toLocaleString('en-US')} tokens, ${s.seconds.toFixed(1)} s, ${s.tokensPerSecond.toFixed(1)} tok/s`,
    `final loss   ${s.finalLoss === null ? '-' : s.finalLoss.toFixed(4)}`,
    `eval         ${s.initialEval ? `before: ${ev(s.initialEval)}; after: ` : ''}${ev(s.eval)}`,
    `trainable    ${s.trainableParams.toLocaleString('en-US')} parameters (${options.full ? 'full' : 'LoRA'})`,
    `output       ${s.output}`,
  ].join('\n') + '\n');
  return 0;
}
