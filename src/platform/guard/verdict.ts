// Guard verdicts: strict parsing of "safe" / "unsafe\nS1,S3", and where in the generated tokens the unsafe probability is read.

import type { LogprobEntry } from '../../engine/protocol.js';

/** The guard wrote something that is not a verdict: never read as "safe" (the server answers 502). */
export class GuardOutputError extends Error {
  constructor(message: string, readonly output: string) {
    super(message);
  }
}

export interface ParsedVerdict {
  readonly verdict: 'safe' | 'unsafe';
  readonly categories: readonly string[]; // codes, in the order written; empty when safe
}

const CODE = '[A-Za-z][A-Za-z0-9_]*';
const UNSAFE = new RegExp(`^unsafe\\n(${CODE}(?:,${CODE})*)$`);

/**
 * "safe", or "unsafe" then one line of comma-separated codes from `allowed` (whitespace around the whole answer aside:
 * the published templates end at the assistant header, so the model writes "\n\n" first). Anything else throws.
 */
export function parseVerdict(text: string, allowed: readonly string[] | null): ParsedVerdict {
  const t = text.trim();
  if (t === 'safe') return { verdict: 'safe', categories: [] };
  if (t === '') throw new GuardOutputError(`the guard wrote no verdict (its answer was ${JSON.stringify(text)}; expected "safe" or "unsafe\\n<codes>")`, text);
  const m = UNSAFE.exec(t);
  if (!m) {
    throw new GuardOutputError(`the guard's answer is not a verdict (expected "safe" or "unsafe\\n<codes>" such as "unsafe\\nS1,S3"), got ${JSON.stringify(clip(text))}`, text);
  }
  const codes = m[1]!.split(',');
  if (allowed) {
    const bad = codes.filter((c) => !allowed.includes(c));
    if (bad.length > 0) {
      throw new GuardOutputError(`the guard named ${bad.join(', ')}, not in the policy it was given (${allowed.join(', ')}); answer ${JSON.stringify(clip(text))}`, text);
    }
  }
  return { verdict: 'unsafe', categories: codes };
}

function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

export interface VerdictTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
}

/** The generation step where "unsafe" and "safe" part ways, and the token "unsafe" takes there. */
export interface VerdictStep {
  readonly step: number; // index into the generated tokens
  readonly unsafeToken: number;
  readonly safeToken: number;
  readonly unsafeIds: readonly number[]; // the whole word "unsafe" as the tokenizer writes it from `step - d`
  readonly lead: number; // tokens before the word (whitespace such as "\n\n")
}

/**
 * The unsafe probability is P(first verdict token = "unsafe"). The first verdict token follows any whitespace the model
 * writes first; when the tokenizer splits the words ("▁un"+"safe" vs "▁safe", or a shared first piece), it is read at the
 * first token where the tokenizations of `ws+"unsafe"` and `ws+"safe"` differ, ws being the whitespace the verdict starts with.
 */
export function verdictStep(generated: readonly number[], tok: VerdictTokenizer): VerdictStep {
  let i = 0;
  let before = '';
  for (; i < generated.length; i++) {
    const upto = tok.decode(generated.slice(0, i + 1), { skipSpecialTokens: true });
    if (upto.trim() !== '') break;
    before = upto;
  }
  if (i === generated.length) throw new GuardOutputError('the guard wrote no verdict (only whitespace or nothing)', tok.decode(generated));
  const piece = tok.decode(generated.slice(0, i + 1), { skipSpecialTokens: true }).slice(before.length);
  const ws = /^\s*/.exec(piece)![0];
  const a = tok.encode(`${ws}unsafe`, { addSpecialTokens: false });
  const b = tok.encode(`${ws}safe`, { addSpecialTokens: false });
  let d = 0;
  while (d < a.length && d < b.length && a[d] === b[d]) d++;
  if (d === a.length || d === b.length) throw new Error(`guard: the tokenizer writes "unsafe" and "safe" alike (${a} / ${b}); cannot score`);
  // the shared pieces must be what the model wrote; otherwise read at the verdict's first token
  const shared = a.slice(0, d).every((t, k) => generated[i + k] === t);
  return shared
    ? { step: i + d, unsafeToken: a[d]!, safeToken: b[d]!, unsafeIds: a, lead: i }
    : { step: i, unsafeToken: a[0]!, safeToken: b[0]!, unsafeIds: a, lead: i };
}

/** P(token) from one step's logprobs: the chosen token or one of the top list; null when it is in neither. */
export function probabilityOf(entry: LogprobEntry | undefined, token: number): number | null {
  if (!entry) return null;
  if (entry.token === token) return Math.exp(entry.logprob);
  const hit = entry.top.find(([t]) => t === token);
  return hit ? Math.exp(hit[1]) : null;
}
