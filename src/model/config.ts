// LlamaConfig (a plain interface from formats/, re-exported) and the RoPE frequencies it implies.

import type { LlamaConfig } from '../formats/llama-config.js';

export type { LlamaConfig, RopeScaling } from '../formats/llama-config.js';

/** Base inverse frequencies (E/2), with Llama 3.1 `llama3` or linear scaling applied (HF semantics). */
export function ropeInvFreq(cfg: Pick<LlamaConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float32Array {
  // transformers computes these in float32; fround each step to stay within an ulp of it
  const f = Math.fround;
  const E = cfg.headDim;
  const inv = new Float32Array(E / 2);
  for (let i = 0; i < E / 2; i++) inv[i] = f(1 / f(Math.pow(cfg.ropeTheta, f((2 * i) / E))));
  const s = cfg.ropeScaling;
  if (s?.type === 'linear') {
    for (let i = 0; i < inv.length; i++) inv[i] = inv[i]! / s.factor;
  } else if (s?.type === 'llama3') {
    // transformers modeling_rope_utils._compute_llama3_parameters
    const lowWavelen = f(s.originalMaxPositionEmbeddings / s.lowFreqFactor);
    const highWavelen = f(s.originalMaxPositionEmbeddings / s.highFreqFactor);
    for (let i = 0; i < inv.length; i++) {
      const fr = inv[i]!;
      const wavelen = f((2 * Math.PI) / fr);
      if (wavelen > lowWavelen) inv[i] = fr / s.factor;
      else if (wavelen >= highWavelen) {
        const smooth = f(f(f(s.originalMaxPositionEmbeddings / wavelen) - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor));
        inv[i] = f(f((1 - smooth) * f(fr / s.factor)) + f(smooth * fr));
      }
    }
  }
  return inv;
}
