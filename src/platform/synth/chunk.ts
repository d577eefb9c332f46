// Document chunking for the from-documents method: an interface, and a paragraph chunker bounded in tokens.

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

export interface ParagraphChunkerOptions {
  readonly maxTokens: number; // a passage holds at most this many tokens (a longer paragraph is cut at sentence ends, then words)
  readonly minTokens: number; // shorter paragraphs are merged with the next one
  readonly count?: (text: string) => number; // token count; default: words
}

const words = (s: string): number => (s.match(/\S+/g) ?? []).length;

/** Paragraphs (blank-line separated) packed up to maxTokens; offsets point into the original text. */
export class ParagraphChunker implements Chunker {
  constructor(private readonly o: ParagraphChunkerOptions) {
    if (!(o.maxTokens >= 1 && o.minTokens >= 0 && o.minTokens <= o.maxTokens)) throw new RangeError(`chunker: need 0 <= minTokens <= maxTokens and maxTokens >= 1, got ${o.minTokens}, ${o.maxTokens}`);
  }

  chunk(doc: string, text: string): Passage[] {
    const count = this.o.count ?? words;
    // pieces: [start, end) spans of paragraphs, long ones split at sentence ends / words
    const pieces: [number, number][] = [];
    for (const m of text.matchAll(/\S[\s\S]*?(?=\n\s*\n|\s*$)/g)) {
      const s = m.index!;
      this.split(text, s, s + m[0].length, count, pieces);
    }
    const out: Passage[] = [];
    let cur: [number, number] | null = null;
    for (const p of pieces) {
      if (cur && count(text.slice(cur[0], p[1])) <= this.o.maxTokens && count(text.slice(cur[0], cur[1])) < this.o.minTokens) cur[1] = p[1];
      else { if (cur) out.push(this.passage(doc, text, cur)); cur = [p[0], p[1]]; }
    }
    if (cur) out.push(this.passage(doc, text, cur));
    return out;
  }

  private split(text: string, s: number, e: number, count: (t: string) => number, out: [number, number][]): void {
    if (count(text.slice(s, e)) <= this.o.maxTokens) { out.push([s, e]); return; }
    // greedy: extend by sentences (or words when a sentence alone is too long) while it fits
    const units = [...text.slice(s, e).matchAll(/[\s\S]*?(?:[.!?]+\s+|$)/g)].filter((m) => m[0].length > 0).flatMap((m) => {
      const u = m[0];
      return count(u) <= this.o.maxTokens ? [[s + m.index!, s + m.index! + u.length] as [number, number]]
        : [...u.matchAll(/\S+\s*/g)].map((w) => [s + m.index! + w.index!, s + m.index! + w.index! + w[0].length] as [number, number]);
    });
    let a = units[0]![0];
    let b = a;
    for (const [us, ue] of units) {
      if (b > a && count(text.slice(a, ue)) > this.o.maxTokens) { out.push([a, trimEnd(text, a, b)]); a = us; }
      b = ue;
    }
    if (b > a) out.push([a, trimEnd(text, a, b)]);
  }

  private passage(doc: string, text: string, [start, end]: [number, number]): Passage {
    return { id: `${doc}#${start}`, doc, start, end, text: text.slice(start, end) };
  }
}

function trimEnd(text: string, a: number, b: number): number {
  while (b > a && /\s/.test(text[b - 1]!)) b--;
  return b;
}
