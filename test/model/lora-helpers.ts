// LoRA test helpers: random adapters with B ≠ 0 and the merged-weights model they must equal.

import { LlamaModel, type LlamaLayer } from '../../src/model/llama.js';
import { initLora, LORA_FIELD, LORA_TARGETS, loraScale, mergeLinear, type LoraAdapter, type LoraTarget } from '../../src/model/lora.js';
import { f32Tensor } from '../../src/tensor/tensor.js';
import { rand } from '../engine/helpers.js';

/** A PEFT-initialised adapter with B drawn at random too (B = 0 would be the base). */
export function randomAdapter(m: LlamaModel, seed: number, rank: number, targets: readonly LoraTarget[] = LORA_TARGETS, rslora = false, bScale = 0.3): LoraAdapter {
  const r = rand(seed);
  const a = initLora(m.config, { rank, alpha: 2 * rank, targets, rslora, dropout: 0 }, r);
  for (const lay of a.layers) for (const lin of Object.values(lay)) for (let i = 0; i < lin!.b.length; i++) lin!.b[i] = (2 * r() - 1) * bScale;
  return a;
}

/** The model with the adapter folded into f32 weights (mergeLinear, as `floe merge` does). */
export function merged(m: LlamaModel, adapter: LoraAdapter): LlamaModel {
  const s = loraScale(adapter.config);
  const layers = m.weights.layers.map((L, l) => {
    const out: Record<string, unknown> = { ...L };
    for (const t of LORA_TARGETS) {
      const lin = adapter.layers[l]?.[t];
      if (!lin) continue;
      const w = L[LORA_FIELD[t]];
      out[LORA_FIELD[t]] = f32Tensor([w.rows, w.cols], mergeLinear(w, lin, s));
    }
    return out as unknown as LlamaLayer;
  });
  const mm = new LlamaModel(m.config, { ...m.weights, layers }, m.backend);
  mm.invFreq.set(m.invFreq);
  return mm;
}

