// vLLM's `truncate_prompt_tokens` (completions, chat, embeddings): how many of a prompt's token ids the model sees, and which.

import { invalid } from './errors.js';

/**
 * The tokens to keep for a request's truncate_prompt_tokens `k` (null: no truncation): k, a 400 past `maxLen` (the
 * model's max_model_len, as vLLM checks it), or `fit` for -1 (the most the request can take, at least 1).
 */
export function keepCount(k: number | null, maxLen: number, fit: number): number | null {
  if (k === null) return null;
  if (k === -1) return Math.max(1, fit);
  if (k > maxLen) {
    throw invalid('truncate_prompt_tokens', `'truncate_prompt_tokens' is ${k}, but this model takes at most ${maxLen} tokens (its max_model_len); ask for at most ${maxLen}, or -1 to keep as many as fit`);
  }
  return k;
}

/**
 * Generation keeps a prompt's last `n` tokens (vLLM's tokenizer truncates on the left). `prefix`: the tokens the
 * tokenizer adds in front of a text prompt (Llama's BOS) stay ahead of its last n - prefix tokens, as Hugging Face's
 * truncation, which vLLM runs, keeps room for them. Token ids and a chat's rendered prompt pass no prefix: cut as
 * they are, their BOS goes and nothing re-adds it (vLLM's slice).
 *
 *   ids  [BOS a b c d e]  n = 3:   prefix [BOS] → [BOS d e]    no prefix → [c d e]
 */
export function keepLast(ids: readonly number[], n: number, prefix: readonly number[] = []): number[] {
  if (ids.length <= n) return [...ids];
  const p = prefix.length > 0 && prefix.length <= n && prefix.every((t, j) => ids[j] === t) ? prefix.length : 0;
  return [...ids.slice(0, p), ...ids.slice(ids.length - (n - p))];
}

/**
 * Embeddings keep an input's first `n` tokens, BOS included: vLLM truncates on the right for pooling models (as
 * sentence-transformers does), and floe's own Embedder (`floe embed`) cuts texts the same way.
 */
export function keepFirst(ids: readonly number[], n: number): number[] {
  return ids.slice(0, n);
}
