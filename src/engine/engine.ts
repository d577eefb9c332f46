// Engine: the serving loop in-process (step → forward → sample → emit): requests, completions, stops, forks.

import { tokenMasks, type TokenMasks } from '../model/token-masks.js';
import { freemem } from 'node:os';
import type { KvDType } from '../backend/backend.js';
import { IncrementalDetokenizer, StopStringMatcher, type Decoder } from '../formats/detokenize.js';
import { defaultKvDtype } from '../model/generate.js';
import { KvCache, KvSwapSpace } from '../model/kv-cache.js';
import type { LlamaModel } from '../model/llama.js';
import { DEFAULT_SAMPLING, Sampler, type SamplingParams, TokenCounts } from '../model/sampler.js';
import {
  AdaptiveK, checkDraftTokens, checkProposal, createProposer, DEFAULT_NUM_SPECULATIVE_TOKENS, type Proposer, type ProposeRequest, SPEC_COSTS, SpecCosts,
  type SpeculativeSpec,
} from '../model/speculation.js';
import { DEFAULT_NUM_PREDICTION_TOKENS, PredictionK, PredictionTracker, wordStartTable } from '../model/prediction.js';
import { AdapterTable, DEFAULT_MAX_LORAS, type AdapterInfo, type LoadedAdapter } from './adapters.js';
import { KvManager } from './block-pool.js';
import {
  ENGINE_DEFAULTS, EngineRequestError, type EmbedRequest, type EngineInfo, type EngineOutput, type EngineRequest, type EngineStats,
  type FinishReason, type GenerateOutput, type GenerateRequest, type LogprobEntry, type SamplingSpec,
} from './protocol.js';
import { ConstraintCache } from './constrained/constraint.js';
import { SchemaError } from './constrained/json-schema.js';
import { RegexError } from './constrained/regex.js';
import { tokenBytes, type TokenVocab } from './constrained/token-mask.js';
import { ModelRunner, type RemoteForward, type RunnerSeq, type SampledToken, type SamplingSlot, type SeqResult } from './runner.js';
import { Scheduler, type SchedSeq, type SchedulerOutput } from './scheduler.js';

export interface EngineOptions {
  readonly modelId?: string;
  readonly kvCacheMemory?: number; // bytes; default 0.3 × free RAM, capped at maxNumSeqs full contexts
  readonly kvDtype?: KvDType;
  readonly blockSize?: number; // L, default 16
  readonly maxBatchedTokens?: number; // token budget per step, default 512
  readonly maxNumSeqs?: number; // default 64
  /** The batch lane's width: low-priority sequences run up to this many at once while no interactive one is there (default maxNumSeqs). */
  readonly maxBatchSeqs?: number;
  readonly maxQueue?: number; // waiting requests beyond the free sequence slots (maxNumSeqs - running) are refused (429) past this; default 1024
  readonly prefixCaching?: boolean; // default true
  readonly extraEosIds?: readonly number[]; // e.g. the tokenizer's eos ids
  /** Speculative decoding for every request that does not opt out: 'ngram', 'suffix', a draft model or a Proposer. */
  readonly speculative?: SpeculativeSpec;
  readonly numSpeculativeTokens?: number; // K: most draft tokens per sequence and step; default 4
  /**
   * Cap each sequence's k where a draft token stops paying, at costs measured on this engine's decode steps (default
   * true; FLOE_SPEC_COSTS=0 turns the default off). Steps through pipeline stages (launchStep) are not measured.
   */
  readonly speculativeCosts?: boolean;
  /** Most draft tokens per step taken from a request's prediction (Predicted Outputs), with or without `speculative`; default 15. */
  readonly numPredictionTokens?: number;
  readonly maxLoras?: number; // distinct LoRA adapters in one step; requests for another wait; default 4
  readonly maxLoraRank?: number; // adapters of a higher rank are refused; default 64
  readonly maxCpuLoras?: number; // adapters kept in host memory (LRU; the rest are read again on demand); default no limit
  /** Pipeline parallelism: the forward pass continues on other stages (then only stepAsync runs steps). */
  readonly remote?: RemoteForward;
  /** KV blocks, fixed (e.g. the least every pipeline stage can hold); overrides kvCacheMemory. */
  readonly kvBlocks?: number;
  /**
   * Bytes of host memory for preempted sequences' KV (vLLM's swap space): a preempted sequence's KV is copied there
   * and back when it resumes, bit for bit, instead of being recomputed. 0: always recompute. Default: the KV cache's
   * size, at most 4 GiB (taken only while sequences are swapped out). Pipeline stages always recompute.
   */
  readonly swapSpace?: number;
}

export { ENGINE_DEFAULTS };


/** KV budget in bytes: a fraction of free RAM, never more than maxNumSeqs full contexts need. */
export function defaultKvCacheMemory(model: LlamaModel, kvDtype: KvDType, maxNumSeqs: number): number {
  const c = model.config;
  const perToken = KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, kvDtype);
  return Math.min(Math.floor(ENGINE_DEFAULTS.kvFreeFraction * freemem()), maxNumSeqs * c.maxPositionEmbeddings * perToken);
}

/**
 * Swap space in bytes when none is given: the KV cache's own size (all a full pool can hand over at once), at most
 * 4 GiB (vLLM's default). It is memory only while sequences are swapped out, i.e. under KV pressure.
 */
export function defaultSwapSpace(kvCacheBytes: number): number {
  return Math.min(kvCacheBytes, ENGINE_DEFAULTS.swapSpaceMax);
}

/** One sequence: the scheduler's and the runner's view of one completion. */
class Seq implements SchedSeq, RunnerSeq {
  numComputed = 0;
  lookahead = 0;
  draft: readonly number[] = [];
  draftQ: readonly Float32Array[] | undefined = undefined;
  spec: AdaptiveK | null = null; // speculating completions only
  prediction: PredictionTracker | null = null; // a request with a prediction: drafts from it first
  predictionK: AdaptiveK | null = null; // with prediction
  predicted: readonly number[] = []; // the prediction's draft for this step (planned before scheduling)
  draftFrom: 'prediction' | 'proposer' | null = null; // who made `draft`
  lowPriority = false; // batch lane (request priority 'batch')
  lora: LoadedAdapter | null = null; // the request's adapter; null → base
  constructor(
    readonly id: string,
    readonly tokens: number[],
    readonly promptLen: number,
    private readonly prefixCaching: boolean,
    readonly promptLogprobs: { readonly k: number; done: number } | null,
    readonly embed: { readonly pooling: 'mean' | 'last'; done: number } | null,
    public slots: SamplingSlot[],
  ) {}

