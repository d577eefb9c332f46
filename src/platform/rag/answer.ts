// Answering over retrieved passages: optional log-likelihood rerank through the engine, a numbered-passage prompt
// that fits the context window (lowest-ranked passages dropped), generation, and citations.

import { randomUUID } from 'node:crypto';
import type { EngineClient, SamplingSpec } from '../../engine/protocol.js';
import { encodeChat, type ChatMessage, type ChatTemplate } from '../../formats/chat-template.js';
import type { Tokenizer } from '../../formats/tokenizer.js';
import type { RagEmbedder } from './embedder.js';
import type { Collection, Passage, SearchOptions } from './store.js';

export type RagTokenizer = Pick<Tokenizer, 'encode' | 'decode' | 'bosToken' | 'eosToken'>;

/** The chat model side: an engine plus the tokenizer and chat template of its model. */
export interface AnswerModel {
  readonly engine: EngineClient;
  readonly tokenizer: RagTokenizer;
  readonly template: ChatTemplate | null; // null: a plain "Passages / Question / Answer" prompt
}

export interface Citation {
  readonly index: number; // the passage's [n] in the prompt
  readonly id: string;
  readonly source: string;
  readonly chunk: number;
  readonly start: number;
  readonly end: number;
  readonly score: number;
  readonly cited: boolean; // the answer refers to [n]
}

export const RAG_INSTRUCTION =
  'Answer the question using only the numbered passages below. Cite the passages you use by their number in brackets, like [1]. ' +
  'If the passages do not contain the answer, say so.';

/** The passages block: "[n] (source) text" per passage, numbered from 1. */
export function passagesBlock(passages: readonly Passage[]): string {
  return passages.map((p, i) => `[${i + 1}] (${p.source}) ${p.text}`).join('\n\n');
}

/** Messages with the passages injected: into the leading system message, or as a new one before the conversation. */
export function injectPassages(messages: readonly ChatMessage[], passages: readonly Passage[]): ChatMessage[] {
  if (passages.length === 0) return [...messages];
  const block = `${RAG_INSTRUCTION}\n\n${passagesBlock(passages)}`;
  const first = messages[0];
  if (first && first.role === 'system' && typeof first.content === 'string') {
    return [{ ...first, content: `${first.content}\n\n${block}` }, ...messages.slice(1)];
  }
  return [{ role: 'system', content: block }, ...messages];
}

/** Plain prompt for a model without a chat template. */
export function plainPrompt(question: string, passages: readonly Passage[]): string {
  return `${RAG_INSTRUCTION}\n\nPassages:\n${passagesBlock(passages)}\n\nQuestion: ${question}\nAnswer:`;
}

export interface Fitted {
  readonly ids: number[];
  readonly messages: ChatMessage[] | null;
  readonly used: Passage[]; // in rank order; [n] = position + 1
  readonly dropped: Passage[]; // lowest-ranked passages that did not fit
}

/**
 * Keep the longest rank-order prefix of the passages whose prompt is at most `limit` tokens (binary search over the
 * prefix length; the prompt grows with it). With none fitting, the prompt has no passages.
 */
export function fitPassages(passages: readonly Passage[], build: (ps: readonly Passage[]) => { ids: number[]; messages: ChatMessage[] | null }, limit: number): Fitted {
  let lo = 0, hi = passages.length;
  let best = build([]);
  const all = build(passages);
  if (all.ids.length <= limit) return { ...all, used: [...passages], dropped: [] };
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    const b = build(passages.slice(0, mid));
    if (b.ids.length <= limit) { lo = mid; best = b; } else hi = mid - 1;
  }
  return { ...best, used: passages.slice(0, lo), dropped: passages.slice(lo) };
}

/** Prompt ids for a question over passages, through the chat template when the model has one. */
export function promptBuilder(m: Pick<AnswerModel, 'tokenizer' | 'template'>, question: string, system: string | null = null) {
  return (ps: readonly Passage[]): { ids: number[]; messages: ChatMessage[] | null } => {
    if (!m.template) return { ids: m.tokenizer.encode(plainPrompt(question, ps)), messages: null };
    const base: ChatMessage[] = [...(system ? [{ role: 'system', content: system }] : []), { role: 'user', content: question }];
    const messages = injectPassages(base, ps);
    return { ids: encodeChat(m.tokenizer, m.template, messages, { addGenerationPrompt: true }), messages };
  };
}

/** Which [n] the text cites (1-based, within 1..count), in order of first mention. */
export function citedNumbers(text: string, count: number): number[] {
  const out: number[] = [];
  for (const m of text.matchAll(/\[(\d+(?:\s*,\s*\d+)*)\]/g)) {
    for (const s of m[1]!.split(',')) {
      const n = Number(s.trim());
      if (n >= 1 && n <= count && !out.includes(n)) out.push(n);
    }
  }
  return out;
}

