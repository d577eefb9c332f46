// Token-aware chunking: split text at paragraph, then sentence, then word boundaries into chunks of at most
// maxTokens tokens (counted by the embedder's tokenizer), consecutive chunks sharing up to `overlap` tokens.

export interface ChunkOptions {
  readonly maxTokens: number; // tokens per chunk, as countTokens counts them (special tokens included)
  readonly overlap: number; // most tokens a chunk repeats from the end of the previous one (0 = none)
  readonly countTokens: (text: string) => number;
}

export interface Chunk {
  readonly start: number; // [start, end) offsets into the chunked text; text === source.slice(start, end)
  readonly end: number;
  readonly text: string;
  readonly tokens: number;
}

interface Unit { start: number; end: number; tokens: number; paraEnd: boolean }

const sentences = new Intl.Segmenter('en', { granularity: 'sentence' });
const words = new Intl.Segmenter('en', { granularity: 'word' });
const SEGMENT_WINDOW = 4096; // characters given to a segmenter at once (segmentSpans)

/** Split text into chunks; every non-whitespace character lies in at least one chunk. */
export function chunkText(text: string, opts: ChunkOptions): Chunk[] {
  const { maxTokens, overlap, countTokens } = opts;
  const base = countTokens(''); // special tokens every count carries
  if (!(maxTokens > base)) throw new RangeError(`chunk size ${maxTokens} tokens leaves no room for text (the embedder adds ${base} special tokens)`);
  if (!(overlap >= 0 && overlap < maxTokens - base)) throw new RangeError(`chunk overlap must be in [0, ${maxTokens - base}) tokens, got ${overlap}`);
  const cost = (a: number, b: number) => countTokens(text.slice(a, b)) - base;
  const units = splitUnits(text, cost, maxTokens - base);
  const chunks: Chunk[] = [];
  let i = 0;
  while (i < units.length) {
    // grow [i, j) while the estimate (sum of unit costs) fits, then confirm with a real count
    let j = i, est = 0;
    while (j < units.length && (j === i || est + units[j]!.tokens <= maxTokens - base)) est += units[j++]!.tokens;
    // prefer ending at a paragraph boundary when one closes at least half of the chunk
    for (let k = j - 1, acc = est; k > i && !units[j - 1]!.paraEnd; k--) {
      acc -= units[k]!.tokens;
      if (units[k - 1]!.paraEnd && acc >= (maxTokens - base) / 2) { j = k; break; }
      if (acc < (maxTokens - base) / 2) break;
    }
    let span = trimSpan(text, units[i]!.start, units[j - 1]!.end);
    let tokens = countTokens(text.slice(span.start, span.end));
    while (tokens > maxTokens && j - 1 > i) {
      j--;
      span = trimSpan(text, units[i]!.start, units[j - 1]!.end);
      tokens = countTokens(text.slice(span.start, span.end));
    }
    if (tokens > maxTokens) throw new Error(`chunking: a unit of ${tokens} tokens at offset ${units[i]!.start} exceeds ${maxTokens}`);
    if (span.end > span.start) chunks.push({ ...span, text: text.slice(span.start, span.end), tokens });
    if (j >= units.length) break;
    // the next chunk starts at the earliest unit k in (i, j) whose tail [k, j) fits in the overlap
    let k = j;
    if (overlap > 0) {
      // walk back by the estimate, then confirm with a real count (shrinking the overlap while it is over)
      for (let acc = 0; k - 1 > i && acc + units[k - 1]!.tokens <= overlap;) acc += units[--k]!.tokens;
      // measured as the next chunk will share it: from its trimmed start to this chunk's trimmed end (a BPE count
      // of text without its leading space can exceed the count with it)
      while (k < j && cost(trimSpan(text, units[k]!.start, span.end).start, span.end) > overlap) k++;
    }
    // a whitespace-only unit would start the next chunk where this one starts: step past it
    while (k < j && trimSpan(text, units[k]!.start, units[k]!.end).start <= span.start) k++;
    i = k;
  }
  return chunks;
}

function trimSpan(text: string, a: number, b: number): { start: number; end: number } {
  while (a < b && /\s/.test(text[a]!)) a++;
  while (b > a && /\s/.test(text[b - 1]!)) b--;
  return { start: a, end: b };
}

/**
 * Segments of text[a, b) as [start, end) offsets, as one segment() call over it would give them. V8's Intl.Segmenter
 * walks a long string in time that grows faster than its length (a 200 KB run of words: 16 s; 540 KB of sentences:
 * 10 s), so it is given windows of SEGMENT_WINDOW characters; a window's last segment, which its end may cut, is
 * segmented again at the start of the next one; a segment longer than a window is cut after its last whitespace.
 */
function* segmentSpans(seg: Intl.Segmenter, text: string, a: number, b: number): Generator<[number, number]> {
  for (let s = a; s < b;) {
    let e = Math.min(b, s + SEGMENT_WINDOW);
    if (e < b && /[\uDC00-\uDFFF]/.test(text[e]!)) e++; // never cut a surrogate pair
    let last: [number, number] = [s, e];
    let first = true;
    for (const w of seg.segment(text.slice(s, e))) {
      if (!first) yield last;
      first = false;
      last = [s + w.index, s + w.index + w.segment.length];
    }
    if (e === b) {
      yield last;
      s = b;
    } else if (last[0] > s) s = last[0];
    else {
      // one segment longer than the window: cut it after its last whitespace, if any
      let k = e;
      while (k > s + 1 && !/\s/.test(text[k - 1]!)) k--;
      if (k === s + 1) k = e;
      yield [s, k];
      s = k;
    }
  }
}

/** Paragraphs → sentences → words → characters until each unit fits in `limit` tokens. */
function splitUnits(text: string, cost: (a: number, b: number) => number, limit: number): Unit[] {
  const out: Unit[] = [];
  const para = /\n[ \t]*\n\s*/g;
  let p0 = 0;
  const paragraphs: Array<[number, number]> = [];
  for (let m = para.exec(text); m; m = para.exec(text)) {
    paragraphs.push([p0, m.index + m[0].length]);
    p0 = m.index + m[0].length;
  }
  if (p0 < text.length) paragraphs.push([p0, text.length]);
  for (const [a, b] of paragraphs) {
    const before = out.length;
    for (const [sa, sb] of segmentSpans(sentences, text, a, b)) split(sa, sb, 0);
    if (out.length > before) out[out.length - 1]!.paraEnd = true;
  }
  return out;

  function split(a: number, b: number, level: number): void {
    const t = cost(a, b);
    if (t <= limit || b - a <= 1) {
      out.push({ start: a, end: b, tokens: t, paraEnd: false });
      return;
    }
    if (level === 0) {
      // words, each carrying the whitespace after it; packed greedily back into runs that fit
      let runA = a, runB = a, runT = 0;
      for (const [wa, wb] of segmentSpans(words, text, a, b)) {
        const wt = cost(wa, wb);
        if (runB > runA && runT + wt > limit) {
          split(runA, runB, 1);
          runA = wa; runT = 0;
        }
        runB = wb; runT += wt;
      }
      if (runB > runA) split(runA, runB, 1);
      return;
    }
    // one over-long word (or a run the estimate misjudged): halve by characters, never inside a surrogate pair
    let mid = a + Math.floor((b - a) / 2);
    if (/[\uDC00-\uDFFF]/.test(text[mid]!)) mid++;
    if (mid >= b) mid = b - 1;
    split(a, mid, 1);
    split(mid, b, 1);
  }
}
