// What RAG needs from an embedding model: its identity, dimension, token counting and batch embedding.

import { resolve } from 'node:path';
import { Embedder, type EmbedderOptions } from '../../model/embed.js';

export interface RagEmbedder {
  readonly name: string; // recorded per collection (a model path or served name)
  readonly dim: number; // D
  readonly maxTokens: number; // longest text it embeds whole, special tokens included
  readonly tokenizerDir?: string; // a model directory whose tokenizer counts as countTokens does (lets a ChunkWorker chunk for it)
  /** Tokens the embedder would feed for text, special tokens included (uncut). */
  countTokens(text: string): number;
  /** One L2-normalised vector (D) per text, in order. */
  embed(texts: readonly string[]): Float32Array[] | Promise<Float32Array[]>;
}

/** RagEmbedder over floe's Embedder (a Llama model pooled to unit vectors); `name` is what collections record. */
export function fromEmbedder(e: Embedder, name: string, tokenizerDir?: string): RagEmbedder {
  return {
    name, dim: e.dim, maxTokens: e.maxTokens, ...(tokenizerDir ? { tokenizerDir } : {}),
    countTokens: (text) => e.tokenizer.encode(text).length,
    embed: (texts) => e.embed(texts),
  };
}

/** Open an embedding model directory; the recorded name is its resolved path unless given. */
export async function openEmbedder(path: string, opts: EmbedderOptions & { name?: string } = {}): Promise<RagEmbedder> {
  const { name, ...embedderOpts } = opts;
  return fromEmbedder(await Embedder.open(path, embedderOpts), name ?? resolve(path), resolve(path));
}