  get adapterId(): number { return this.lora?.id ?? 0; }
  get adapter(): LoadedAdapter['adapter'] | null { return this.lora?.adapter ?? null; }

  /** Prompt logprobs need every prompt row computed, so their prompt skips the cache until it is scored. */
  get usePrefixCache(): boolean {
    return this.prefixCaching && (this.promptLogprobs === null || this.promptLogprobs.done >= this.promptLen - 1);
  }
}

interface Completion {
  readonly index: number;
  readonly seq: Seq;
  readonly slot: SamplingSlot;
  readonly detok: IncrementalDetokenizer | null;
  readonly stops: StopStringMatcher | null;
  numOutput: number;
  predAccepted: number; // prediction draft tokens kept in the output
  predRejected: number; // prediction draft tokens verified and not kept
  newTokens: number[];
  newText: string;
  newLogprobs: LogprobEntry[] | null;
  finish: FinishReason | null;
  stopReason: string | number | null;
  sentFinal: boolean;
}

interface GenState {
  readonly kind: 'generate';
  readonly req: GenerateRequest;
  readonly completions: Completion[];
  readonly stopIds: ReadonlySet<number>;
  cachedTokens: number;
  admitted: boolean;
  promptLogprobs: (LogprobEntry | null)[] | null;
  promptLogprobsSent: boolean;
  live: number; // completions without a finish reason
}

interface EmbedState {
  readonly kind: 'embed';
  readonly req: EmbedRequest;
  readonly seq: Seq;
  readonly sum: Float64Array; // (D) running sum of hidden rows (mean) or the last row
}

type State = GenState | EmbedState;

export class Engine {
  readonly info: EngineInfo;
  readonly kv: KvManager;
  readonly scheduler: Scheduler;
  readonly runner: ModelRunner;
  readonly swap: KvSwapSpace | null; // preempted sequences' KV (null: pipeline stages, which recompute)
  private readonly states = new Map<string, State>();
  private readonly seqOwner = new Map<string, { state: State; comp: Completion | null }>();
  private readonly aborts = new Set<string>();
  private readonly eosIds: readonly number[];
  private readonly maxQueue: number;
  private accepting = true;
  private counters = { promptTokens: 0, generatedTokens: 0, steps: 0, specDraftTokens: 0, specAcceptedTokens: 0, specSteps: 0 };
  readonly proposer: Proposer | null;
  private readonly numSpecTokens: number;
  private readonly specCosts: SpecCosts | null; // what a draft token costs and a step yields, measured (null: not capped)
  private proposeSec = 0; // the proposer's time in this step
  private readonly numPredictionTokens: number;
  readonly adapters: AdapterTable;
  private readonly maxLoras: number;
  private readonly inFlight = new Set<string>(); // sequences of launched steps whose results are not in yet
  private parked: Seq[] = []; // first sequences of requests whose adapter waits for a free LoRA slot (FIFO)
  private constraints: ConstraintCache | null = null; // built on the first constrained request (token bytes of the vocabulary)
  private wordStartIds: Uint8Array | null | undefined; // built on the first request with a prediction
  private tokenBytesTable: (Uint8Array | null)[] | null = null; // the vocabulary's token bytes, built on first use

