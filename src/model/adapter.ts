// PEFT LoRA adapters as model objects: the plain files from formats/peft.ts turned into LoraLinears and applied.

import { readPeftFiles } from '../formats/peft.js';
import type { LlamaConfig } from './config.js';
import { LlamaModel } from './llama.js';
import { checkLoraConfig, LoraLinear, withLoraBackend, type LoraAdapter, type LoraTarget } from './lora.js';
import { describe } from '../tensor/options.js';

/** The config fields an adapter's factors are checked against (loraDims and the layer count). */
const ADAPTER_DIMS = ['numLayers', 'hiddenSize', 'intermediateSize', 'numHeads', 'numKvHeads', 'headDim'] as const satisfies readonly (keyof LlamaConfig)[];
const GET_CONFIG = `(await openModel(path)).model.config or (await loadModel(path)).config`;

/** readPeftAdapter's arguments as JavaScript may pass them: a wrong one fails naming it, not deep in the reader. */
function checkAdapterArgs(dir: unknown, cfg: unknown): asserts cfg is LlamaConfig {
  if (typeof dir !== 'string' || dir === '') {
    throw new TypeError(`readPeftAdapter(dir, config): dir must be the path of a PEFT adapter directory (adapter_config.json and adapter_model.safetensors), got ${describe(dir)}`);
  }
  const at = `readPeftAdapter('${dir}', config)`;
  if (cfg === undefined || cfg === null) {
    throw new TypeError(`${at}: config is missing: pass the LlamaConfig of the base model the adapter is for, e.g. ${GET_CONFIG}`);
  }
  if (typeof cfg !== 'object' || Array.isArray(cfg)) throw new TypeError(`${at}: config must be the base model's LlamaConfig, got ${describe(cfg)}`);
  const c = cfg as Record<string, unknown>;
  // a model object in place of its config: say which field holds it
  const inner = c.config ?? (c.model as Record<string, unknown> | undefined)?.config;
  if (c.numLayers === undefined && inner !== null && typeof inner === 'object') {
    throw new TypeError(`${at}: config must be a LlamaConfig, got ${describe(cfg)}: pass its ${c.config !== undefined ? '.config' : '.model.config'}`);
  }
  for (const k of ADAPTER_DIMS) {
    const v = c[k];
    if (!(typeof v === 'number' && Number.isInteger(v) && v >= 1)) {
      throw new TypeError(`${at}: config.${k} must be a positive integer, got ${describe(v)}; pass the base model's LlamaConfig, e.g. ${GET_CONFIG}`);
    }
  }
}

/** Read a PEFT LoRA adapter for a model with config `cfg`; throws naming the file, key, expected vs got. */
export function readPeftAdapter(dir: string, cfg: LlamaConfig): LoraAdapter {
  checkAdapterArgs(dir, cfg);
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
  if (!(model instanceof LlamaModel)) throw new TypeError(`applyAdapter(model, dir): model must be a LlamaModel (e.g. (await openModel(path)).model), got ${describe(model)}`);
  const adapter = readPeftAdapter(dir, model.config);
  const m = new LlamaModel(model.config, model.weights, withLoraBackend(model.backend, model.weights.layers, adapter));
  m.invFreq.set(model.invFreq); // keeps any GGUF rope factors already folded in
  return m;
}
