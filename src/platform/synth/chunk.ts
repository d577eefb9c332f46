// Passages for the from-documents method: the RAG chunker (token-aware, paragraph → sentence → word boundaries,
// overlap) behind the small Chunker interface the method reads.

import { chunkText } from '../rag/chunk.js';

/** A passage of a document, with character offsets into the document's text. */
export interface Passage {
  readonly id: string; // `${doc}#${start}`
  readonly doc: string;
  readonly start: number; // character offset of the first character
  readonly end: number; // one past the last
  readonly text: string;
}

export interface Chunker {
  chunk(doc: string, text: string): Passage[];
}

export interface DocumentChunkerOptions {
  readonly maxTokens: number; // a passage holds at most this many tokens
  readonly overlap?: number; // tokens a passage may repeat from the end of the previous one (default 0)
  readonly countTokens: (text: string) => number; // the generating model's tokenizer, without special tokens
}

/** chunkText (src/platform/rag/chunk.ts) over each document; ids and offsets point into the original text. */
export class DocumentChunker implements Chunker {
  constructor(private readonly o: DocumentChunkerOptions) {
    if (!(Number.isInteger(o.maxTokens) && o.maxTokens >= 1)) throw new RangeError(`chunker: maxTokens must be an integer >= 1, got ${o.maxTokens}`);
  }

  chunk(doc: string, text: string): Passage[] {
    return chunkText(text, { maxTokens: this.o.maxTokens, overlap: this.o.overlap ?? 0, countTokens: this.o.countTokens })
      .map((c) => ({ id: `${doc}#${c.start}`, doc, start: c.start, end: c.end, text: c.text }));
  }
}
