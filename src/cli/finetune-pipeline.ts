// `mpirun -np P floe finetune --pipeline-parallel-size P`: one stage per rank; rank 0 prints the summary.

import type { FinetuneOptions, FinetuneSummary } from '../train/trainer.js';
import { optNum, UsageError } from './args.js';
import { failJob, type PipelineFlags } from './pipeline.js';

export const FINETUNE_PIPELINE_FLAGS = { 'micro-batches': { type: 'string' } } as const;

/** Run this rank's stage; null on ranks other than 0 (they print nothing). A failing rank ends the whole job. */
export async function finetunePipelineCmd(o: FinetuneOptions, pp: PipelineFlags, microBatches: string | undefined): Promise<FinetuneSummary | null> {
  const mb = optNum(microBatches, 'micro-batches', true, { min: 1 });
  if (o.full) throw new UsageError('--pipeline-parallel-size trains LoRA adapters: --full is not supported with it');
  const { MpiTransport } = await import('../parallel/transport.js');
  const { finetunePipeline } = await import('../parallel/train-stage.js');
  const tr = await MpiTransport.init();
  try {
    const s = await finetunePipeline({ ...o, stages: pp.stages, microBatches: mb, progress: o.progress && tr.rank === 0 }, tr);
    await tr.close();
    return tr.rank === 0 ? s : null;
  } catch (e) {
    return failJob(tr, e);
  }
}
