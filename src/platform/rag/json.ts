// RAG results as floe's JSON names them, snake_case as the OpenAI routes: `floe rag --json` and the /v1/rag routes
// answer with these; the library's objects (Passage, CollectionInfo, RagAnswer) stay camelCase.

import type { RagAnswer } from './answer.js';
import type { CollectionInfo, Passage } from './store.js';

/** A passage; vector_rank / bm25_rank (hybrid: its rank in the dense / BM25 list) only where the library has them. */
export function passageJson({ vectorRank, bm25Rank, ...p }: Passage): Record<string, unknown> {
  return { ...p, ...(vectorRank !== undefined ? { vector_rank: vectorRank } : {}), ...(bm25Rank !== undefined ? { bm25_rank: bm25Rank } : {}) };
}

/** A collection's description: vector_index is null under brute force. */
export function collectionJson({ vectorIndex, ...c }: CollectionInfo): Record<string, unknown> {
  return { ...c, vector_index: vectorIndex };
}

/** An answer: finish_reason, and usage as the OpenAI routes count it. */
export function answerJson(r: RagAnswer): Record<string, unknown> {
  const { promptTokens, completionTokens } = r.usage;
  return {
    answer: r.answer, citations: r.citations, dropped: r.dropped, finish_reason: r.finishReason,
    usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
  };
}