  constructor(readonly model: LlamaModel, readonly tokenizer: Decoder | null, opts: EngineOptions = {}) {
    const c = model.config;
    const blockSize = opts.blockSize ?? ENGINE_DEFAULTS.blockSize;
    const maxNumSeqs = opts.maxNumSeqs ?? ENGINE_DEFAULTS.maxNumSeqs;
    const kvDtype = opts.kvDtype ?? defaultKvDtype(model);
    const budget = opts.kvCacheMemory ?? defaultKvCacheMemory(model, kvDtype, maxNumSeqs);
    this.proposer = opts.speculative === undefined ? null : createProposer(opts.speculative, model);
    this.numSpecTokens = checkDraftTokens(opts.numSpeculativeTokens ?? DEFAULT_NUM_SPECULATIVE_TOKENS, 'numSpeculativeTokens');
    this.specCosts = this.proposer && (opts.speculativeCosts ?? SPEC_COSTS) ? new SpecCosts() : null;
    this.numPredictionTokens = checkDraftTokens(opts.numPredictionTokens ?? DEFAULT_NUM_PREDICTION_TOKENS, 'numPredictionTokens');
    // a draft model's KV shares the block tables: each block holds both models' K/V
    const perBlock = (KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, kvDtype) + (this.proposer?.kvBytesPerToken ?? 0)) * blockSize;
    const numBlocks = opts.kvBlocks ?? Math.floor(budget / perBlock);
    if (numBlocks < 1) throw new RangeError(`KV cache memory ${budget} bytes is less than one block (${perBlock} bytes: ${blockSize} tokens × ${perBlock / blockSize} bytes)`);
    this.kv = new KvManager(numBlocks, blockSize, opts.prefixCaching ?? true);
    const cache = new KvCache(model.weights.layers.length, numBlocks, blockSize, c.numKvHeads, c.headDim, kvDtype);
    // pipeline stages hold their own layers' KV: there a preempted sequence is recomputed
    // (a draft model's KV is the proposer's: released at preemption, it recomputes it)
    this.swap = opts.remote ? null : new KvSwapSpace(cache, opts.swapSpace ?? defaultSwapSpace(cache.totalBytes));
    this.scheduler = new Scheduler(this.kv, {
      maxBatchedTokens: opts.maxBatchedTokens ?? ENGINE_DEFAULTS.maxBatchedTokens, maxNumSeqs, maxBatchSeqs: opts.maxBatchSeqs,
      swap: this.swap && this.swap.capacity > 0 ? this.swap : undefined,
    });
    this.runner = new ModelRunner(model, cache, opts.remote ?? null);
    this.proposer?.init?.({ vocabSize: c.vocabSize, numBlocks, blockSize, maxPositions: c.maxPositionEmbeddings });
    this.maxQueue = opts.maxQueue ?? ENGINE_DEFAULTS.maxQueue;
    this.maxLoras = opts.maxLoras ?? DEFAULT_MAX_LORAS;
    if (!(Number.isInteger(this.maxLoras) && this.maxLoras >= 1)) throw new RangeError(`maxLoras must be an integer >= 1, got ${this.maxLoras}`);
    if (opts.maxCpuLoras !== undefined && !(opts.maxCpuLoras >= this.maxLoras)) throw new RangeError(`maxCpuLoras (${opts.maxCpuLoras}) must be at least maxLoras (${this.maxLoras})`);
    // an adapter a running, waiting or parked request holds is never evicted
    this.adapters = new AdapterTable(c, opts.maxLoraRank, opts.maxCpuLoras ?? Infinity, (id) => this.adaptersInUse().has(id) || this.parked.some((s) => s.adapterId === id));
    this.eosIds = [...new Set([...c.eosTokenIds, ...(opts.extraEosIds ?? [])])];
    const kvTokens = numBlocks * blockSize;
    this.info = {
      modelId: opts.modelId ?? 'model',
      maxModelLen: c.maxPositionEmbeddings,
      vocabSize: c.vocabSize,
      hiddenSize: c.hiddenSize,
      eosTokenIds: this.eosIds,
      kvDtype,
      kvBlocks: numBlocks,
      blockSize,
      maxNumSeqs,
      maxBatchSeqs: this.scheduler.width,
      maxQueue: this.maxQueue,
      kvTokens,
      maxRequestTokens: Math.min(c.maxPositionEmbeddings, kvTokens),
      speculative: this.proposer ? { method: this.proposer.name, numSpeculativeTokens: this.numSpecTokens } : null,
      maxLoras: this.maxLoras,
      swapSpace: this.swap?.capacity ?? 0,
    };
  }

  get hasWork(): boolean {
    return this.states.size > 0 || this.aborts.size > 0;
  }

  get numRequests(): number { return this.states.size; }

  /** Refuse new requests from now on (503); running ones continue. */
  stopAccepting(): void { this.accepting = false; }

  /** Queue a request, or throw EngineRequestError (400 invalid / too big, 429 queue full, 503 shutting down). */
  add(req: EngineRequest): void {
    const bad = (msg: string): never => { throw new EngineRequestError(400, msg); };
    if (!this.accepting) throw new EngineRequestError(503, 'the engine is shutting down');
    if (typeof req.id !== 'string' || req.id.length === 0) bad('request id must be a non-empty string');
    if (this.states.has(req.id)) bad(`request id ${req.id} is already in use`);
    // --max-queue counts waiting requests that the free sequence slots cannot take at the next step
    // an interactive request queues ahead of batch ones, so only interactive waiting ones count against it
    const ahead = req.priority === 'batch' ? this.scheduler.waiting.length : this.scheduler.waiting.filter((s) => !s.lowPriority).length;
    const slots = req.priority === 'batch' ? this.scheduler.width : this.scheduler.cfg.maxNumSeqs; // a batch lane may be wider
    const queued = this.parked.length + ahead - Math.max(0, slots - this.scheduler.running.length);
    if (queued >= this.maxQueue) {
      throw new EngineRequestError(429, `the queue is full (${this.maxQueue} requests waiting beyond the ${this.scheduler.cfg.maxNumSeqs} sequence slots, --max-queue); retry later`);
    }
    const V = this.info.vocabSize;
    const P = req.promptIds.length;
    if (P === 0) bad('prompt is empty: give at least one token');
    let lora: LoadedAdapter | null = null;
    if (req.adapter !== undefined && req.adapter !== null) {
      lora = this.adapters.get(req.adapter) ?? null;
      if (!lora) throw new EngineRequestError(404, `no LoRA adapter named '${String(req.adapter).slice(0, 200)}' is loaded (loaded: ${this.adapters.list().map((a) => a.name).join(', ') || 'none'})`);
    }
    req.promptIds.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) bad(`prompt token ${i} has id ${id}, outside the vocabulary [0, ${V})`);
    });
    if (req.kind === 'embed') {
      this.checkFits(P, 0);
      if (req.pooling !== 'mean' && req.pooling !== 'last') bad(`pooling must be 'mean' or 'last', got ${String(req.pooling)}`);
      const from = req.poolFrom ?? 0;
      if (!Number.isInteger(from) || from < 0 || from >= P) bad(`poolFrom must be an integer in [0, ${P}) (the prompt's length), got ${String(req.poolFrom)}`);
      const seq = new Seq(`${req.id}/e`, [...req.promptIds], P, false, null, { pooling: req.pooling, done: 0 }, []);
      seq.lowPriority = req.priority === 'batch';
      seq.lora = lora;
      const state: EmbedState = { kind: 'embed', req, seq, sum: new Float64Array(this.info.hiddenSize) };
      this.states.set(req.id, state);
      this.seqOwner.set(seq.id, { state, comp: null });
      this.enqueue(seq);
      return;
    }
    if (!(Number.isInteger(req.maxTokens) && req.maxTokens >= 1)) bad(`max_tokens must be an integer >= 1, got ${req.maxTokens}`);
    if (!(Number.isInteger(req.n) && req.n >= 1 && req.n <= this.scheduler.cfg.maxNumSeqs)) bad(`n must be an integer in [1, ${this.scheduler.cfg.maxNumSeqs}], got ${req.n}`);
    this.checkFits(P, req.maxTokens);
    for (const [what, k] of [['logprobs', req.logprobs], ['prompt_logprobs', req.promptLogprobs]] as const) {
      if (k !== null && !(Number.isInteger(k) && k >= 0 && k <= V)) bad(`${what} must be an integer in [0, ${V}], got ${k}`);
    }
    req.stop.forEach((s, i) => { if (typeof s !== 'string' || s.length === 0) bad(`stop string ${i} is empty or not a string`); });
    req.stopTokenIds.forEach((id) => { if (!Number.isInteger(id)) bad(`stop token id ${id} is not an integer`); });
    const sampling = toSamplingParams(req.sampling, V);
    const constraint = req.constraint ? this.compileConstraint(req.constraint) : null;
    const prediction = req.prediction ?? null;
    if (prediction !== null) {
      if (!Array.isArray(prediction)) bad(`prediction must be an array of token ids, got ${typeof prediction}`);
      prediction.forEach((id, i) => { if (!Number.isInteger(id) || id < 0 || id >= V) bad(`prediction token ${i} has id ${id}, outside the vocabulary [0, ${V})`); });
    }
    // past a complete value only EOS is allowed: ignoring it would leave nothing to sample
    if (constraint && req.ignoreEos) bad('ignore_eos cannot be combined with constrained decoding (response_format, structured_outputs, guided_*, a forced tool call, strict tools under tool_choice auto)');
    const minTokens = req.minTokens ?? 0;
    // a value complete before min_tokens could be followed by nothing but the masked EOS
    if (constraint && minTokens > 0) bad('min_tokens cannot be combined with constrained decoding (response_format, structured_outputs, guided_*, a forced tool call, strict tools under tool_choice auto)');
    if (constraint && (req.allowedTokenIds != null || (req.badWordIds?.length ?? 0) > 0)) bad('allowed_token_ids and bad_words cannot be combined with constrained decoding');
    const stopIds = new Set([...req.stopTokenIds, ...(req.ignoreEos ? [] : this.eosIds)]);
    let masks: TokenMasks | null = null;
    try {
      masks = tokenMasks({ minTokens, maxTokens: req.maxTokens, stopIds, allowed: req.allowedTokenIds ?? null, badWords: req.badWordIds ?? [] }, V);
    } catch (e) {
      bad((e as Error).message);
    }

    const comps: Completion[] = [];
    const promptLogprobs = req.promptLogprobs === null ? null : { k: req.promptLogprobs, done: 0 };
    for (let i = 0; i < req.n; i++) {
      const params = { ...sampling, seed: sampling.seed === null ? null : sampling.seed + i };
      let slot: SamplingSlot;
      try {
        slot = { sampler: new Sampler(params, V, this.model.backend), counts: new TokenCounts(req.promptIds), logprobs: req.logprobs, constraint: constraint?.start() ?? null, masks };
      } catch (e) {
        throw new EngineRequestError(400, (e as Error).message);
      }
      const seq = new Seq(`${req.id}/${i}`, [...req.promptIds], P, true, i === 0 ? promptLogprobs : null, null, []);
      seq.lora = lora;
      if (this.proposer && req.speculative !== false) seq.spec = AdaptiveK.forRequest(this.numSpecTokens, this.specCosts, sampling, this.proposer);
      if (prediction && prediction.length > 0 && req.speculative !== false && this.numPredictionTokens > 0) {
        seq.prediction = new PredictionTracker(prediction, this.wordStarts());
        seq.predictionK = new PredictionK(this.numPredictionTokens);
      }
      seq.lowPriority = req.priority === 'batch';
      const text = this.tokenizer !== null;
      comps.push({
        index: i, seq, slot,
        detok: text ? new IncrementalDetokenizer(this.tokenizer!, { skipSpecialTokens: req.skipSpecialTokens, promptIds: req.promptIds }) : null,
        stops: text ? new StopStringMatcher(req.stop, req.includeStopStr === true) : null,
        numOutput: 0, predAccepted: 0, predRejected: 0, newTokens: [], newText: '', newLogprobs: req.logprobs === null ? null : [],
        finish: null, stopReason: null, sentFinal: false,
      });
    }
    // the first sequence computes the prompt once and samples for every completion
    comps[0]!.seq.slots = comps.map((c) => c.slot);
    const state: GenState = {
      kind: 'generate', req, completions: comps, stopIds, cachedTokens: 0, admitted: false,
      promptLogprobs: promptLogprobs ? [null] : null, promptLogprobsSent: false, live: req.n,
    };
    this.states.set(req.id, state);
    for (const c of comps) this.seqOwner.set(c.seq.id, { state, comp: c });
    this.enqueue(comps[0]!.seq);
  }

  /** Serve a PEFT adapter directory as `name` (read now, once; a new version id when the name exists). */
  loadAdapter(name: string, path: string): AdapterInfo {
    // only rank 0's layers would apply it: the other stages' layers run the base, and outputs are neither model's
    if (this.runner.remote) throw new Error('LoRA adapters are not supported with pipeline parallelism yet (the other stages hold no adapter factors)');
    return this.adapters.load(name, path);
  }

  /** Stop serving `name`; running and queued requests keep the adapter they were given. */
  unloadAdapter(name: string): boolean {
    return this.adapters.unload(name);
  }

  /** Into the scheduler, unless the request's adapter would be one more than maxLoras in use: then it waits here. */
  private enqueue(seq: Seq): void {
    if (seq.lora === null || this.loraSlotFor(seq.adapterId, this.adaptersInUse())) this.scheduler.add(seq);
    else this.parked.push(seq);
  }

  /** Adapter ids of every sequence the scheduler holds (running or waiting). */
  private adaptersInUse(): Set<number> {
    const ids = new Set<number>();
    for (const s of this.scheduler.running) if ((s as Seq).adapterId !== 0) ids.add((s as Seq).adapterId);
    for (const s of this.scheduler.waiting) if ((s as Seq).adapterId !== 0) ids.add((s as Seq).adapterId);
    return ids;
  }

  private loraSlotFor(id: number, inUse: Set<number>): boolean {
    if (inUse.has(id)) return true;
    if (inUse.size >= this.maxLoras) return false;
    inUse.add(id);
    return true;
  }

  /** Parked requests whose adapter now has a slot join the scheduler, in arrival order. */
  private admitParked(): void {
    if (this.parked.length === 0) return;
    const inUse = this.adaptersInUse();
    this.parked = this.parked.filter((seq) => {
      if (!this.loraSlotFor(seq.adapterId, inUse)) return true;
      this.scheduler.add(seq);
      return false;
    });
  }

  /** Cancel a request: its blocks are freed and its completions end with 'abort' at the next step. */
  abort(id: string): void {
    if (this.states.has(id)) this.aborts.add(id);
  }

  /** Abort everything now (shutdown). */
  abortAll(): EngineOutput[] {
    for (const id of this.states.keys()) this.aborts.add(id);
    return this.applyAborts();
  }

  /** After an internal error: drop every request, answering each with a 500. */
  failAll(message: string): EngineOutput[] {
    const ids = [...this.states.keys()];
    for (const seqId of this.seqOwner.keys()) {
      try {
        this.scheduler.finish(seqId);
        this.proposer?.release?.(seqId);
      } catch { /* best effort: the errors below still reach the clients */ }
    }
    this.states.clear();
    this.seqOwner.clear();
    this.parked = [];
    this.aborts.clear();
    return ids.map((id) => ({ kind: 'error', id, status: 500, message }));
  }

  /** One engine iteration; returns the outputs it produced. */
  step(): EngineOutput[] {
    const outputs: EngineOutput[] = [];
    this.proposeSec = 0;
    const t0 = performance.now();
    const sched = this.beginStep(outputs);
    if (!sched) return outputs;
    const results = this.runner.execute(sched, (id) => this.seqOf(id));
    const t1 = performance.now(); // appending tokens (text, stops, outputs) costs the same whether drafted or not
    const costs = this.specCosts;
    // a step with decoding sequences measures what a verify row costs (its prompt chunks are fitted apart); drafts
    // are cleared by endStep
    let rows = 0, decoding = 0, prompt = 0, drafted = 0, drafting = 0;
    if (costs) {
      for (const s of sched.seqs) {
        if (s.numTokens !== 1 + s.numLookahead) { prompt += s.numTokens; continue; }
        rows += s.numTokens;
        decoding++;
        if (s.numLookahead > 0) drafting++;
        const seq = this.seqOf(s.id);
        if (seq.draftFrom === 'proposer') drafted += seq.draft.length;
      }
    }
    const generated = this.counters.generatedTokens;
    this.endStep(sched, results, outputs);
    if (rows > 0) {
      const stepSec = (t1 - t0) / 1000 - this.proposeSec;
      costs!.observe(rows, stepSec, this.proposeSec, drafted, this.counters.generatedTokens - generated, drafting, decoding, prompt, (performance.now() - t1) / 1000);
    }
    return outputs;
  }

  /** step() with the forward pass awaited (pipeline stages on other ranks). */
  async stepAsync(): Promise<EngineOutput[]> {
    return (await this.launchStep()) ?? [];
  }

  /**
   * Start a step without waiting for its forward pass (pipeline micro-batches): sequences of steps still in flight
   * are neither scheduled nor preempted until their results are in. With `microBatches` M, a step takes about 1/M of
   * the sequences, so M steps fill the stages. null: nothing to run now.
   */
  launchStep(microBatches = 1): Promise<EngineOutput[]> | null {
    const outputs: EngineOutput[] = [];
    const all = this.scheduler.running.length + this.scheduler.waiting.length;
    const sched = this.beginStep(outputs, Math.max(1, Math.ceil(all / microBatches)));
    if (!sched) return outputs.length > 0 ? Promise.resolve(outputs) : null;
    for (const s of sched.seqs) this.inFlight.add(s.id);
    return this.runner.executeAsync(sched, (id) => this.seqOf(id)).then((results) => {
      for (const s of sched.seqs) this.inFlight.delete(s.id);
      this.endStep(sched, results, outputs);
      return outputs;
    });
  }

  /** Aborts, admission and scheduling: the step's plan, or null when there is nothing to run. */
  private beginStep(outputs: EngineOutput[], maxSeqs?: number): SchedulerOutput | null {
    outputs.push(...this.applyAborts());
    this.admitParked();
    if (!this.scheduler.hasWork) return null;
    this.planLookahead();
    const sched = this.byAdapter(this.propose(this.scheduleIdle(maxSeqs)));
    if (sched.seqs.length === 0 && this.inFlight.size > 0) return null;
    this.counters.steps++;
    for (const s of sched.seqs) {
      const owner = this.seqOwner.get(s.id)!;
      if (owner.state.kind === 'generate' && !owner.state.admitted) {
        owner.state.admitted = true;
        owner.state.cachedTokens = s.prefixHit;
      }
      const seq = this.seqOf(s.id);
      this.counters.promptTokens += Math.max(0, Math.min(seq.promptLen, s.start + s.numTokens) - s.start);
    }
    return sched;
  }

  /** schedule() over the running sequences not in flight (they are set aside and put back in their order). */
  private scheduleIdle(maxSeqs?: number): SchedulerOutput {
    const run = this.scheduler.running;
    if (this.inFlight.size === 0) return this.scheduler.schedule(maxSeqs);
    const before = [...run];
    run.splice(0, run.length, ...before.filter((s) => !this.inFlight.has(s.id)));
    const out = this.scheduler.schedule(maxSeqs);
    const kept = new Set(run);
    const old = new Set(before);
    run.splice(0, run.length, ...before.filter((s) => this.inFlight.has(s.id) || kept.has(s)), ...run.filter((s) => !old.has(s)));
    return out;
  }

  /** Commit the step's results: prefix-cache hashes, sampled tokens, outputs. */
  private endStep(sched: SchedulerOutput, results: SeqResult[], outputs: EngineOutput[]): void {
    for (const s of sched.seqs) {
      const seq = this.seqOf(s.id);
      // draft positions are unverified: roll back to the committed tokens before hashing full blocks
      seq.numComputed -= seq.draft.length;
      this.kv.cacheComputed(s.id, seq.tokens, seq.numComputed, seq.adapterId);
    }
    const touched = new Set<GenState>();
    for (const r of results) {
      const { state, comp } = this.seqOwner.get(r.id)!;
      if (state.kind === 'embed') {
        if (r.hidden) this.accumulate(state, r.hidden);
        if (state.seq.numComputed >= state.seq.promptLen) outputs.push(this.finishEmbed(state));
        continue;
      }
      touched.add(state);
      const seq = comp!.seq;
      if (seq.promptLogprobs && r.promptLogprobs.length > 0) {
        state.promptLogprobs!.push(...r.promptLogprobs);
        seq.promptLogprobs.done += r.promptLogprobs.length;
      }
      if (r.sampled) this.onSampled(state, comp!, r.sampled);
      if (r.verified) this.onVerified(state, comp!, r.verified);
    }
    for (const state of touched) outputs.push(...this.emit(state));
  }

  stats(): EngineStats {
    const pool = this.kv.pool;
    return {
      running: this.scheduler.running.length,
      waiting: this.scheduler.waiting.length + this.parked.length, // parked: waiting for a LoRA slot
      kvBlocksTotal: pool.numBlocks,
      kvBlocksUsed: pool.numUsed,
      kvBlocksCached: pool.numCached,
      blockSize: this.kv.blockSize,
      prefixQueriedTokens: this.scheduler.prefixQueriedTokens,
      prefixHitTokens: this.scheduler.prefixHitTokens,
      preemptions: this.scheduler.preemptions,
      swappedOut: this.scheduler.swappedOut,
      swapSpaceUsed: this.swap?.used ?? 0,
      promptTokens: this.counters.promptTokens,
      generatedTokens: this.counters.generatedTokens,
      steps: this.counters.steps,
      specDraftTokens: this.counters.specDraftTokens,
      specAcceptedTokens: this.counters.specAcceptedTokens,
      specSteps: this.counters.specSteps,
      ...this.specCostStats(),
      loraRunning: adapterNames(this.scheduler.running as Seq[]),
      loraWaiting: adapterNames([...this.scheduler.waiting as Seq[], ...this.parked]),
      maxLoras: this.maxLoras,
    };
  }

  /** stats().specCosts: the measured costs, once fitted, and how many running sequences have paused their drafts. */
  private specCostStats(): { specCosts?: NonNullable<EngineStats['specCosts']> } {
    const m = this.specCosts?.costs();
    if (!m?.fitted) return {};
    const paused = (this.scheduler.running as Seq[]).filter((q) => q.spec?.isPaused()).length;
    return { specCosts: { rowSeconds: m.row, jumpSeconds: m.jump, promptTokenSeconds: m.promptToken, draftTokenSeconds: m.draftToken, pooledAcceptance: this.specCosts!.acceptance(), pausedSeqs: paused } };
  }

  /** The tokenizer as a vocabulary of token strings, or null when it has none (e.g. a model loaded without one). */
  private vocab(): TokenVocab | null {
    const tok = this.tokenizer as (Decoder & Partial<TokenVocab>) | null;
    return tok && typeof tok.idToToken === 'function' && typeof tok.isSpecial === 'function' && typeof tok.vocabSize === 'number' ? tok as TokenVocab : null;
  }

  /** Each token's bytes, built once on first use (prediction word starts and constrained decoding share it). */
  private vocabBytes(vocab: TokenVocab): (Uint8Array | null)[] {
    return (this.tokenBytesTable ??= tokenBytes(vocab));
  }

  /** Which tokens begin a word (for prediction drafts), built on a prediction's first use; null without token strings. */
  private wordStarts(): Uint8Array | null {
    if (this.wordStartIds === undefined) {
      const vocab = this.vocab();
      this.wordStartIds = vocab ? wordStartTable(this.vocabBytes(vocab)) : null;
    }
    return this.wordStartIds;
  }

  /** The compiled grammar of a request's constraint (cached per spec); 400 for what the compiler refuses. */
  private compileConstraint(spec: NonNullable<GenerateRequest['constraint']>) {
    const tok = this.vocab();
    if (!tok) throw new EngineRequestError(400, 'constrained decoding needs the model\'s tokenizer (its token strings); this model was loaded without one');
    try {
      this.constraints ??= new ConstraintCache(tok, this.info.vocabSize, this.eosIds, this.vocabBytes(tok));
      return this.constraints.get(spec);
    } catch (e) {
      if (e instanceof SchemaError || e instanceof RegexError) throw new EngineRequestError(400, e.message);
      throw e;
    }
  }

  private checkFits(promptLen: number, maxTokens: number): void {
    const total = promptLen + maxTokens;
    if (total > this.info.maxModelLen) {
      throw new EngineRequestError(400, `prompt (${promptLen} tokens) + max_tokens (${maxTokens}) = ${total} exceeds the model's context window of ${this.info.maxModelLen} tokens`);
    }
    if (total > this.info.kvTokens) {
      throw new EngineRequestError(400, `prompt (${promptLen} tokens) + max_tokens (${maxTokens}) = ${total} exceeds the KV cache capacity of ${this.info.kvTokens} tokens; raise the KV cache memory or shorten the request`);
    }
  }

  private seqOf(id: string): Seq {
    const o = this.seqOwner.get(id);
    if (!o) throw new Error(`engine: unknown sequence ${id}`);
    return o.state.kind === 'embed' ? o.state.seq : o.comp!.seq;
  }

  /**
   * Draft slots for each decoding, speculating sequence: adaptive k, never past max_tokens (k + 1 tokens may come
   * out). A sequence whose output lines up with its prediction drafts from it (as many slots as it has tokens), else
   * from the engine's proposer.
   */
  private planLookahead(): void {
    const plain = this.specCosts?.wantsPlain() ?? false; // now and then a step without the proposer's drafts, timed
    const shadows: Seq[] = [];
    for (const s of this.scheduler.running) {
      const o = this.seqOwner.get(s.id);
      const seq = s as Seq;
      seq.lookahead = 0;
      seq.predicted = [];
      if (!(seq.spec || seq.prediction) || !o?.comp || seq.slots.length !== 1 || o.state.kind !== 'generate') continue;
      const room = o.state.req.maxTokens - o.comp.numOutput - 1;
      if (room <= 0) continue;
      const pk = seq.predictionK?.next() ?? 0;
      if (pk > 0 && seq.tokens.length - seq.numComputed === 1) seq.predicted = seq.prediction!.draft(seq.tokens, seq.promptLen, Math.min(pk, room));
      seq.lookahead = seq.predicted.length > 0 ? seq.predicted.length : plain && seq.spec?.costs ? 0 : Math.min(seq.spec?.next() ?? 0, room);
      if (seq.lookahead === 0 && seq.spec?.wantsShadow() && seq.tokens.length - seq.numComputed === 1) shadows.push(seq);
    }
    if (shadows.length === 0) return;
    // paused sequences with a free proposer score the drafts it would make now against the tokens they decode next
    const t0 = performance.now();
    const props = this.proposer!.propose(shadows.map((seq) => ({ seqId: seq.id, tokens: seq.tokens, promptLen: seq.promptLen, k: seq.spec!.max, blockTable: this.kv.blockTable(seq.id) })));
    this.proposeSec += (performance.now() - t0) / 1000;
    shadows.forEach((seq, i) => seq.spec!.watch(checkProposal(props[i]?.tokens ?? [], seq.spec!.max, this.info.vocabSize, this.proposer!.name)));
  }

  /** Ask the proposer to fill the draft slots the scheduler granted; give back what it left empty. */
  private propose(out: SchedulerOutput): SchedulerOutput {
    for (const id of out.preempted) this.proposer?.release?.(id);
    const reqs: ProposeRequest[] = [];
    for (const s of out.seqs) {
      const seq = this.seqOf(s.id);
      seq.draft = [];
      seq.draftQ = undefined;
      seq.draftFrom = null;
      if (s.numLookahead === 0) continue;
      if (seq.predicted.length > 0) {
        // lookahead was the prediction's draft length; the scheduler may have granted fewer slots
        seq.draft = seq.predicted.slice(0, s.numLookahead);
        seq.draftFrom = 'prediction';
        continue;
      }
      seq.draftFrom = 'proposer';
      const sampler = seq.slots[0]!.sampler;
      const t = sampler.params.temperature;
      reqs.push({
        seqId: s.id, tokens: seq.tokens, promptLen: seq.promptLen, k: s.numLookahead, blockTable: s.blockTable,
        sampling: t > 0 ? { temperature: t, random: () => sampler.uniform() } : undefined,
      });
    }
    if (reqs.length === 0) return out;
    const proposer = this.proposer!;
    const t0 = performance.now();
    const props = proposer.propose(reqs);
    this.proposeSec += (performance.now() - t0) / 1000;
    if (props.length !== reqs.length) throw new Error(`proposer ${proposer.name} answered ${props.length} proposals for ${reqs.length} requests`);
    const unused = new Map<string, number>();
    reqs.forEach((r, i) => {
      const seq = this.seqOf(r.seqId);
      seq.draft = checkProposal(props[i]!.tokens, r.k, this.info.vocabSize, proposer.name);
      seq.draftQ = seq.draft.length > 0 ? props[i]!.q : undefined;
      if (seq.draft.length < r.k) unused.set(r.seqId, r.k - seq.draft.length);
    });
    return this.scheduler.retract(out, unused);
  }

  /** A speculating completion verified its draft: append the accepted tokens and the correction / bonus token. */
  private onVerified(state: GenState, c: Completion, v: NonNullable<SeqResult['verified']>): void {
    const seq = c.seq;
    const k = seq.draft.length;
    this.counters.specDraftTokens += k;
    this.counters.specAcceptedTokens += v.accepted;
    this.counters.specSteps++;
    const fromPrediction = seq.draftFrom === 'prediction';
    if (fromPrediction) {
      seq.predictionK!.update(k, v.accepted);
      seq.spec?.tick();
    } else {
      seq.spec!.update(k, v.accepted);
      this.proposer!.observe?.(seq.id, k, v.accepted);
      seq.predictionK?.tick();
    }
    seq.draft = [];
    seq.draftQ = undefined;
    seq.draftFrom = null;
    let kept = 0; // accepted drafts that reached the output (not past a stop)
    for (let j = 0; j < v.tokens.length && c.finish === null; j++) {
      seq.spec?.seen(v.tokens[j]!.token); // a paused sequence's watched draft, scored while a prediction drafts
      this.append(state, c, v.tokens[j]!);
      if (j < v.accepted) kept++;
      // an accepted draft token's KV was written by the verify pass
      if (j < v.tokens.length - 1) seq.numComputed++;
    }
    if (fromPrediction) {
      c.predAccepted += kept;
      c.predRejected += k - kept;
    }
  }

  /** The prompt's sequence produced a token for each slot: fork the other completions at the first one. */
  private onSampled(state: GenState, comp: Completion, sampled: readonly SampledToken[]): void {
    if (comp.numOutput > 0) { // a decode step without a draft (not the prompt's first token)
      comp.seq.spec?.seen(sampled[0]!.token);
      comp.seq.spec?.tick();
      comp.seq.predictionK?.tick();
    }
    if (sampled.length > 1) {
      const parent = comp.seq;
      for (let i = 1; i < sampled.length; i++) {
        const child = state.completions[i]!;
        const copies = this.kv.fork(parent.id, child.seq.id, parent.numComputed);
        if (copies) {
          this.runner.copyBlocks(copies);
          child.seq.numComputed = parent.numComputed;
          this.scheduler.addRunning(child.seq);
        } else {
          this.scheduler.add(child.seq); // no block for the copy: recompute later (mostly from the prefix cache)
        }
        child.seq.slots = [child.slot];
      }
      parent.slots = [comp.slot];
    }
    sampled.forEach((s, i) => this.append(state, i === 0 ? comp : state.completions[i]!, s));
  }

  private append(state: GenState, c: Completion, s: SampledToken): void {
    if (c.finish !== null) return;
    const tok = s.token;
    c.seq.tokens.push(tok);
    c.slot.counts.add(tok);
    c.slot.constraint?.advance(tok);
    c.numOutput++;
    this.counters.generatedTokens++;
    c.newTokens.push(tok);
    if (c.newLogprobs && s.logprob) c.newLogprobs.push(s.logprob);
    let byString = false;
    if (state.stopIds.has(tok)) {
      c.finish = 'stop';
      c.stopReason = tok;
      // include_stop_str_in_output: a stop token's text too (none for a special token skipped as usual)
      if (c.detok && state.req.includeStopStr) c.newText += c.stops!.push(c.detok.push(tok), false).text;
    } else if (c.detok) {
      // min_tokens: stop strings count from the token after the first min_tokens (vLLM's rule)
      const r = c.stops!.push(c.detok.push(tok), c.numOutput > (state.req.minTokens ?? 0));
      c.newText += r.text;
      if (r.stopped) { c.finish = 'stop'; c.stopReason = r.stop ?? null; byString = true; }
    }
    if (c.finish === null && c.numOutput >= state.req.maxTokens) c.finish = 'length';
    if (c.finish !== null) {
      if (c.detok && !byString) {
        const r = c.stops!.push(c.detok.flush());
        c.newText += r.stopped ? r.text : r.text + c.stops!.flush();
      }
      state.live--;
      this.finishSeq(c.seq);
      this.proposer?.learn?.(c.seq.tokens, c.seq.promptLen);
    }
  }

  private unpark(seq: Seq): void {
    const p = this.parked.indexOf(seq);
    if (p >= 0) this.parked.splice(p, 1);
  }

  /** The step's sequences with equal adapters next to each other (stable sort), so each adapter is one row segment. */
  private byAdapter(out: SchedulerOutput): SchedulerOutput {
    const key = (id: string): number => this.seqOf(id).adapterId;
    let sorted = true;
    for (let i = 1; i < out.seqs.length && sorted; i++) sorted = key(out.seqs[i - 1]!.id) <= key(out.seqs[i]!.id);
    return sorted ? out : { ...out, seqs: [...out.seqs].sort((a, b) => key(a.id) - key(b.id)) };
  }

  private finishSeq(seq: Seq): void {
    this.unpark(seq);
    this.scheduler.finish(seq.id);
    this.proposer?.release?.(seq.id);
  }

  /** One output per completion that has news; the request is dropped once every completion finished. */
  private emit(state: GenState): GenerateOutput[] {
    const outs: GenerateOutput[] = [];
    const P = state.req.promptIds.length;
    for (const c of state.completions) {
      if (c.sentFinal || (c.newTokens.length === 0 && c.finish === null)) continue;
      let promptLogprobs: GenerateOutput['promptLogprobs'] = null;
      if (c.index === 0 && state.promptLogprobs && !state.promptLogprobsSent) {
        promptLogprobs = state.promptLogprobs;
        state.promptLogprobsSent = true;
      }
      outs.push({
        kind: 'generate', id: state.req.id, index: c.index,
        tokenIds: c.newTokens, text: c.newText, logprobs: c.newLogprobs,
        finishReason: c.finish, stopReason: c.finish !== null ? c.stopReason : null,
        usage: {
          promptTokens: P, cachedTokens: state.cachedTokens, completionTokens: c.numOutput,
          ...(state.req.prediction != null ? { acceptedPredictionTokens: c.predAccepted, rejectedPredictionTokens: c.predRejected } : {}),
        },
        promptLogprobs,
      });
      c.newTokens = [];
      c.newText = '';
      c.newLogprobs = c.newLogprobs ? [] : null;
      if (c.finish !== null) c.sentFinal = true;
    }
    if (state.live === 0) this.drop(state);
    return outs;
  }

  private applyAborts(): EngineOutput[] {
    const outs: EngineOutput[] = [];
    const later: string[] = []; // requests with a step in flight are aborted once its results are in
    for (const id of this.aborts) {
      const state = this.states.get(id);
      if (!state) continue;
      if (this.inFlight.size > 0 && (state.kind === 'embed' ? [state.seq] : state.completions.map((c) => c.seq)).some((s) => this.inFlight.has(s.id))) {
        later.push(id);
        continue;
      }
      if (state.kind === 'embed') {
        this.unpark(state.seq);
        this.scheduler.finish(state.seq.id);
        this.drop(state);
        // not a fault: 503, retryable (a completion cut short ends with finish 'abort', which the server answers so)
        const why = this.accepting ? 'was aborted' : 'was cut short: the engine is shutting down; retry it';
        outs.push({ kind: 'error', id, status: 503, message: `embedding request ${id} ${why}` });
        continue;
      }
      for (const c of state.completions) {
        if (c.finish !== null) continue;
        c.finish = 'abort';
        c.stopReason = null;
        state.live--;
        this.finishSeq(c.seq);
      }
      outs.push(...this.emit(state));
    }
    this.aborts.clear();
    for (const id of later) this.aborts.add(id);
    return outs;
  }

  private drop(state: State): void {
    this.states.delete(state.req.id);
    if (state.kind === 'embed') this.seqOwner.delete(state.seq.id);
    else for (const c of state.completions) this.seqOwner.delete(c.seq.id);
  }

  private accumulate(state: EmbedState, hidden: { start: number; rows: Float32Array }): void {
    const D = this.info.hiddenSize;
    const n = hidden.rows.length / D;
    if (state.req.pooling === 'last') state.sum.fill(0);
    const i0 = state.req.pooling === 'mean' ? Math.max(0, (state.req.poolFrom ?? 0) - hidden.start) : 0; // rows before poolFrom are left out
    for (let i = i0; i < n; i++) for (let d = 0; d < D; d++) state.sum[d]! += hidden.rows[i * D + d]!;
    state.seq.embed!.done = hidden.start + n;
  }

  private finishEmbed(state: EmbedState): EngineOutput {
    const D = this.info.hiddenSize;
    const P = state.seq.promptLen;
    const e = new Float32Array(D);
    const div = state.req.pooling === 'mean' ? P - (state.req.poolFrom ?? 0) : 1;
    let ss = 0;
    for (let d = 0; d < D; d++) { e[d] = state.sum[d]! / div; ss += e[d]! * e[d]!; }
    if (state.req.normalize) {
      const inv = ss > 0 ? 1 / Math.sqrt(ss) : 0;
      for (let d = 0; d < D; d++) e[d] = e[d]! * inv;
    }
    this.scheduler.finish(state.seq.id);
    this.drop(state);
    // NaN weights or an overflow: a vector of NaN (JSON nulls) would poison every search it joins
    if (!Number.isFinite(ss)) {
      return { kind: 'error', id: state.req.id, status: 500, message: `embedding request ${state.req.id}: the model's hidden states are not finite (pooled sum of squares ${ss}): its weights hold NaN or Inf, or its activations overflowed (check the checkpoint)` };
    }
    return { kind: 'embed', id: state.req.id, embedding: e, promptTokens: P };
  }
}

/** The distinct adapter names of some sequences, sorted (the base model's are left out). */
function adapterNames(seqs: readonly Seq[]): string[] {
  return [...new Set(seqs.flatMap((s) => (s.lora ? [s.lora.name] : [])))].sort();
}

/** Protocol sampling (logit bias as a record) → the sampler's params, checked. */
export function toSamplingParams(spec: SamplingSpec, vocabSize: number): SamplingParams {
  let logitBias: Map<number, number> | null = null;
  if (spec.logitBias) {
    logitBias = new Map();
    for (const [k, v] of Object.entries(spec.logitBias)) {
      const id = Number(k);
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new EngineRequestError(400, `logit_bias key ${k} is not a token id in [0, ${vocabSize})`);
      if (typeof v !== 'number' || !Number.isFinite(v) || Math.abs(v) > 100) throw new EngineRequestError(400, `logit_bias[${k}] must be a number in [-100, 100], got ${String(v)}`);
      logitBias.set(id, v);
    }
  }
  const params: SamplingParams = { ...DEFAULT_SAMPLING, ...spec, logitBias };
  return params;
}
