// openModel: load an HF directory or .gguf file into a runnable LlamaModel with its tokenizer.

import { statSync } from 'node:fs';
import { selectBackend, type BackendName } from '../backend/select.js';
import type { GenerationDefaults } from '../formats/hf-config.js';
import { loadModel, type LoadedModel, type LoadOptions } from '../formats/load.js';
import { loadTokenizer, type Tokenizer } from '../formats/tokenizer.js';
import { tokenizerFromGguf } from '../formats/gguf-tokenizer.js';
import { LlamaModel } from './llama.js';

export interface OpenOptions {
  readonly backend?: BackendName;
  readonly threads?: number;
  readonly load?: LoadOptions; // e.g. { dtype: 'fp8' }: quantize linear weights while loading
}

export interface OpenedModel {
  readonly loaded: LoadedModel;
  readonly model: LlamaModel;
  readonly tokenizer: Tokenizer | null;
  /** Sampling defaults from generation_config.json (only the keys it sets); explicit request values override. */
  readonly generation: GenerationDefaults;
  readonly loadMs: number;
}

export async function openModel(path: string, opts: OpenOptions = {}): Promise<OpenedModel> {
  const t0 = performance.now();
  const backend = selectBackend(opts.backend, opts.threads);
  const loaded = await loadModel(path, opts.load);
  const model = LlamaModel.fromTensors(loaded.config, loaded.tensors, backend, loaded.ropeFreqFactors);
  let tokenizer: Tokenizer | null = null;
  if (loaded.format === 'gguf') tokenizer = loaded.ggufMetadata ? tokenizerFromGguf(loaded.ggufMetadata) : null;
  else if (statSync(path).isDirectory()) tokenizer = await loadTokenizer(path);
  return { loaded, model, tokenizer, generation: loaded.generation, loadMs: performance.now() - t0 };
}
