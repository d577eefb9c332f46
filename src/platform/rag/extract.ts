// Document text extraction: .txt / .md / .html bytes → plain text plus a map from text offsets back to the source.

import { extname } from 'node:path';
import { Parser } from 'htmlparser2';
import { fromMarkdown } from 'mdast-util-from-markdown';

export type DocKind = 'text' | 'markdown' | 'html';

const KINDS: Record<string, DocKind> = {
  '.txt': 'text', '.text': 'text', '.md': 'markdown', '.markdown': 'markdown', '.html': 'html', '.htm': 'html',
};
export const SUPPORTED_EXTENSIONS = Object.keys(KINDS);

/** A run of extracted text and the source span it came from; verbatim → text === source.slice(srcStart, srcEnd). */
export interface Piece {
  readonly start: number; // offset in the extracted text
  readonly text: string;
  readonly srcStart: number;
  readonly srcEnd: number;
  readonly verbatim: boolean;
  // Markdown: where the outermost element (heading, list, emphasis, link, ...) whose text this piece begins starts in
  // the source (its '#', '-', '*', '['), and where the one whose text it ends ends ('**', '(url)'); absent: none
  readonly markStart?: number;
  readonly markEnd?: number;
}

export interface ExtractedDoc {
  readonly kind: DocKind;
  readonly text: string; // what gets chunked and embedded
  readonly pieces: readonly Piece[]; // sorted by start; separators between blocks belong to no piece
}

export function docKind(path: string): DocKind {
  const kind = KINDS[extname(path).toLowerCase()];
  if (!kind) throw new Error(`${path}: unsupported file type '${extname(path) || '(none)'}'; rag ingests ${SUPPORTED_EXTENSIONS.join(', ')}`);
  return kind;
}

class Builder {
  text = '';
  pieces: Array<{ -readonly [K in keyof Piece]: Piece[K] }> = [];
  constructor(private readonly source: string) {}

  /** Append text taken from source[srcStart, srcEnd); exact offsets when the text occurs verbatim there. */
  add(text: string, srcStart: number, srcEnd: number): void {
    if (text.length === 0) return;
    const at = this.source.slice(srcStart, srcEnd).indexOf(text);
    const piece = at >= 0
      ? { start: this.text.length, text, srcStart: srcStart + at, srcEnd: srcStart + at + text.length, verbatim: true }
      : { start: this.text.length, text, srcStart, srcEnd, verbatim: false };
    this.pieces.push(piece);
    this.text += text;
  }

  /** End a block: a blank line before the next text (none at the start, never doubled). */
  block(): void {
    if (this.text.length === 0) return;
    if (this.text.endsWith('\n\n')) return;
    this.text += this.text.endsWith('\n') ? '\n' : '\n\n';
  }

  done(kind: DocKind): ExtractedDoc {
    return { kind, text: this.text.trimEnd(), pieces: this.pieces };
  }
}

const MD_BLOCKS = new Set(['paragraph', 'heading', 'code', 'tableCell', 'thematicBreak', 'html', 'listItem', 'blockquote']);
// nodes whose children are phrasing content: HTML inside them is inline (<kbd>, <b>) and ends no block
const MD_PHRASING = new Set(['paragraph', 'heading', 'tableCell']);

interface MdNode { type: string; value?: string; alt?: string | null; children?: MdNode[]; position?: { start: { offset?: number }; end: { offset?: number } } }

function walkMarkdown(node: MdNode, b: Builder, inline = false): void {
  const s = node.position?.start.offset ?? 0, e = node.position?.end.offset ?? s;
  const first = b.pieces.length;
  if (node.type === 'text' || node.type === 'inlineCode' || node.type === 'code') b.add(node.value ?? '', s, e);
  else if (node.type === 'break') b.add('\n', s, e);
  else if (node.type === 'image' && node.alt) b.add(node.alt, s, e);
  else if (node.type === 'html') {
    // raw HTML (a README's <p align="center">, <summary>): its text as the HTML extractor reads it; tags and comments add none
    const t = extractHtml(node.value ?? '').text;
    if (t.trim() !== '') b.add(inline ? t : t.trim(), s, e);
  }
  for (const c of node.children ?? []) walkMarkdown(c, b, inline || MD_PHRASING.has(node.type));
  // the node's markup bounds its first and last pieces; outer nodes come later and win (the root is the whole file;
  // a text node has no markup, and its span holds the whitespace around it)
  if (node.type !== 'root' && node.type !== 'text' && node.position && b.pieces.length > first) {
    b.pieces[first]!.markStart = s;
    b.pieces[b.pieces.length - 1]!.markEnd = e;
  }
  if (MD_BLOCKS.has(node.type) && !(inline && node.type === 'html')) b.block();
}

