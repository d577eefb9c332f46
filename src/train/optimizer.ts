// Optimizers over f32 parameters: AdamW (decoupled weight decay, as torch.optim.AdamW) and SGD with momentum;
// global-norm gradient clipping (as torch.nn.utils.clip_grad_norm_).

import type { TrainKernels } from '../backend/backend.js';
import type { TrainParam } from '../model/llama-train.js';

export type OptimizerName = 'adamw' | 'sgd';

export interface OptimizerConfig {
  readonly name: OptimizerName;
  readonly betas: readonly [number, number]; // AdamW
  readonly eps: number; // AdamW
  readonly weightDecay: number;
  readonly momentum: number; // SGD
}

export const DEFAULT_OPTIMIZER: OptimizerConfig = { name: 'adamw', betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, momentum: 0 };

/** Optimizer state: one or two f32 moments per parameter and the step count, all saved in checkpoints. */
export class Optimizer {
  step = 0;
  readonly m: Float32Array[]; // first moment (AdamW) / momentum buffer (SGD)
  readonly v: Float32Array[]; // second moment (AdamW only; empty arrays for SGD)

  /** kernels: a backend whose adamwUpdate (native) runs AdamW, bit for bit as the TypeScript loop below. */
  constructor(readonly params: readonly TrainParam[], readonly cfg: OptimizerConfig, private readonly kernels?: Pick<TrainKernels, 'adamwUpdate'>) {
    this.m = params.map((p) => new Float32Array(cfg.name === 'adamw' || cfg.momentum > 0 ? p.value.length : 0));
    this.v = params.map((p) => new Float32Array(cfg.name === 'adamw' ? p.value.length : 0));
  }

  /** One update with learning rate lr from the current gradients. */
  update(lr: number): void {
    this.step++;
    const c = this.cfg;
    if (c.name === 'adamw') {
      const [b1, b2] = c.betas;
      const bc1 = 1 - b1 ** this.step;
      const sbc2 = Math.sqrt(1 - b2 ** this.step);
      const stepSize = lr / bc1;
      const native = this.kernels?.adamwUpdate?.bind(this.kernels);
      this.params.forEach((p, i) => {
        const w = p.value, g = p.grad, m = this.m[i]!, v = this.v[i]!;
        const decay = p.decay ? 1 - lr * c.weightDecay : 1;
        if (native) return native(w, g, m, v, b1, b2, c.eps, decay, stepSize, sbc2);
        for (let j = 0; j < w.length; j++) {
          const gj = g[j]!;
          m[j] = b1 * m[j]! + (1 - b1) * gj;
          v[j] = b2 * v[j]! + (1 - b2) * gj * gj;
          // torch: p *= 1 - lr·wd; p -= lr / bc1 · m / (sqrt(v) / sqrt(bc2) + eps)
          w[j] = w[j]! * decay - (stepSize * m[j]!) / (Math.sqrt(v[j]!) / sbc2 + c.eps);
        }
      });
    } else {
      this.params.forEach((p, i) => {
        const w = p.value, g = p.grad, m = this.m[i]!;
        const wd = p.decay ? c.weightDecay : 0;
        for (let j = 0; j < w.length; j++) {
          let d = g[j]! + wd * w[j]!;
          if (c.momentum > 0) {
            m[j] = this.step === 1 ? d : c.momentum * m[j]! + d;
            d = m[j]!;
          }
          w[j] = w[j]! - lr * d;
        }
      });
    }
  }
}

/** L2 norm over every gradient (f64 accumulation). */
export function gradNorm(params: readonly TrainParam[]): number {
  let ss = 0;
  for (const p of params) for (let j = 0; j < p.grad.length; j++) ss += p.grad[j]! * p.grad[j]!;
  return Math.sqrt(ss);
}

/** Scale gradients so their global norm is at most maxNorm (no-op when maxNorm <= 0); returns the norm before. */
export function clipGradNorm(params: readonly TrainParam[], maxNorm: number): number {
  const norm = gradNorm(params);
  if (maxNorm > 0 && Number.isFinite(norm)) {
    const k = maxNorm / (norm + 1e-6);
    if (k < 1) for (const p of params) for (let j = 0; j < p.grad.length; j++) p.grad[j]! *= k;
  }
  return norm;
}
