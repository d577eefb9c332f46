// Learning-rate schedule: linear warmup, then cosine, linear or constant decay (HF get_*_schedule_with_warmup).

export type DecayKind = 'cosine' | 'linear' | 'constant';

export interface ScheduleConfig {
  readonly lr: number; // peak
  readonly warmupSteps: number;
  readonly totalSteps: number;
  readonly decay: DecayKind;
  readonly minLrRatio: number; // floor of the decay as a fraction of lr
}

/** Learning rate for the update that follows `done` completed optimizer steps (0-based, as torch's LambdaLR). */
export function learningRate(c: ScheduleConfig, done: number): number {
  if (done < c.warmupSteps) return (c.lr * done) / Math.max(1, c.warmupSteps);
  if (c.decay === 'constant') return c.lr;
  const progress = Math.min(1, (done - c.warmupSteps) / Math.max(1, c.totalSteps - c.warmupSteps));
  const f = c.decay === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1 - progress;
  return c.lr * (c.minLrRatio + (1 - c.minLrRatio) * f);
}
