// generate: one sequence, prefill in chunks then decode token by token, with sampling, stops and logprobs.

import { applyMasks, masksRow, tokenMasks, type TokenMaskNames } from './token-masks.js';
import { KvCache } from './kv-cache.js';
import type { ForwardInput, LlamaModel } from './llama.js';
import { DEFAULT_SAMPLING, Sampler, type SamplingParams, TokenCounts } from './sampler.js';
import { DEFAULT_NUM_PREDICTION_TOKENS, PredictionK, PredictionTracker } from './prediction.js';
import {
  AdaptiveK, checkDraftTokens, checkProposal, createProposer, DEFAULT_NUM_SPECULATIVE_TOKENS, type Proposer, SPEC_COSTS, SpecCosts, type SpeculativeSpec,
  verifyDraft,
} from './speculation.js';
import { KV_DTYPES, type KvDType } from '../backend/backend.js';
import { checkOptions, describe, type OptionKeys } from '../tensor/options.js';

export interface TopLogprob {
  readonly token: number;
  readonly logprob: number;
  readonly top: ReadonlyArray<readonly [number, number]>; // [id, logprob] best first
}

/** Turns tokens into text as they come; `stopped` once a stop string matched (text is cut before it). */
export interface TextSink {
  /** `match` false (generate's minTokens): no stop string may end in this token's text. */
  push(id: number, match?: boolean): { text: string; stopped: boolean };
  flush(): string;
}

export interface GenerateOptions {
  readonly maxTokens: number;
  readonly sampling?: Partial<SamplingParams>;
  readonly stopTokenIds?: readonly number[]; // defaults to the model's eos ids
  /** vLLM's min_tokens: the first N tokens are never a stop id (masked) and no stop string ends in them. */
  readonly minTokens?: number;
  /** vLLM's allowed_token_ids: only these ids are sampled. */
  readonly allowedTokenIds?: readonly number[];
  /** vLLM's bad_words as token id sequences (serve's badWordIds makes them from words): a sequence's last id is masked where the output ends with the rest. */
  readonly badWordIds?: readonly (readonly number[])[];
  readonly logprobs?: number; // top-K per generated token; undefined → none
  readonly promptLogprobs?: number; // top-K per prompt token; undefined → none
  readonly kvDtype?: KvDType;
  readonly prefillChunk?: number; // tokens per prefill step
  readonly text?: TextSink; // detokenizer with stop strings
  readonly onToken?: (id: number, text: string) => void;
  /** Speculative decoding: 'ngram', 'suffix', a draft model sharing the vocabulary, or a Proposer. */
  readonly speculative?: SpeculativeSpec;
  readonly numSpeculativeTokens?: number; // K, most draft tokens per step (adaptive below it); default 4
  /** Cap k where a draft token stops paying, at costs measured on this call's steps (default true; FLOE_SPEC_COSTS=0 turns the default off). */
  readonly speculativeCosts?: boolean;
  /** Predicted Outputs: token ids the output is expected to repeat (no BOS); drafts taken from it, with or without `speculative`. */
  readonly prediction?: readonly number[];
  readonly numPredictionTokens?: number; // most prediction tokens verified per step (adaptive below it); default 15
  /** Which token ids begin a word (`wordStartTable(tokenBytes(tokenizer))`): drafts realign after a replaced word. */
  readonly predictionWordStarts?: Uint8Array;
}

const GENERATE_OPTIONS = {
  maxTokens: true, sampling: true, stopTokenIds: true, minTokens: true, allowedTokenIds: true, badWordIds: true, logprobs: true, promptLogprobs: true, kvDtype: true, prefillChunk: true, text: true, onToken: true,
  speculative: true, numSpeculativeTokens: true, speculativeCosts: true, prediction: true, numPredictionTokens: true, predictionWordStarts: true,
} as const satisfies OptionKeys<GenerateOptions>;
/** generate()'s own option names in tokenMasks' errors (the engine's name the server's fields). */
const GENERATE_MASK_NAMES: TokenMaskNames = {
  minTokens: 'minTokens', maxTokens: 'maxTokens', allowed: 'allowedTokenIds', badWords: 'badWordIds', badWord: (i) => `badWordIds[${i}]`,
};
const SAMPLING_KEYS = {
  temperature: true, topK: true, topP: true, minP: true, repetitionPenalty: true, frequencyPenalty: true, presencePenalty: true, logitBias: true, seed: true,
} as const satisfies OptionKeys<SamplingParams>;

