// Ingest preparation: extract a document's text and split it into token-aware chunks with source offsets. Pure CPU
// work on plain data, so it runs in the caller's thread or in a worker (chunk-worker.ts) alike.

import { createHash } from 'node:crypto';
import { chunkText } from './chunk.js';
import { extractDocument, sourceSpan } from './extract.js';

export interface DocumentInput {
  readonly source: string; // a path or a caller's name; re-adding the same source replaces its chunks
  readonly content: string;
  readonly kind?: string; // a file name whose extension picks the parser (default: source)
}

export interface PreparedChunk { readonly start: number; readonly end: number; readonly text: string; readonly tokens: number }
export interface PreparedDocument { readonly source: string; readonly kind: string; readonly hash: string; readonly chunks: readonly PreparedChunk[] }
export interface PrepareOptions { readonly chunkTokens: number; readonly overlap: number }

/** Extract and chunk documents off the caller's thread (e.g. ChunkWorker.prepare); same result as prepareDocuments. */
export type Preparer = (docs: readonly DocumentInput[], o: PrepareOptions) => Promise<PreparedDocument[]>;

export const docHash = (content: string): string => createHash('sha256').update(content).digest('hex');

/** Extract, hash and chunk each document; the first bad document throws (nothing is written by this step). */
export function prepareDocuments(docs: readonly DocumentInput[], o: PrepareOptions, countTokens: (text: string) => number): PreparedDocument[] {
  return docs.map((d) => {
    const doc = extractDocument(d.kind ?? d.source, d.content);
    const chunks = chunkText(doc.text, { maxTokens: o.chunkTokens, overlap: o.overlap, countTokens })
      .map((c) => ({ ...sourceSpan(doc, c.start, c.end), text: c.text, tokens: c.tokens }));
    return { source: d.source, kind: doc.kind, hash: docHash(d.content), chunks };
  });
}