export function citations(used: readonly Passage[], answer: string): Citation[] {
  const cited = new Set(citedNumbers(answer, used.length));
  return used.map((p, i) => ({ index: i + 1, id: p.id, source: p.source, chunk: p.chunk, start: p.start, end: p.end, score: p.score, cited: cited.has(i + 1) }));
}

const GREEDY: SamplingSpec = {
  temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0, logitBias: null, seed: null,
};

/**
 * Rerank by the chat model's log-likelihood of the query given each passage: score = mean log p(query token |
 * passage, "Question:", earlier query tokens), one engine request per passage (prompt logprobs, one output token).
 */
export async function rerank(engine: EngineClient, tokenizer: RagTokenizer, query: string, passages: readonly Passage[]): Promise<Passage[]> {
  const limit = engine.info.maxRequestTokens - 1;
  const qIds = tokenizer.encode(`\nQuestion: ${query}`, { addSpecialTokens: false });
  const scored = await Promise.all(passages.map(async (p) => {
    const head = tokenizer.encode(`Passage: ${p.text}`);
    // keep the whole query; cut the passage from the end when both do not fit
    const ids = [...head.slice(0, Math.max(1, limit - qIds.length)), ...qIds].slice(0, limit);
    const qFrom = ids.length - qIds.length;
    let lps: ReadonlyArray<{ logprob: number } | null> | null = null;
    for await (const o of engine.generate({
      id: `rerank-${randomUUID()}`, promptIds: ids, sampling: GREEDY, maxTokens: 1, n: 1, stop: [], stopTokenIds: [], ignoreEos: true,
      logprobs: null, promptLogprobs: 0, skipSpecialTokens: true, speculative: false,
    })) if (o.promptLogprobs) lps = o.promptLogprobs;
    if (!lps) throw new Error('rerank: the engine returned no prompt logprobs');
    let sum = 0;
    for (let t = Math.max(1, qFrom); t < ids.length; t++) sum += lps[t]?.logprob ?? 0;
    return { ...p, score: sum / Math.max(1, ids.length - Math.max(1, qFrom)) };
  }));
  return scored.sort((a, b) => b.score - a.score);
}

export interface AskOptions extends SearchOptions {
  readonly rerank?: boolean; // rerank the top rerankDepth passages by log-likelihood before keeping k
  readonly rerankDepth?: number; // default 2k
  readonly maxTokens?: number; // answer length (default 256, less when the context is short)
  readonly sampling?: SamplingSpec; // default greedy
  readonly system?: string | null;
}

export interface RagAnswer {
  readonly answer: string;
  readonly citations: Citation[]; // the passages in the prompt, [n] order
  readonly dropped: Array<Omit<Citation, 'cited' | 'index'>>; // retrieved but left out: the context was full
  readonly finishReason: string | null;
  readonly usage: { readonly promptTokens: number; readonly completionTokens: number };
}

/** Retrieve, optionally rerank, fit, generate: an answer with citations. */
export async function ask(collection: Collection, embedder: RagEmbedder | null, model: AnswerModel, question: string, opts: AskOptions = {}): Promise<RagAnswer> {
  const k = opts.k ?? 5;
  let passages = await collection.search(question, embedder, { ...opts, k: opts.rerank ? (opts.rerankDepth ?? 2 * k) : k });
  if (opts.rerank) passages = (await rerank(model.engine, model.tokenizer, question, passages)).slice(0, k);
  const ctx = model.engine.info.maxRequestTokens;
  const maxTokens = opts.maxTokens ?? Math.min(256, Math.floor(ctx / 4));
  if (maxTokens >= ctx) throw new RangeError(`max tokens ${maxTokens} leaves no room for the prompt in the ${ctx}-token context`);
  const fitted = fitPassages(passages, promptBuilder(model, question, opts.system ?? null), ctx - maxTokens);
  if (fitted.ids.length > ctx - maxTokens) throw new Error(`the question alone is ${fitted.ids.length} tokens; with ${maxTokens} for the answer it does not fit the ${ctx}-token context`);
  let answer = '', finishReason: string | null = null, completionTokens = 0;
  for await (const o of model.engine.generate({
    id: `rag-${randomUUID()}`, promptIds: fitted.ids, sampling: opts.sampling ?? GREEDY, maxTokens, n: 1, stop: [], stopTokenIds: [],
    ignoreEos: false, logprobs: null, promptLogprobs: null, skipSpecialTokens: true,
  })) {
    answer += o.text;
    completionTokens += o.tokenIds.length;
    if (o.finishReason) finishReason = o.finishReason;
  }
  return {
    answer, citations: citations(fitted.used, answer),
    dropped: fitted.dropped.map((p) => ({ id: p.id, source: p.source, chunk: p.chunk, start: p.start, end: p.end, score: p.score })),
    finishReason, usage: { promptTokens: fitted.ids.length, completionTokens },
  };
}
