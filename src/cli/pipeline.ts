// Pipeline-parallel runs of `floe generate` / `floe serve` under mpirun: rank 0 runs the command, the others are stages.

import { statSync } from 'node:fs';
import type { BackendName } from '../backend/select.js';
import type { LoadOptions } from '../formats/load.js';
import { tokenizerFromGguf } from '../formats/gguf-tokenizer.js';
import { loadTokenizer, type Tokenizer } from '../formats/tokenizer.js';
import type { OpenedModel } from '../model/open.js';
import { launchedByMpirun, MPI_INSTALL_HINT } from '../parallel/mpi-addon.js';
import { PipelineDriver, runStage } from '../parallel/pipeline.js';
import { openStage } from '../parallel/stage-model.js';
import { formatStages, StagePlanError } from '../parallel/stages.js';
import { MpiTransport, type Transport } from '../parallel/transport.js';
import { RunSetupError } from '../train/checkpoint.js';
import { optNum, UsageError } from './args.js';

export const PIPELINE_FLAGS = { 'pipeline-parallel-size': { type: 'string' }, 'pipeline-stages': { type: 'string' } } as const;

export interface PipelineFlags { readonly size: number; readonly stages: string | undefined }

/** The flags, or null for a single-process run (no flag, or size 1 without stages). */
export function pipelineFlags(v: { 'pipeline-parallel-size'?: string; 'pipeline-stages'?: string }): PipelineFlags | null {
  const stages = v['pipeline-stages'];
  if (stages !== undefined && !/^\s*\d+(\s*-\s*\d+)?\s*(,\s*\d+(\s*-\s*\d+)?\s*)*$/.test(stages)) {
    throw new UsageError(`--pipeline-stages expects contiguous FIRST-LAST layer ranges like 0-7,8-15, got '${stages}'`);
  }
  const given = optNum(v['pipeline-parallel-size'], 'pipeline-parallel-size', true, { min: 1 });
  const ranges = stages === undefined ? undefined : stages.split(',').length;
  if (given !== undefined && ranges !== undefined && given !== ranges) {
    throw new UsageError(`--pipeline-stages '${stages}' has ${ranges} stages but --pipeline-parallel-size is ${given}: give one layer range per stage`);
  }
  const size = given ?? ranges ?? 1;
  if (size === 1 && stages !== undefined) {
    throw new UsageError(`--pipeline-stages '${stages}' is one stage: a pipeline needs at least 2 (one range per rank of \`mpirun -np N\`); for one process leave the flag out`);
  }
  if (size === 1) return null;
  if (!launchedByMpirun()) {
    throw new UsageError(`--pipeline-parallel-size ${size} runs one process per stage: launch with \`mpirun -np ${size} floe ...\` (${MPI_INSTALL_HINT})`);
  }
  const world = Number(process.env.OMPI_COMM_WORLD_SIZE);
  if (world !== size) {
    const what = given !== undefined ? `--pipeline-parallel-size ${size}` : `--pipeline-stages '${stages}' (${size} stages)`;
    throw new UsageError(`${what} but mpirun started ${world} ranks (mpirun -np ${size})`);
  }
  return { size, stages };
}

export type PipelineJob =
  | { readonly role: 'driver'; readonly opened: OpenedModel; readonly driver: PipelineDriver; readonly transport: Transport; readonly stages: string }
  | { readonly role: 'stage'; readonly exitCode: number };

/** Join the MPI job: rank 0 gets its stage model and a driver; another rank serves its stage until rank 0 stops. */
export async function joinPipeline(
  path: string, flags: PipelineFlags, opts: { backend?: BackendName; threads?: number; load?: LoadOptions },
): Promise<PipelineJob> {
  const t0 = performance.now();
  const tr = await MpiTransport.init();
  try {
    const st = await openStage(path, tr.rank, tr.size, { ...opts, stages: flags.stages });
    if (tr.rank !== 0) {
      await runStage(tr, st.model);
      st.loaded.dispose();
      await tr.close();
      return { role: 'stage', exitCode: 0 };
    }
    let tokenizer: Tokenizer | null = null;
    let tokenizerError: string | null = null;
    try {
      if (st.loaded.format === 'gguf') tokenizer = st.loaded.ggufMetadata ? tokenizerFromGguf(st.loaded.ggufMetadata) : null;
      else if (statSync(path).isDirectory()) tokenizer = await loadTokenizer(path);
    } catch (e) {
      tokenizerError = (e as Error).message;
    }
    const opened: OpenedModel = { loaded: st.loaded, model: st.model, tokenizer, tokenizerError, generation: st.loaded.generation, loadMs: performance.now() - t0 };
    return { role: 'driver', opened, driver: new PipelineDriver(tr, st.model), transport: tr, stages: formatStages(st.stages) };
  } catch (e) {
    return failJob(tr, e);
  }
}

/** An operator's mistake found once the job runs (stage layout, output dir, resume flags): exit 2, as in one process. */
export function isUsageError(e: unknown): boolean {
  return e instanceof UsageError || e instanceof StagePlanError || e instanceof RunSetupError;
}

/** A rank that cannot go on takes the whole job down (the others would wait for it forever); mpirun exits with the code. */
export async function failJob(tr: Transport, e: unknown): Promise<never> {
  const msg = e instanceof Error ? e.message : String(e);
  const usage = isUsageError(e);
  // --json: the error as one process prints it, a JSON line on stdout (written before the abort ends this rank)
  if (process.argv.includes('--json')) {
    process.stdout.write(JSON.stringify({ error: { message: `pipeline rank ${tr.rank} of ${tr.size}: ${msg}`, type: usage ? 'usage_error' : 'error' } }) + '\n');
  }
  return tr.abort(usage ? 2 : 1, `floe: pipeline rank ${tr.rank} of ${tr.size} failed: ${msg}; aborting the job`);
}
