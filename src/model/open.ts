// openModel: load an HF directory or .gguf file into a runnable LlamaModel with its tokenizer.

import { statSync } from 'node:fs';
import { selectBackend, type BackendName } from '../backend/select.js';
import type { GenerationDefaults } from '../formats/hf-config.js';
import { loadModel, type LoadedModel, type LoadOptions } from '../formats/load.js';
import { loadTokenizer, type Tokenizer } from '../formats/tokenizer.js';
import { tokenizerFromGguf } from '../formats/gguf-tokenizer.js';
import type { Tensor } from '../tensor/tensor.js';
import { LlamaModel } from './llama.js';
import { LayerStream, type OffloadOptions } from './offload.js';
import { checkOptions, type OptionKeys } from '../tensor/options.js';

export interface OpenOptions {
  readonly backend?: BackendName;
  readonly threads?: number;
  readonly load?: LoadOptions; // e.g. { dtype: 'fp8' | 'bf16' }: convert weights while loading
  /** Stream a share of the layers from disk (--weights-memory / --offload-ratio); when no layer is streamed, the model
   *  opens resident (model.layerStream null) with its weights repacked as without the option. */
  readonly offload?: OffloadOptions;
  /** A tokenizer floe cannot build leaves `tokenizer` null and its error in `tokenizerError` instead of throwing. */
  readonly tokenizerOptional?: boolean;
}

export interface OpenedModel {
  readonly loaded: LoadedModel;
  readonly model: LlamaModel;
  readonly tokenizer: Tokenizer | null;
  /** Sampling defaults from generation_config.json (only the keys it sets); explicit request values override. */
  readonly generation: GenerationDefaults;
  /** Why the tokenizer could not be built (only with tokenizerOptional); else null. */
  readonly tokenizerError: string | null;
  readonly loadMs: number;
}

const OPEN_OPTIONS = { backend: true, threads: true, load: true, offload: true, tokenizerOptional: true } as const satisfies OptionKeys<OpenOptions>;

export async function openModel(path: string, opts: OpenOptions = {}): Promise<OpenedModel> {
  const t0 = performance.now();
  checkOptions('openModel', opts, OPEN_OPTIONS);
  const backend = selectBackend(opts.backend, opts.threads);
  // with streaming, the dtype conversion happens in LayerStream.open, one streamed tensor at a time
  const d = opts.load?.dtype;
  const convert = opts.offload && (d === 'fp8' || d === 'bf16') ? { dtype: d, fp8Block: opts.load!.fp8Block } : undefined;
  const loaded = await loadModel(path, convert ? { ...opts.load, dtype: undefined } : opts.load);
  let stream = opts.offload ? LayerStream.open(loaded, { ...opts.offload, convert }) : null;
  // a plan that streams no layer (every one fits the budget) leaves a resident model: no stream, so the weights get the decode layout
  if (stream && stream.stats.streamedLayers === 0) { stream.dispose(); stream = null; }
  // inference weights in the layout this backend decodes fastest (not with streamed layers: those are re-read from the file)
  if (!stream) backend.prepareWeights?.(loaded.tensors as Map<string, Tensor>);
  const model = LlamaModel.fromTensors(loaded.config, loaded.tensors, backend, loaded.ropeFreqFactors);
  if (stream) model.attachStream(stream);
  let tokenizer: Tokenizer | null = null;
  let tokenizerError: string | null = null;
  try {
    if (loaded.format === 'gguf') tokenizer = loaded.ggufMetadata ? tokenizerFromGguf(loaded.ggufMetadata) : null;
    else if (statSync(path).isDirectory()) tokenizer = await loadTokenizer(path);
  } catch (e) {
    if (!opts.tokenizerOptional) throw e;
    tokenizerError = (e as Error).message;
  }
  return { loaded, model, tokenizer, tokenizerError, generation: loaded.generation, loadMs: performance.now() - t0 };
}
