// Engine protocol: the plain-data messages between the HTTP side and the engine worker thread.

import type { SamplingParams } from '../model/sampler.js';
import type { AdapterInfo } from './adapters.js';

export type { AdapterInfo } from './adapters.js';
import type { ConstraintSpec } from './constrained/constraint.js';

export type { ConstraintSpec } from './constrained/constraint.js';

/** Sampling as plain data (logit bias as a record so it can cross a worker boundary). */
export type SamplingSpec = Omit<SamplingParams, 'logitBias'> & { readonly logitBias: Readonly<Record<string, number>> | null };

export interface GenerateRequest {
  readonly kind: 'generate';
  readonly id: string; // unique per request
  readonly promptIds: readonly number[];
  readonly sampling: SamplingSpec;
  readonly maxTokens: number; // ≥ 1; prompt + maxTokens ≤ context window (checked by the caller and again by the engine)
  readonly n: number; // completions sharing the prompt's KV blocks
  readonly stop: readonly string[]; // stop strings (may span tokens); the matched text is not returned (unless includeStopStr)
  readonly stopTokenIds: readonly number[]; // in addition to the model's eos ids unless ignoreEos
  readonly ignoreEos: boolean;
  /** vLLM's min_tokens: before this many output tokens, the stop ids (EOS unless ignoreEos, stopTokenIds) are masked and no stop string counts; default 0. */
  readonly minTokens?: number;
  /** vLLM's include_stop_str_in_output: the matched stop string (or a stop token's text) stays in the text; default false. */
  readonly includeStopStr?: boolean;
  /** vLLM's allowed_token_ids: only these ids may be sampled; null / absent → any. */
  readonly allowedTokenIds?: readonly number[] | null;
  /** vLLM's bad_words as token id sequences: a sequence's last id is masked where the output ends with the rest of it. */
  readonly badWordIds?: readonly (readonly number[])[];
  readonly logprobs: number | null; // top-K logprobs per generated token; null → none
  readonly promptLogprobs: number | null; // top-K logprobs per prompt token; null → none
  readonly skipSpecialTokens: boolean;
  readonly speculative?: boolean; // false → decode this request without speculation (a prediction too); default: the engine's setting
  /** Predicted Outputs: token ids the output is expected to repeat (no BOS), drafts for speculative decoding, with or without the engine's proposer. */
  readonly prediction?: readonly number[] | null;
  readonly priority?: RequestPriority; // default 'interactive'
  readonly adapter?: string | null; // name of a served LoRA adapter; absent / null → the base model
  readonly constraint?: ConstraintSpec | null; // constrained decoding (JSON schema, regex, choice, tool calls); speculation masks each verified row
}

export interface EmbedRequest {
  readonly kind: 'embed';
  readonly id: string;
  readonly promptIds: readonly number[];
  readonly pooling: 'mean' | 'last';
  readonly poolFrom?: number; // mean pooling starts at this prompt position (1: leave out BOS); default 0
  readonly normalize: boolean;
  readonly priority?: RequestPriority; // default 'interactive'
  readonly adapter?: string | null; // as for GenerateRequest
}

/** 'batch' requests fill spare capacity: admitted after every waiting interactive one, preempted first. */
export type RequestPriority = 'interactive' | 'batch';

export type EngineRequest = GenerateRequest | EmbedRequest;

export interface LogprobEntry {
  readonly token: number;
  readonly logprob: number;
  readonly top: ReadonlyArray<readonly [number, number]>; // [token id, logprob], best first
}

export type FinishReason = 'stop' | 'length' | 'abort';

/** Incremental output of one completion (index < n) of a generate request. */
export interface GenerateOutput {
  readonly kind: 'generate';
  readonly id: string;
  readonly index: number; // which of the n completions
  readonly tokenIds: readonly number[]; // new tokens since the last output
  readonly text: string; // new stable text (UTF-8 safe, stop strings removed)
  readonly logprobs: readonly LogprobEntry[] | null; // one per new token
  readonly finishReason: FinishReason | null; // set on the last output of this completion
  readonly stopReason: string | number | null; // the stop string or stop token that ended it
  readonly usage: {
    readonly promptTokens: number; readonly cachedTokens: number; readonly completionTokens: number;
    /** With a prediction: its draft tokens the verifier kept that are in the output, and the rest it verified. */
    readonly acceptedPredictionTokens?: number; readonly rejectedPredictionTokens?: number;
  };
  readonly promptLogprobs: ReadonlyArray<LogprobEntry | null> | null; // only on the first output of index 0
}

export interface EmbedOutput {
  readonly kind: 'embed';
  readonly id: string;
  readonly embedding: Float32Array; // (D)
  readonly promptTokens: number;
}

export interface EngineError {
  readonly kind: 'error';
  readonly id: string;
  readonly status: 400 | 404 | 429 | 500 | 503; // HTTP status the server should answer with
  readonly message: string;
}

export type EngineOutput = GenerateOutput | EmbedOutput | EngineError;

