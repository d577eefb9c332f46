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
import type { LayerRange, LlamaModel } from '../model/llama.js';
import type { EngineInfo } from '../engine/protocol.js';
import { DTYPE_CODE, type DType } from '../tensor/tensor.js';
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

/** What one stage's process holds: its layers ('3-5'), its first layer's q projection's dtype; rank 0 (which embeds
 *  and samples) also the embedding and head. */
export interface StageWeights { readonly rank: number; readonly layers: string; readonly linear: string | null; readonly embedding?: string; readonly head?: string }

const DTYPE_OF = new Map<number, DType>(Object.entries(DTYPE_CODE).map(([d, c]) => [c, d as DType]));

/**
 * Every rank once at start-up, after agreeBlocks (the same collective order everywhere): each stage's linear dtype
 * reaches every rank in one allreduce (rank r fills slot r with its DTYPE_CODE + 1, the others 0; max), so rank 0's
 * /v1/floe/info can say what the other processes hold.
 */
export async function shareStageWeights(tr: Transport, model: LlamaModel, stages: readonly LayerRange[]): Promise<StageWeights[]> {
  const mine = new Float64Array(tr.size); // (ranks) dtype code + 1, 0: no layer
  const wq = model.weights.layers[0]?.wq;
  if (wq) mine[tr.rank] = DTYPE_CODE[wq.dtype] + 1;
  const all = await tr.allreduce(mine, 'max');
  return stages.map((s, rank) => ({ rank, layers: formatStages([s]), linear: DTYPE_OF.get(all[rank]! - 1) ?? null }));
}

export interface PipelineRank0 {
  readonly model: LlamaModel;
  readonly tokenizer: Tokenizer | null;
  readonly driver: PipelineDriver;
  readonly transport: Transport;
  readonly kvBlocks: number;
  readonly stages: string;
  /** engine.weights: rank 0's (the first layer's linear, embedding, head) and every stage's linear dtype. */
  readonly weights: NonNullable<EngineInfo['weights']>;
}

/** Rank 0 (inside the engine worker): the first stage, the driver and the KV block count every stage can hold. */
export async function joinAsRank0(o: ServeStageOptions): Promise<PipelineRank0> {
  const tr = await MpiTransport.init();
  try {
    if (tr.rank !== 0) throw new Error(`the serving engine runs on rank 0, not rank ${tr.rank}`);
    const st = await openStage(o.model, 0, tr.size, o);
    const kvBlocks = await agreeBlocks(tr, stageKvBlocks(st.model, o));
    const w = st.model.weights;
    const [first, ...rest] = await shareStageWeights(tr, st.model, st.stages);
    const stages = [{ ...first!, embedding: w.embed.dtype, head: w.head.dtype }, ...rest];
    const weights = { linear: first!.linear, embedding: w.embed.dtype, head: w.head.dtype, converted: o.load?.dtype ?? null, stages };
    let tokenizer: Tokenizer | null = null;
    if (st.loaded.format === 'gguf') tokenizer = st.loaded.ggufMetadata ? tokenizerFromGguf(st.loaded.ggufMetadata) : null;
    else if (statSync(o.model).isDirectory()) tokenizer = await loadTokenizer(o.model);
    return { model: st.model, tokenizer, driver: new PipelineDriver(tr, st.model), transport: tr, kvBlocks, stages: formatStages(st.stages), weights };
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
    await shareStageWeights(tr, st.model, st.stages);
    await runStage(tr, st.model);
    st.loaded.dispose();
  } catch (e) {
    await tr.abort(e instanceof StagePlanError ? 2 : 1, `floe serve: pipeline rank ${tr.rank} failed: ${(e as Error).message}; aborting the job`);
  }
  await tr.close();
}
