// openStage: load one pipeline stage's share of a model (its layers' tensors only; embedding, norm and head stay as
// memory-mapped views that middle stages never read) with the stage plan every rank computes alike. Only rank 0 (the
// serving pipeline's embedding and head, headOn 'first') converts (--dtype) or repacks (prepareWeights) them.

import { selectBackend, type BackendName } from '../backend/select.js';
import { loadModel, type LoadOptions, type LoadedModel } from '../formats/load.js';
import type { LlamaConfig } from '../model/config.js';
import { LlamaModel, type LayerRange } from '../model/llama.js';
import type { Tensor } from '../tensor/tensor.js';
import { balancedStages, parseStages, StagePlanError } from './stages.js';

export interface StageOptions {
  readonly backend?: BackendName;
  readonly threads?: number;
  readonly load?: LoadOptions;
  readonly stages?: string; // --pipeline-stages 0-7,8-15; default balancedStages
}

export interface OpenedStage {
  readonly loaded: LoadedModel;
  readonly model: LlamaModel;
  readonly stages: readonly LayerRange[];
}

const LAYER = /^model\.layers\.(\d+)\./;

export function stagePlan(cfg: LlamaConfig, size: number, spec?: string, headOn: 'first' | 'last' = 'first'): LayerRange[] {
  const s = spec ? parseStages(spec, cfg.numLayers) : balancedStages(cfg, size, headOn);
  if (s.length !== size) throw new StagePlanError(`--pipeline-stages '${spec}' has ${s.length} stages, the job has ${size} ranks (mpirun -np)`);
  return s;
}

/** The stage of `rank` among `size` ranks. */
export async function openStage(path: string, rank: number, size: number, opts: StageOptions = {}): Promise<OpenedStage> {
  const backend = selectBackend(opts.backend, opts.threads);
  let stages: LayerRange[] | null = null;
  const keep = (name: string, cfg: LlamaConfig): boolean => {
    stages ??= stagePlan(cfg, size, opts.stages);
    const m = LAYER.exec(name);
    return !m || (Number(m[1]) >= stages[rank]!.start && Number(m[1]) < stages[rank]!.end);
  };
  // rank 0 embeds and projects to logits; another rank reads only its layers, so the embedding, final norm and head
  // stay the file's mapped views there: converting or repacking them would hold a copy never read (a bf16 embedding
  // repacked for the GEMV: 1 GB per stage at 8B)
  const own = (name: string): boolean => rank === 0 || LAYER.test(name);
  const loaded = await loadModel(path, { ...opts.load, keep, convertIf: own });
  stages ??= stagePlan(loaded.config, size, opts.stages);
  const tensors = loaded.tensors as Map<string, Tensor>;
  const mine = new Map([...tensors].filter(([name]) => own(name)));
  // inference weights in the layout this backend decodes fastest, as openModel does (one process and stages alike)
  backend.prepareWeights?.(mine);
  for (const [name, t] of mine) tensors.set(name, t);
  const model = LlamaModel.fromTensors(loaded.config, loaded.tensors, backend, loaded.ropeFreqFactors, stages[rank]);
  return { loaded, model, stages };
}