export interface GenerateResult {
  readonly promptIds: number[];
  readonly outputIds: number[];
  readonly text: string;
  readonly finishReason: 'stop' | 'length';
  readonly logprobs: TopLogprob[] | null;
  readonly promptLogprobs: (TopLogprob | null)[] | null;
  readonly timings: {
    promptTokens: number; promptMs: number; generatedTokens: number; decodeMs: number;
    speculative?: { proposed: number; accepted: number }; // draft tokens proposed and kept (with speculation or a prediction)
    prediction?: { accepted: number; rejected: number }; // with a prediction: its draft tokens kept in the output / not kept
  };
}

const BLOCK = 16;

export function defaultKvDtype(model: LlamaModel): KvDType {
  const w = model.weights.layers[0]?.wq;
  return w && w.dtype === 'f32' ? 'f32' : 'bf16';
}

/** One forward step generate() asks for: the input and the KV cache (of the model's layers) it runs against. */
export interface GenerateStep { readonly inp: ForwardInput; readonly kv: KvCache }

/**
 * What generate() keeps per model from one call to the next (weakly), as an engine keeps it over its requests: each
 * named proposer ('ngram', 'suffix': suffix's index learns every finished call, so that a call whose output repeats an
 * earlier one's, a retry or an agent's recurring step, drafts it), and the SpecCosts per proposer spec.
 */
const keptByModel = new WeakMap<LlamaModel, { proposers: Map<string, Proposer>; named: Map<string, SpecCosts>; objects: WeakMap<object, SpecCosts> }>();
let callCounter = 0; // a sequence id per call: calls through generateAsync may overlap on one proposer

function keptFor(model: LlamaModel) {
  let m = keptByModel.get(model);
  if (!m) { m = { proposers: new Map(), named: new Map(), objects: new WeakMap() }; keptByModel.set(model, m); }
  return m;
}

function specCostsFor(model: LlamaModel, spec: SpeculativeSpec): SpecCosts {
  const m = keptFor(model);
  let c = typeof spec === 'string' ? m.named.get(spec) : m.objects.get(spec);
  if (!c) {
    c = new SpecCosts();
    if (typeof spec === 'string') m.named.set(spec, c);
    else m.objects.set(spec, c);
  }
  return c;
}

function proposerFor(model: LlamaModel, spec: SpeculativeSpec): Proposer {
  if (typeof spec !== 'string') return createProposer(spec, model);
  const m = keptFor(model);
  let p = m.proposers.get(spec);
  if (!p) { p = createProposer(spec, model); m.proposers.set(spec, p); }
  return p;
}

export function generate(model: LlamaModel, promptIds: readonly number[], opts: GenerateOptions): GenerateResult {
  const it = generateSteps(model, promptIds, opts);
  // one logits buffer for every step (generateSteps reads a step's logits before it asks for the next), as the
  // engine's runner keeps one: no zero-filled array per step
  let logits = new Float32Array(0);
  for (let r = it.next(); ; ) {
    if (r.done) return r.value;
    const { inp, kv } = r.value;
    const n = (inp.numLogits ?? inp.logitRows.length) * model.config.vocabSize;
    if (logits.length < n) logits = new Float32Array(n);
    r = it.next(model.forward(inp, kv, undefined, logits));
  }
}

/** generate() with each forward step run by `forward` (e.g. through pipeline stages); same steps, same results. */
export async function generateAsync(
  model: LlamaModel, promptIds: readonly number[], opts: GenerateOptions, forward: (step: GenerateStep) => Promise<Float32Array>,
): Promise<GenerateResult> {
  const it = generateSteps(model, promptIds, opts);
  for (let r = it.next(); ; ) {
    if (r.done) return r.value;
    r = it.next(await forward(r.value));
  }
}

/** The generation loop: yields each forward step, is resumed with its logits (rows, V), which it reads before it
 * yields again (so a driver may hand back the same buffer every step). */