const HTML_SKIP = new Set(['script', 'style', 'noscript', 'template']);
const HTML_BLOCKS = new Set([
  'p', 'div', 'section', 'article', 'header', 'footer', 'main', 'aside', 'nav', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6',
  'li', 'ul', 'ol', 'dl', 'dt', 'dd', 'pre', 'blockquote', 'table', 'tr', 'td', 'th', 'br', 'hr', 'figure', 'figcaption', 'title', 'body',
]);

function extractHtml(source: string): ExtractedDoc {
  const b = new Builder(source);
  let skip = 0, pre = 0;
  const parser = new Parser({
    onopentag(name) {
      if (HTML_SKIP.has(name)) skip++;
      if (name === 'pre') pre++;
      if (HTML_BLOCKS.has(name)) b.block();
    },
    onclosetag(name) {
      if (HTML_SKIP.has(name)) skip--;
      if (name === 'pre') pre--;
      if (HTML_BLOCKS.has(name)) b.block();
    },
    ontext(data) {
      if (skip > 0) return;
      // outside <pre>, whitespace runs collapse to one space as a browser renders them
      let t = pre > 0 ? data : data.replace(/\s+/g, ' ');
      if (pre === 0 && (b.text.length === 0 || /\s$/.test(b.text))) t = t.trimStart();
      b.add(t, parser.startIndex, parser.endIndex + 1);
    },
  }, { decodeEntities: true });
  parser.end(source);
  return b.done('html');
}

/** Extract a document's text; `path` picks the format by extension. Empty (or whitespace-only) text is an error. */
export function extractDocument(path: string, source: string): ExtractedDoc {
  const kind = docKind(path);
  let doc: ExtractedDoc;
  if (kind === 'text') {
    doc = { kind, text: source, pieces: [{ start: 0, text: source, srcStart: 0, srcEnd: source.length, verbatim: true }] };
  } else if (kind === 'markdown') {
    const b = new Builder(source);
    walkMarkdown(fromMarkdown(source) as MdNode, b);
    doc = b.done(kind);
  } else {
    doc = extractHtml(source);
  }
  if (doc.text.trim().length === 0) throw new Error(`${path}: the document is empty (no text${kind === 'text' ? '' : ` in its ${kind}`}); nothing to ingest`);
  return doc;
}

/**
 * Source offsets [start, end) holding extracted text [a, b): exact inside verbatim pieces, whole pieces otherwise; a
 * span that begins (ends) where a Markdown element's text does begins (ends) with that element's markup, outermost
 * first, so a chunk opening with a heading starts at its '#' and one closing with a **bold** word ends after the '**'.
 */
export function sourceSpan(doc: ExtractedDoc, a: number, b: number): { start: number; end: number } {
  const ps = doc.pieces;
  let lo = -1, hi = -1;
  for (let i = 0; i < ps.length; i++) {
    const p = ps[i]!;
    if (p.start + p.text.length <= a || p.start >= b) continue;
    if (lo < 0) lo = i;
    hi = i;
  }
  if (lo < 0) return { start: 0, end: 0 };
  const first = ps[lo]!, last = ps[hi]!;
  // only whitespace of the piece lies before a (after b): the span holds the piece's start (end)
  const atStart = doc.text.slice(first.start, a).trim() === '';
  const atEnd = doc.text.slice(b, last.start + last.text.length).trim() === '';
  const start = atStart && first.markStart !== undefined ? first.markStart
    : first.verbatim ? first.srcStart + Math.max(0, a - first.start) : first.srcStart;
  const end = atEnd && last.markEnd !== undefined ? last.markEnd
    : last.verbatim ? last.srcStart + Math.min(last.text.length, b - last.start) : last.srcEnd;
  return { start, end };
}