/** Counters and gauges the engine publishes for /metrics and /health. */
export interface EngineStats {
  readonly running: number;
  readonly waiting: number;
  readonly kvBlocksTotal: number;
  readonly kvBlocksUsed: number;
  readonly kvBlocksCached: number; // free but holding reusable prefix blocks
  readonly blockSize: number;
  readonly prefixQueriedTokens: number; // cumulative prompt tokens looked up in the prefix cache
  readonly prefixHitTokens: number; // cumulative prompt tokens served from it
  readonly preemptions: number;
  readonly swappedOut?: number; // of those, preemptions whose KV was swapped out (resumed without recompute)
  readonly swapSpaceUsed?: number; // bytes of swap space holding preempted sequences' KV now
  readonly promptTokens: number; // cumulative prompt tokens computed
  readonly generatedTokens: number;
  readonly steps: number;
  readonly specDraftTokens?: number; // cumulative draft tokens proposed and verified (speculative decoding)
  readonly specAcceptedTokens?: number; // of those, accepted
  readonly specSteps?: number; // cumulative sequence-steps that verified a draft
  /** What drafting costs as measured (speculation with measured costs; absent before a fit): seconds a verify row adds
   * to a step, a drafting sequence adds besides its rows, the proposer takes per draft token; the acceptance pooled
   * over recent sequences (null before enough verifies); running sequences whose drafts are paused. */
  readonly specCosts?: { rowSeconds: number; jumpSeconds: number; promptTokenSeconds: number; draftTokenSeconds: number; pooledAcceptance: number | null; pausedSeqs: number };
  readonly loraRunning?: readonly string[]; // adapters of running requests, by name, sorted
  readonly loraWaiting?: readonly string[]; // adapters of waiting requests (queued or waiting for a LoRA slot)
  readonly maxLoras?: number; // distinct adapters one step may run
}

/** What the engine reports once loaded. */
export interface EngineInfo {
  readonly modelId: string;
  readonly maxModelLen: number; // context window
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly eosTokenIds: readonly number[];
  readonly kvDtype: string;
  readonly kvBlocks: number;
  readonly blockSize: number;
  readonly maxNumSeqs: number; // sequences running at once: the most completions (n) one request may ask for
  readonly maxBatchSeqs?: number; // the batch lane's width: low-priority sequences at once while no interactive one runs
  readonly maxQueue?: number; // requests that may wait beyond the free sequence slots (--max-queue); more get 429
  readonly kvTokens: number; // tokens of KV that fit in the budget
  readonly maxRequestTokens: number; // longest prompt + output one request can ever hold: min(maxModelLen, kvTokens)
  readonly speculative?: { readonly method: string; readonly numSpeculativeTokens: number } | null; // proposer name and K
  readonly adapters?: readonly AdapterInfo[]; // LoRA adapters served at start (see EngineClient.adapters for now)
  readonly maxLoras?: number; // distinct adapters in one step; requests for more wait
  readonly swapSpace?: number; // bytes for preempted sequences' KV (--swap-space); 0: preemption recomputes
  /** The weights as the engine holds them: the first layer's q projection, the embedding and the head ('bf16' after
   *  --dtype bf16 on an f32 checkpoint; 'fp8_e4m3' after --dtype fp8), and the --dtype conversion asked for (null: as
   *  stored). A pipeline's rank 0 adds `stages`: each stage's layers and first linear's dtype (rank 0's entry also
   *  the embedding and head it holds), as the stage processes told it at start-up. */
  readonly weights?: {
    readonly linear: string | null; readonly embedding: string; readonly head: string; readonly converted: 'fp8' | 'bf16' | null;
    readonly stages?: readonly { readonly rank: number; readonly layers: string; readonly linear: string | null; readonly embedding?: string; readonly head?: string }[];
  };
  /** The kernels the forward runs on, as the same weights can answer differently on each (system_fingerprint reads it):
   *  the backend; for native the dispatched ISA, the AMX tile paths when active, and the bf16 dot product the AVX-512
   *  decode GEMVs use (only for bf16 / fp8 weights, the only ones it multiplies), and whether the AVX-512 repacked
   *  GEMV also takes prefill rows past the packed GEMM's (a host fact: zmm FMAs a cycle). Rank 0's, with pipeline
   *  stages. */
  readonly kernels?: {
    readonly backend: 'native' | 'reference'; readonly isa: string | null;
    readonly amx: { readonly mode: string; readonly int8: boolean; readonly attn: boolean } | null; readonly bf16Dot: string | null;
    readonly r16Wide: boolean | null;
  };
}

/** The main-thread handle on the engine worker (src/engine/client.ts implements it). */
export interface EngineClient {
  readonly info: EngineInfo;
  /** Stream outputs of one request; the iterator ends after every completion has a finishReason (or an error). */
  generate(req: Omit<GenerateRequest, 'kind'>, signal?: AbortSignal): AsyncIterable<GenerateOutput>;
  embed(req: Omit<EmbedRequest, 'kind'>): Promise<EmbedOutput>;
  /** Frees the request's blocks at the next step. */
  abort(id: string): void;
  stats(): Promise<EngineStats>;
  /** Stop taking requests; finish running ones within graceMs, then abort the rest and end the worker. */
  shutdown(graceMs: number): Promise<void>;
  /** LoRA adapters served now (by name). */
  adapters?(): readonly AdapterInfo[];
  /** Read a PEFT adapter directory in the engine and serve it as `name` (a new version if the name exists). */
  loadAdapter?(name: string, path: string): Promise<AdapterInfo>;
  /** Stop serving `name`; requests already running finish with it. Rejects (404) when there is none. */
  unloadAdapter?(name: string): Promise<void>;
  /** Why the engine stopped serving on its own (its worker crashed or exited), or null while it serves. */
  failure(): string | null;
}

/** Thrown by EngineClient methods for a request the engine refused (status tells the server what to answer). */
export class EngineRequestError extends Error {
  constructor(readonly status: 400 | 404 | 429 | 500 | 503, message: string) {
    super(message);
  }
}

/** The engine's defaults for options not given (src/engine/engine.ts applies them; the CLI reads them without loading the engine). */
export const ENGINE_DEFAULTS = { blockSize: 16, maxBatchedTokens: 512, maxNumSeqs: 64, maxQueue: 1024, kvFreeFraction: 0.3, swapSpaceMax: 4 * 2 ** 30 } as const;
