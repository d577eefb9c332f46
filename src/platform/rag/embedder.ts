// What RAG needs from an embedding model: its identity, dimension, token counting and batch embedding.

export interface RagEmbedder {
  readonly name: string; // recorded per collection (a model path or served name)
  readonly dim: number; // D
  readonly maxTokens: number; // longest text it embeds whole, special tokens included
  /** Tokens the embedder would feed for text, special tokens included (uncut). */
  countTokens(text: string): number;
  /** One L2-normalised vector (D) per text, in order. */
  embed(texts: readonly string[]): Float32Array[] | Promise<Float32Array[]>;
}
