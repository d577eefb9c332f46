// Pipeline-parallel serving: rank 0's engine worker joins the MPI job as the first stage (scheduler, sampling, HTTP
// stay there); ranks ≥ 1 run their stage. Every stage sizes its KV pool from its own budget and the job takes the least.
// A stage layout that does not fit the model ends the job with exit 2 (a usage error, as floe generate's).

import { freemem } from 'node:os';
import { statSync } from 'node:fs';
import type { KvDType } from '../backend/backend.js';
import type { BackendName } from '../backend/select.js';
import type { LoadOptions } from '../formats/load.js';
import { tokenizerFromGguf } from '../formats/gguf-tokenizer.js';
import { loadTokenizer, type Tokenizer } from '../formats/tokenizer.js';
import { defaultKvDtype } from '../model/generate.js';
import { KvCache } from '../model/kv-cache.js';
import type { LlamaModel } from '../model/llama.js';
import { PipelineDriver, runStage } from './pipeline.js';
import { openStage } from './stage-model.js';
import { formatStages, StagePlanError } from './stages.js';
import { MpiTransport, type Transport } from './transport.js';

export interface ServeStageOptions {
  readonly model: string;
  readonly stages?: string;
  readonly backend?: BackendName;
  readonly threads?: number;
  readonly load?: LoadOptions;
  readonly kvCacheMemory?: number; // bytes per stage; default 0.3 × free RAM capped at maxNumSeqs full contexts
  readonly kvDtype?: KvDType;
  readonly blockSize?: number; // default 16
  readonly maxNumSeqs?: number; // default 64
}

/** KV blocks this stage can hold: its budget over its own layers' bytes per block. */
export function stageKvBlocks(model: LlamaModel, o: ServeStageOptions): number {
  const c = model.config;
  const perToken = KvCache.bytesPerToken(model.weights.layers.length, c.numKvHeads, c.headDim, o.kvDtype ?? defaultKvDtype(model));
  const budget = o.kvCacheMemory ?? Math.min(Math.floor(0.3 * freemem()), (o.maxNumSeqs ?? 64) * c.maxPositionEmbeddings * perToken);
  return Math.floor(budget / (perToken * (o.blockSize ?? 16)));
}

async function agreeBlocks(tr: Transport, mine: number): Promise<number> {
  const least = (await tr.allreduce(Float64Array.of(mine), 'min'))[0]!;
  if (least < 1) throw new RangeError(`a pipeline stage's KV budget holds less than one block (--kv-cache-memory)`);
  return least;
}

export interface PipelineRank0 {
  readonly model: LlamaModel;
  readonly tokenizer: Tokenizer | null;
  readonly driver: PipelineDriver;
  readonly transport: Transport;
  readonly kvBlocks: number;
  readonly stages: string;
}

/** Rank 0 (inside the engine worker): the first stage, the driver and the KV block count every stage can hold. */
export async function joinAsRank0(o: ServeStageOptions): Promise<PipelineRank0> {
  const tr = await MpiTransport.init();
  try {
    if (tr.rank !== 0) throw new Error(`the serving engine runs on rank 0, not rank ${tr.rank}`);
    const st = await openStage(o.model, 0, tr.size, o);
    const kvBlocks = await agreeBlocks(tr, stageKvBlocks(st.model, o));
    let tokenizer: Tokenizer | null = null;
    if (st.loaded.format === 'gguf') tokenizer = st.loaded.ggufMetadata ? tokenizerFromGguf(st.loaded.ggufMetadata) : null;
    else if (statSync(o.model).isDirectory()) tokenizer = await loadTokenizer(o.model);
    return { model: st.model, tokenizer, driver: new PipelineDriver(tr, st.model), transport: tr, kvBlocks, stages: formatStages(st.stages) };
  } catch (e) {
    return tr.abort(e instanceof StagePlanError ? 2 : 1, `floe serve: pipeline rank 0 failed: ${(e as Error).message}; aborting the job`);
  }
}

/** A rank ≥ 1 of `floe serve`: its stage until rank 0 stops. */
export async function serveStage(o: ServeStageOptions): Promise<void> {
  const tr = await MpiTransport.init();
  try {
    const st = await openStage(o.model, tr.rank, tr.size, o);
    await agreeBlocks(tr, stageKvBlocks(st.model, o));
    await runStage(tr, st.model);
    st.loaded.dispose();
  } catch (e) {
    await tr.abort(e instanceof StagePlanError ? 2 : 1, `floe serve: pipeline rank ${tr.rank} failed: ${(e as Error).message}; aborting the job`);
  }
  await tr.close();
}
