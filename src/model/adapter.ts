// PEFT LoRA adapters as model objects: the plain files from formats/peft.ts turned into LoraLinears and applied.

import { readPeftFiles } from '../formats/peft.js';
import type { LlamaConfig } from './config.js';
import { LlamaModel } from './llama.js';
import { checkLoraConfig, LoraLinear, withLoraBackend, type LoraAdapter, type LoraTarget } from './lora.js';

/** Read a PEFT LoRA adapter for a model with config `cfg`; throws naming the file, key, expected vs got. */
export function readPeftAdapter(dir: string, cfg: LlamaConfig): LoraAdapter {
  const plain = readPeftFiles(dir, cfg);
  checkLoraConfig(plain.config);
  const layers = plain.layers.map((lay) => {
    const out: Partial<Record<LoraTarget, LoraLinear>> = {};
    for (const [t, lin] of Object.entries(lay) as [LoraTarget, NonNullable<(typeof lay)[LoraTarget]>][]) out[t] = new LoraLinear(lin.N, lin.C, lin.rank, lin.a, lin.b);
    return out;
  });
  return { config: plain.config, layers };
}

/** The same model with an adapter applied at every adapted matmul (base weights untouched, nothing merged). */
export function applyAdapter(model: LlamaModel, dir: string): LlamaModel {
  const adapter = readPeftAdapter(dir, model.config);
  const m = new LlamaModel(model.config, model.weights, withLoraBackend(model.backend, model.weights.layers, adapter));
  m.invFreq.set(model.invFreq); // keeps any GGUF rope factors already folded in
  return m;
}
