// Grounding of a from-documents answer in its passage, beyond the judge: (1) content-word support, the share of the
// answer's distinct content words that occur in the passage; (2) the model's log-likelihood gain, how much more likely
// the answer is (mean nats per answer token) when the model reads the passage than from the question alone.
//
//   support  = |content(answer) ∩ words(passage)| / |content(answer)|            in [0, 1]; 1 when the answer has none
//   ll_gain  = [log p(answer | passage, question) − log p(answer | question)] / answer tokens     (nats / token)
//
// content(text): lower-cased words (letters / digits, inner ' and -) that are not function words; a word matches a
// passage word equal to it or to it without a plural / possessive "s" ("rivers" ~ "river").

import type { ChatMessage } from '../../formats/chat-template.js';
import type { SynthLlm } from './llm.js';

// Function words: an answer built only of these says nothing the passage must support.
const FUNCTION_WORDS = new Set((
  'a an the and or but nor so yet if then than that this these those there here what which who whom whose when where why how ' +
  'is are was were be been being am do does did done doing have has had having will would shall should can could may might must ' +
  'i me my mine we us our ours you your yours he him his she her hers it its they them their theirs one ones ' +
  'of in on at to for from by with about into onto over under after before between through during without within upon ' +
  'as not no yes all any some each every both either neither such same other another more most much many few less least ' +
  'also only just very too quite rather again still even ever never always often up down out off away back ' +
  'according passage text question answer states stated says said mentioned describes described'
).split(' '));

const WORD = /[\p{L}\p{N}]+(?:['’-][\p{L}\p{N}]+)*/gu;

function norm(w: string): string {
  const x = w.toLowerCase().replace(/’/g, "'").replace(/'s$/, '');
  return x.length > 3 && x.endsWith('s') && !x.endsWith('ss') ? x.slice(0, -1) : x;
}

/** Distinct content words of a text, normalised (lower case, no plural / possessive s). */
export function contentWords(text: string): string[] {
  const out = new Set<string>();
  for (const m of text.matchAll(WORD)) {
    const w = m[0].toLowerCase();
    if (FUNCTION_WORDS.has(w) || (w.length < 2 && !/\d/.test(w))) continue;
    out.add(norm(w));
  }
  return [...out];
}

/** Share of the answer's content words found in the passage, and the ones that are not. */
export function wordSupport(answer: string, passage: string): { support: number; words: number; unsupported: string[] } {
  const have = new Set([...passage.matchAll(WORD)].map((m) => norm(m[0])));
  const words = contentWords(answer);
  const unsupported = words.filter((w) => !have.has(w));
  return { support: words.length === 0 ? 1 : 1 - unsupported.length / words.length, words: words.length, unsupported };
}

export interface GroundingOptions {
  readonly minSupport: number | null; // drop below this content-word support (null: record only); default 0.5
  readonly minGain: number | null; // drop below this log-likelihood gain in nats / token (null: not computed)
}

export const DEFAULT_GROUNDING: GroundingOptions = { minSupport: 0.5, minGain: null };

export interface GroundingScore {
  readonly support: number;
  readonly unsupported: readonly string[]; // at most 8, for reading the provenance
  readonly ll_with?: number; // mean log p per answer token, with the passage
  readonly ll_without?: number; // and from the question alone
  readonly ll_gain?: number;
}

/** Score one answer; `reason` is set when a threshold drops it (`ungrounded_words`, `ungrounded_ll`). */
export async function grounding(
  llm: SynthLlm, o: GroundingOptions, passage: string, question: string, withPassage: readonly ChatMessage[], answer: string,
): Promise<{ score: GroundingScore; reason: string | null }> {
  const w = wordSupport(answer, passage);
  let score: GroundingScore = { support: round(w.support), unsupported: w.unsupported.slice(0, 8) };
  if (o.minSupport !== null && w.support < o.minSupport) return { score, reason: 'ungrounded_words' };
  if (o.minGain === null) return { score, reason: null };
  if (!llm.logprob) throw new Error(`${llm.name} cannot score text (no log-likelihoods from this model source); drop the log-likelihood grounding threshold`);
  const [a, b] = await Promise.all([llm.logprob(withPassage, answer), llm.logprob([{ role: 'user', content: question }], answer)]);
  const n = Math.max(1, a.tokens);
  const gain = a.logprob / n - b.logprob / Math.max(1, b.tokens);
  score = { ...score, ll_with: round(a.logprob / n), ll_without: round(b.logprob / Math.max(1, b.tokens)), ll_gain: round(gain) };
  return { score, reason: gain < o.minGain ? 'ungrounded_ll' : null };
}

const round = (x: number) => Math.round(x * 1e4) / 1e4;