function* generateSteps(model: LlamaModel, promptIds: readonly number[], opts: GenerateOptions): Generator<GenerateStep, GenerateResult, Float32Array> {
  const cfg = model.config;
  const be = model.backend;
  const V = cfg.vocabSize;
  if (!Array.isArray(promptIds)) {
    throw new TypeError(`generate: promptIds must be an array of token ids, got ${describe(promptIds)}${typeof promptIds === 'string' ? ' (encode it first: tokenizer.encode(text))' : ''}`);
  }
  checkOptions('generate', opts, GENERATE_OPTIONS, false);
  checkOptions('generate: sampling', opts.sampling, SAMPLING_KEYS);
  if (promptIds.length === 0) throw new Error('prompt is empty: give at least one token');
  for (const id of promptIds) {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`prompt token id ${describe(id)} outside the vocabulary [0, ${V})`);
  }
  if (!(Number.isInteger(opts.maxTokens) && opts.maxTokens >= 0)) throw new RangeError(`maxTokens must be an integer >= 0, got ${describe(opts.maxTokens)}`);
  if (opts.kvDtype !== undefined && !KV_DTYPES.includes(opts.kvDtype)) throw new TypeError(`kvDtype must be one of ${KV_DTYPES.join(', ')}, got ${describe(opts.kvDtype)}`);
  for (const k of ['logprobs', 'promptLogprobs'] as const) {
    const v = opts[k];
    if (v !== undefined && !(Number.isInteger(v) && v >= 0 && v <= V)) throw new RangeError(`${k} must be an integer from 0 to the vocabulary size ${V}, got ${describe(v)}`);
  }
  if (opts.stopTokenIds !== undefined && !(Array.isArray(opts.stopTokenIds) && opts.stopTokenIds.every((id) => Number.isInteger(id)))) {
    throw new TypeError(`stopTokenIds must be an array of token ids, got ${describe(opts.stopTokenIds)}`);
  }
  if (opts.text !== undefined && typeof (opts.text as Partial<TextSink>).push !== 'function') throw new TypeError(`text must be a TextSink such as new TextStream(tokenizer), got ${describe(opts.text)}`);
  const total = promptIds.length + opts.maxTokens;
  if (total > cfg.maxPositionEmbeddings) {
    throw new RangeError(`prompt (${promptIds.length} tokens) + max tokens (${opts.maxTokens}) = ${total} exceeds the model's context of ${cfg.maxPositionEmbeddings}`);
  }
  const sampling = { ...DEFAULT_SAMPLING, ...opts.sampling };
  const sampler = new Sampler(sampling, V, be);
  const counts = new TokenCounts(promptIds);
  const stopIds = new Set(opts.stopTokenIds ?? cfg.eosTokenIds);
  const minTokens = opts.minTokens ?? 0;
  const masks = tokenMasks({ minTokens, maxTokens: opts.maxTokens, stopIds, allowed: opts.allowedTokenIds ?? null, badWords: opts.badWordIds ?? [] }, V, GENERATE_MASK_NAMES);
  const keep = new Float32Array(masks?.allowed?.length ?? 0);

  const numBlocks = Math.ceil(Math.max(total, 1) / BLOCK);
  const kv = new KvCache(model.weights.layers.length, numBlocks, BLOCK, cfg.numKvHeads, cfg.headDim, opts.kvDtype ?? defaultKvDtype(model));
  const blockTable = Int32Array.from({ length: numBlocks }, (_, i) => i);
  const logp = new Float32Array(V);

  function* step(tokens: readonly number[], start: number, allLogits: boolean): Generator<GenerateStep, Float32Array, Float32Array> {
    const T = tokens.length;
    const positions = Int32Array.from({ length: T }, (_, i) => start + i);
    return yield { kv, inp: {
      tokens: Int32Array.from(tokens),
      positions,
      slots: positions, // identity block table: slot == position
      attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(start + T), blockTables: blockTable, maxBlocks: numBlocks },
      logitRows: allLogits ? Int32Array.from({ length: T }, (_, i) => i) : Int32Array.of(T - 1),
    } };
  }
  const entry = (logits: Float32Array, token: number, k: number): TopLogprob => {
    be.logSoftmax(logp, logits, 1);
    const top = k > 0 ? be.topk(logp, Math.min(k, V)) : null;
    return {
      token,
      logprob: logp[token]!,
      top: top ? Array.from(top.ids, (id, i) => [id, top.values[i]!] as const) : [],
    };
  };

  // prefill, in chunks; with prompt logprobs every row's logits are kept
  const t0 = performance.now();
  const wantPrompt = opts.promptLogprobs !== undefined;
  const chunk = opts.prefillChunk ?? (wantPrompt ? 64 : 512);
  const promptLogprobs: (TopLogprob | null)[] | null = wantPrompt ? [null] : null;
  let last: Float32Array = new Float32Array(0);
  for (let s = 0; s < promptIds.length; s += chunk) {
    const part = promptIds.slice(s, s + chunk);
    const logits = yield* step(part, s, wantPrompt);
    if (wantPrompt) {
      for (let i = 0; i < part.length; i++) {
        const row = logits.subarray(i * V, (i + 1) * V);
        if (s + i + 1 < promptIds.length) promptLogprobs!.push(entry(row, promptIds[s + i + 1]!, opts.promptLogprobs!));
        else last = row.slice();
      }
    } else last = logits;
  }
  const promptMs = performance.now() - t0;

  // decode: each step feeds the last token (plus draft tokens when speculating) and emits one or more tokens
  const t1 = performance.now();
  const outputIds: number[] = [];
  const tokens = [...promptIds]; // (N) prompt + output, what a proposer sees
  const logprobs: TopLogprob[] | null = opts.logprobs !== undefined ? [] : null;
  let text = '';
  let finishReason: 'stop' | 'length' = 'length';
  let stoppedByString = false;
  /** Append one token; true when generation is over. */
  const emit = (id: number, row: Float32Array): boolean => {
    if (logprobs) logprobs.push(entry(row, id, opts.logprobs!));
    outputIds.push(id);
    tokens.push(id);
    counts.add(id);
    if (stopIds.has(id)) { finishReason = 'stop'; return true; }
    if (opts.text) {
      const r = opts.text.push(id, outputIds.length > minTokens);
      text += r.text;
      opts.onToken?.(id, r.text);
      if (r.stopped) { finishReason = 'stop'; stoppedByString = true; return true; }
    } else opts.onToken?.(id, '');
    return outputIds.length === opts.maxTokens;
  };
  const proposer = opts.speculative === undefined ? null : proposerFor(model, opts.speculative);
  const K = opts.numSpeculativeTokens ?? DEFAULT_NUM_SPECULATIVE_TOKENS;
  // the proposer's k is capped where a draft token stops paying, at costs measured on this call's steps and earlier
  // calls' with the same model and proposer
  const adaptive = proposer
    ? AdaptiveK.forRequest(checkDraftTokens(K, 'numSpeculativeTokens'), opts.speculativeCosts ?? SPEC_COSTS ? specCostsFor(model, opts.speculative!) : null, sampling, proposer!)
    : null;
  const costs = adaptive?.costs ?? null;
  proposer?.init?.({ vocabSize: V, numBlocks, blockSize: BLOCK, maxPositions: cfg.maxPositionEmbeddings });
  const spec = { proposed: 0, accepted: 0 };
  for (const [i, id] of (opts.prediction ?? []).entries()) {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`prediction token ${i} has id ${id}, outside the vocabulary [0, ${V})`);
  }
  const tracker = opts.prediction?.length ? new PredictionTracker(opts.prediction, opts.predictionWordStarts ?? null) : null;
  const predK = tracker ? new PredictionK(checkDraftTokens(opts.numPredictionTokens ?? DEFAULT_NUM_PREDICTION_TOKENS, 'numPredictionTokens')) : null;
  const pred = { accepted: 0, rejected: 0 };
  const draftSampling = sampling.temperature > 0 ? { temperature: sampling.temperature, random: () => sampler.uniform() } : undefined;
  const seqId = `generate-${++callCounter}`;
  /** The masks (when any) on a row that samples output token `produced`, after the draft tokens before it. */
  const mask = (row: Float32Array, produced: number, draft: readonly number[] = []): Float32Array => {
    if (masksRow(masks, produced)) {
      const n = outputIds.length;
      applyMasks(masks, row, produced, (i) => (i < n ? outputIds[i]! : draft[i - n]!), keep);
    }
    return row;
  };
  let done = opts.maxTokens === 0 || emit(sampler.sample(mask(last, 0), counts), last);
  while (!done) {
    const N = promptIds.length + outputIds.length;
    const room = opts.maxTokens - outputIds.length - 1;
    // the prediction's draft when the output lines up with it, else the proposer's
    const pk = predK ? Math.min(predK.next(), room) : 0;
    let draft: readonly number[] = pk > 0 ? tracker!.draft(tokens, promptIds.length, pk) : [];
    const fromPrediction = draft.length > 0;
    // now and then a step drafts nothing, so that the costs see a plain step
    const k = adaptive && !fromPrediction && !costs?.wantsPlain() ? Math.min(adaptive.next(), room) : 0;
    let q: readonly Float32Array[] | undefined;
    const t0 = performance.now();
    if (k > 0) {
      const p = proposer!.propose([{ seqId, tokens, promptLen: promptIds.length, k, blockTable, sampling: draftSampling }])[0];
      if (!p) throw new Error(`proposer ${proposer!.name} returned no proposal for one request`);
      draft = checkProposal(p.tokens, k, V, proposer!.name);
      q = p.q;
    } else if (!fromPrediction && adaptive?.wantsShadow()) {
      // paused with a free proposer: score the draft it would have made against the token this step decodes
      const p = proposer!.propose([{ seqId, tokens, promptLen: promptIds.length, k: adaptive.max, blockTable }])[0];
      if (p) adaptive.watch(checkProposal(p.tokens, adaptive.max, V, proposer!.name));
    }
    const proposeMs = performance.now() - t0;
    const logits = yield* step([outputIds.at(-1)!, ...draft], N - 1, draft.length > 0); // (1 + draft, V)
    if (draft.length === 0) {
      adaptive?.tick();
      predK?.tick();
      const id = sampler.sample(mask(logits, outputIds.length), counts);
      const t1 = performance.now(); // emitting a token (text, stops, callbacks) costs the same whether drafted or not
      adaptive?.seen(id);
      done = emit(id, logits);
      costs?.observe(1, (t1 - t0 - proposeMs) / 1000, proposeMs / 1000, 0, 1, 0, 1, 0, (performance.now() - t1) / 1000);
      continue;
    }
    for (let j = 0; j <= draft.length; j++) mask(logits.subarray(j * V, (j + 1) * V), outputIds.length + j, draft);
    const v = verifyDraft(sampler, counts, logits, draft, q);
    const t1 = performance.now();
    spec.proposed += draft.length;
    spec.accepted += v.accepted;
    if (fromPrediction) {
      predK!.update(draft.length, v.accepted);
      adaptive?.tick();
    } else {
      adaptive!.update(draft.length, v.accepted);
      proposer!.observe?.(seqId, draft.length, v.accepted);
      predK?.tick();
    }
    let kept = 0; // accepted drafts that reached the output (not past a stop)
    for (let j = 0; j < v.tokens.length && !done; j++) {
      adaptive?.seen(v.tokens[j]!); // a paused sequence's watched draft, scored while a prediction drafts
      done = emit(v.tokens[j]!, logits.subarray(j * V, (j + 1) * V));
      if (j < v.accepted) kept++;
    }
    if (fromPrediction) {
      pred.accepted += kept;
      pred.rejected += draft.length - kept;
    }
    costs?.observe(1 + draft.length, (t1 - t0 - proposeMs) / 1000, proposeMs / 1000, fromPrediction ? 0 : draft.length, v.tokens.length, 1, 1, 0, (performance.now() - t1) / 1000);
  }
  if (proposer) {
    proposer.release?.(seqId);
    proposer.learn?.(tokens, promptIds.length);
  }
  if (opts.text && !stoppedByString) {
    const tail = opts.text.flush();
    text += tail;
    if (tail) opts.onToken?.(-1, tail);
  }
  const decodeMs = performance.now() - t1;
  return {
    promptIds: [...promptIds], outputIds, text, finishReason, logprobs, promptLogprobs,
    timings: { promptTokens: promptIds.length, promptMs, generatedTokens: outputIds.length, decodeMs,
      ...(proposer || tracker ? { speculative: spec } : {}), ...(opts.prediction ? { prediction: pred } : {}),
    },
  };
}
