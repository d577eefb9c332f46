// Token masks a request sets besides a grammar (vLLM's min_tokens, allowed_token_ids, bad_words), applied to a logits
// row before sampling: by the engine's runner to every sampled and verify row, and by generate().

/** What a request masks besides a grammar. */
export interface TokenMasks {
  readonly minTokens: number; // while the output holds fewer tokens, stopIds are masked
  readonly stopIds: Int32Array;
  readonly allowed: Int32Array | null; // only these ids may be sampled
  readonly badWords: readonly (readonly number[])[]; // a sequence's last id is masked where the output ends with the rest
}

/** Whether `m` masks anything in the row that samples output token `produced`. */
export function masksRow(m: TokenMasks | null | undefined, produced: number): m is TokenMasks {
  return !!m && (produced < m.minTokens || m.allowed !== null || m.badWords.length > 0);
}

/**
 * Mask a logits row (V) that samples output token `produced` (output token i is out(i)); `keep` is scratch of at
 * least allowed.length floats.
 */
export function applyMasks(m: TokenMasks, row: Float32Array, produced: number, out: (i: number) => number, keep: Float32Array): void {
  if (m.allowed !== null) {
    const a = m.allowed;
    for (let i = 0; i < a.length; i++) keep[i] = row[a[i]!]!;
    row.fill(-Infinity);
    for (let i = 0; i < a.length; i++) row[a[i]!] = keep[i]!;
  }
  if (produced < m.minTokens) for (const id of m.stopIds) row[id] = -Infinity;
  for (const w of m.badWords) {
    const n = w.length - 1; // the prefix the output must end with
    if (n > produced) continue;
    let hit = true;
    for (let i = 0; i < n && hit; i++) hit = out(produced - n + i) === w[i];
    if (hit) row[w[n]!] = -Infinity;
  }
}

/** The options a request masks tokens with, as the server's fields give them (min_tokens, allowed_token_ids, bad_words as ids). */
export interface TokenMaskOptions {
  readonly minTokens: number;
  readonly maxTokens: number;
  readonly stopIds: ReadonlySet<number>; // EOS (unless ignored) and the stop token ids: masked under minTokens
  readonly allowed: readonly number[] | null;
  readonly badWords: readonly (readonly number[])[];
}

/** What tokenMasks' errors call the options: the caller's own names for them. */
export interface TokenMaskNames {
  readonly minTokens: string;
  readonly maxTokens: string;
  readonly allowed: string;
  readonly badWords: string;
  readonly badWord: (i: number) => string; // one token id sequence of badWords
}

/** The server's request fields (the engine's errors reach HTTP clients); bad words are counted as token sequences. */
export const SERVER_MASK_NAMES: TokenMaskNames = {
  minTokens: 'min_tokens', maxTokens: 'max_tokens', allowed: 'allowed_token_ids', badWords: 'bad words', badWord: (i) => `bad word ${i}`,
};

/** The masks of `o` over a vocabulary of V ids, or null when nothing is masked; throws a RangeError naming a bad option as `n` calls it. */
export function tokenMasks(o: TokenMaskOptions, V: number, n: TokenMaskNames = SERVER_MASK_NAMES): TokenMasks | null {
  const { minTokens, maxTokens, allowed, badWords } = o;
  if (!(Number.isInteger(minTokens) && minTokens >= 0 && minTokens <= maxTokens)) throw new RangeError(`${n.minTokens} must be an integer in [0, ${n.maxTokens} = ${maxTokens}], got ${String(minTokens)}`);
  if (allowed !== null) {
    if (!Array.isArray(allowed) || allowed.length === 0) throw new RangeError(`${n.allowed} must be a non-empty array of token ids`);
    allowed.forEach((id, i) => { if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`${n.allowed}[${i}] is ${id}, outside the vocabulary [0, ${V})`); });
    if (minTokens > 0 && allowed.every((id) => o.stopIds.has(id))) throw new RangeError(`${n.allowed} holds only stop ids, which ${n.minTokens} masks: nothing could be sampled`);
  }
  if (!Array.isArray(badWords)) throw new RangeError(`${n.badWords} must be an array of token id sequences`);
  badWords.forEach((w, i) => {
    if (!Array.isArray(w) || w.length === 0 || !w.every((id) => Number.isInteger(id) && id >= 0 && id < V)) throw new RangeError(`${n.badWord(i)} must be a non-empty array of token ids in [0, ${V})`);
  });
  if (minTokens === 0 && allowed === null && badWords.length === 0) return null;
  return {
    minTokens, stopIds: Int32Array.from([...o.stopIds].filter((id) => id >= 0 && id < V)),
    allowed: allowed === null ? null : Int32Array.from(new Set(allowed)), badWords,
  };
}
