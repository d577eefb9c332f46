// Streaming text out of token ids: an incremental detokenizer that never splits a UTF-8 sequence, and a stop-string matcher.

/** What the detokenizer needs from a tokenizer. */
export interface Decoder {
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
}

export interface IncrementalDetokenizerOptions {
  /** Leave special tokens (e.g. <|eot_id|>) out of the text. Default false. */
  skipSpecialTokens?: boolean;
  /** Prompt ids; the last few give the decoder context (SentencePiece-style leading-space rules). */
  promptIds?: readonly number[];
}

const REPLACEMENT = "\uFFFD";
const PROMPT_CONTEXT = 4;

/**
 * Decodes a window of ids: [prefix, read) was already emitted, [read, end) is pending.
 * Text is emitted once decode(window) grows past decode(prefix..read) and does not end in U+FFFD,
 * i.e. once the pending bytes complete a character. Invariant: concat(push...) + flush() == decode(all ids).
 */
export class IncrementalDetokenizer {
  private ids: number[];
  private prefix = 0;
  private read: number;
  private readonly decodeOpts: { skipSpecialTokens: boolean };

  constructor(
    private readonly tokenizer: Decoder,
    opts: IncrementalDetokenizerOptions = {},
  ) {
    this.decodeOpts = { skipSpecialTokens: opts.skipSpecialTokens ?? false };
    this.ids = opts.promptIds ? opts.promptIds.slice(-PROMPT_CONTEXT) : [];
    this.read = this.ids.length;
  }

  /** Add one id; returns the text that became stable (often "", e.g. mid-emoji). */
  push(id: number): string {
    this.ids.push(id);
    const before = this.tokenizer.decode(this.ids.slice(this.prefix, this.read), this.decodeOpts);
    const after = this.tokenizer.decode(this.ids.slice(this.prefix), this.decodeOpts);
    if (after.length <= before.length || after.endsWith(REPLACEMENT)) return "";
    const out = after.slice(before.length);
    // Slide the window: the just-emitted ids become the new context.
    this.ids = this.ids.slice(this.read);
    this.prefix = 0;
    this.read = this.ids.length;
    return out;
  }

  /** Emit whatever is pending (an incomplete sequence comes out as U+FFFD) and reset the pending part. */
  flush(): string {
    if (this.read === this.ids.length) return "";
    const before = this.tokenizer.decode(this.ids.slice(this.prefix, this.read), this.decodeOpts);
    const after = this.tokenizer.decode(this.ids.slice(this.prefix), this.decodeOpts);
    this.ids = this.ids.slice(this.read);
    this.prefix = 0;
    this.read = this.ids.length;
    return after.length > before.length ? after.slice(before.length) : "";
  }
}

export interface StopResult {
  /** Text safe to emit now. */
  text: string;
  /** True once a stop string has been seen; later pushes return "". */
  stopped: boolean;
  /** The stop string that matched. */
  stop?: string;
}

/**
 * Cuts a text stream at the first stop string to complete (earliest end; ties go to the earliest start).
 * Holds back the longest tail that is a prefix of some stop string, so a stop that spans pushes is never emitted.
 * A stop must end in the text of the push that completes it: text pushed with `match` false (vLLM's min_tokens: no
 * stop string counts before them) is passed on, a stop inside it never matches, and only its held tail can begin one.
 * `include` (vLLM's include_stop_str_in_output) keeps the matched stop string in the text.
 */
export class StopStringMatcher {
  private held = "";
  private done = false;
  private matched: string | undefined;
  private readonly stops: readonly string[];
  private readonly maxLen: number;

  constructor(stops: readonly string[], private readonly include = false) {
    stops.forEach((s, i) => {
      if (typeof s !== "string" || s.length === 0) throw new Error(`StopStringMatcher: stop string ${i} is empty or not a string`);
    });
    this.stops = [...stops];
    this.maxLen = Math.max(0, ...stops.map((s) => s.length));
  }

  get stopped(): boolean {
    return this.done;
  }

  get stop(): string | undefined {
    return this.matched;
  }

  push(text: string, match = true): StopResult {
    if (this.done) return { text: "", stopped: true, stop: this.matched };
    const buf = this.held + text;
    let bestStart = -1;
    let bestEnd = Infinity;
    let best: string | undefined;
    for (const s of match ? this.stops : []) {
      // from where an occurrence ends in the new text: the held tail alone holds no whole stop that may count
      const at = buf.indexOf(s, Math.max(0, this.held.length - s.length + 1));
      if (at < 0) continue;
      const end = at + s.length;
      if (end < bestEnd || (end === bestEnd && at < bestStart)) {
        bestStart = at;
        bestEnd = end;
        best = s;
      }
    }
    if (best !== undefined) {
      this.done = true;
      this.matched = best;
      this.held = "";
      return { text: buf.slice(0, this.include ? bestEnd : bestStart), stopped: true, stop: best };
    }
    const keep = this.partialTail(buf);
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** End of stream without a stop: release the held tail. */
  flush(): string {
    const out = this.held;
    this.held = "";
    return out;
  }

  // Length of the longest proper suffix of buf that some stop string starts with.
  private partialTail(buf: string): number {
    for (let k = Math.min(this.maxLen - 1, buf.length); k > 0; k--) {
      const tail = buf.slice(buf.length - k);
      if (this.stops.some((s) => s.startsWith(tail))) return k;
    }
    return 0;
  }
}
