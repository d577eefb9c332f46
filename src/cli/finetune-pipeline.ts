// `mpirun -np P floe finetune --pipeline-parallel-size P`: one stage per rank; rank 0 prints the summary.

import type { FinetuneOptions, FinetuneSummary } from '../train/trainer.js';
import { optNum, UsageError } from './args.js';
import { failJob, type PipelineFlags } from './pipeline.js';

export const FINETUNE_PIPELINE_FLAGS = { 'micro-batches': { type: 'string' } } as const;

/** --micro-batches M, checked; only with --pipeline-parallel-size (one process: --grad-accum). */
export function microBatchesFlag(v: string | undefined, pp: PipelineFlags | null): number | undefined {
  const mb = optNum(v, 'micro-batches', true, { min: 1 });
  if (mb !== undefined && !pp) throw new UsageError('--micro-batches splits a step over pipeline stages: give --pipeline-parallel-size (one process: --grad-accum)');
  return mb;
}

/** Run this rank's stage; null on ranks other than 0 (they print nothing). A failing rank ends the whole job. */
export async function finetunePipelineCmd(o: FinetuneOptions, pp: PipelineFlags, mb: number | undefined): Promise<FinetuneSummary | null> {
  if (o.full) throw new UsageError('--pipeline-parallel-size trains LoRA adapters: --full is not supported with it');
  const { MpiTransport } = await import('../parallel/transport.js');
  const { checkPipelineFinetune, finetunePipeline } = await import('../parallel/train-stage.js');
  const po = { ...o, stages: pp.stages, microBatches: mb };
  // flags a pipeline cannot take are usage errors on every rank before the job starts (exit 2, as in one process)
  try { checkPipelineFinetune(po); } catch (e) { throw new UsageError((e as Error).message); }
  const tr = await MpiTransport.init();
  try {
    const s = await finetunePipeline({ ...po, progress: o.progress && tr.rank === 0 }, tr);
    await tr.close();
    return tr.rank === 0 ? s : null;
  } catch (e) {
    return failJob(tr, e);
  }
}
