// Sample filters: length, language sanity, refusals / unanswerable, copies of a parent; the guard interface.

import type { ChatMessage } from '../../formats/chat-template.js';
import type { Guard } from '../guard/guard.js';
import { GuardOutputError } from '../guard/verdict.js';
import { normalise } from './minhash.js';

/** Why a sample was dropped: a short stable reason, counted in the summary. */
export type Verdict = { readonly ok: true } | { readonly ok: false; readonly reason: string };

export const OK: Verdict = { ok: true };
const drop = (reason: string): Verdict => ({ ok: false, reason });

export interface TextLimits {
  readonly minChars: number;
  readonly maxChars: number;
  readonly minLetterShare: number; // share of letters (any script) among non-space characters
  readonly minKnownWords: number; // share of words found in a common-word list (ASCII text only)
}

export const DEFAULT_LIMITS: TextLimits = { minChars: 8, maxChars: 4000, minLetterShare: 0.6, minKnownWords: 0.15 };

// The most frequent English words: a text with almost none of them is noise or another language than the prompts'.
const COMMON = new Set(('the of and to a in is that for it as was with be by on not he i this are or his from at which but have an they you ' +
  'were her she there one all we their has been had would what will can if so who more no when do my your about out up them some ' +
  'into how could than its other these may then any only our us use how what why where write list give make explain describe ' +
  'also new time two first people very over just like after most made way many before good should well each those because through ' +
  'me him does did here said must being between year years work day used under same both while own such our find').split(' '));

/** Length and language sanity of one text. */
export function checkText(text: string, lim: TextLimits, what: string): Verdict {
  const t = text.trim();
  if (t.length < lim.minChars) return drop(`${what}_too_short`);
  if (t.length > lim.maxChars) return drop(`${what}_too_long`);
  const chars = t.replace(/\s+/g, '');
  const letters = (chars.match(/\p{L}/gu) ?? []).length;
  if (letters / chars.length < lim.minLetterShare) return drop(`${what}_not_language`);
  const words = t.toLowerCase().match(/[a-z']+/g) ?? [];
  if (words.length >= 4 && letters === (t.match(/[A-Za-z]/g) ?? []).length) {
    const known = words.filter((w) => COMMON.has(w)).length;
    if (known / words.length < lim.minKnownWords) return drop(`${what}_not_language`);
  }
  return OK;
}

const REFUSAL = /\b(i('| a)m sorry|i apologi[sz]e|i can(no|')t (help|assist|answer|do|provide|comply)|i am unable|i'm unable|as an ai\b|as a language model|i do not have (access|the ability)|i don't have (access|the ability)|cannot fulfill)/i;
const UNANSWERABLE = /\b(not enough (information|context)|cannot be answered|no way to know|insufficient (information|context)|it is impossible to (say|know|answer))\b/i;

/** A refusal or an "I cannot know" answer. */
export function checkAnswer(text: string): Verdict {
  if (REFUSAL.test(text)) return drop('refused');
  if (UNANSWERABLE.test(text)) return drop('unanswerable');
  return OK;
}

/** An evolved instruction that only repeats its parent. */
export function isCopy(child: string, parent: string): boolean {
  const c = normalise(child).replace(/[^\p{L}\p{N} ]/gu, '');
  const p = normalise(parent).replace(/[^\p{L}\p{N} ]/gu, '');
  return c === p || (p.length > 0 && c.includes(p) && c.length < p.length * 1.1);
}

/** A safety classifier over a finished conversation (e.g. a Llama-Guard model); categories name what was hit. */
export interface GuardFilter {
  readonly name: string;
  check(messages: readonly ChatMessage[]): Promise<{ readonly safe: boolean; readonly categories: readonly string[] }>;
}

/** No guard model given: everything passes. */
export const NO_GUARD: GuardFilter = { name: 'none', check: async () => ({ safe: true, categories: [] }) };

/** Llama Guard's answer: "safe", or "unsafe" and a line of comma-separated categories (S1, S2, ...). Anything else throws. */
export function parseGuardAnswer(text: string): { safe: boolean; categories: string[] } {
  const lines = text.trim().split('\n').map((l) => l.trim()).filter(Boolean);
  if (lines[0] === 'safe') return { safe: true, categories: [] };
  if (lines[0] === 'unsafe') return { safe: false, categories: (lines[1] ?? 'unknown').split(',').map((c) => c.trim()).filter(Boolean) };
  throw new Error(`guard answer is neither 'safe' nor 'unsafe': ${JSON.stringify(text.slice(0, 80))}`);
}

/**
 * floe's Llama Guard runtime (src/platform/guard: the exact prompt format, strict verdict, P(unsafe) threshold) as a
 * filter: a sample with an answer is judged in the agent role, a lone user turn in the user role. A guard that
 * answers garbage does not pass the sample.
 */
export class RuntimeGuard implements GuardFilter {
  constructor(private readonly guard: Guard, readonly name: string) {}
  async check(messages: readonly ChatMessage[]): Promise<{ safe: boolean; categories: string[] }> {
    const role = messages.some((m) => m.role === 'assistant') ? 'agent' : 'user';
    try {
      const v = await this.guard.judge(messages, { role });
      return { safe: !v.flagged, categories: [...v.categories] };
    } catch (e) {
      if (e instanceof GuardOutputError) return { safe: false, categories: ['unparsed'] };
      throw e;
    }
  }
}

/** A guard model served through a SynthLlm: its own chat template carries the policy (as Llama Guard's does). */
export class LlmGuard implements GuardFilter {
  constructor(private readonly llm: import('./llm.js').SynthLlm) {}
  get name(): string { return this.llm.name; }
  async check(messages: readonly ChatMessage[]): Promise<{ safe: boolean; categories: string[] }> {
    const g = await this.llm.chat(messages, { maxTokens: 24, temperature: 0, topP: 1, seed: 0 });
    try {
      return parseGuardAnswer(g.text);
    } catch {
      return { safe: false, categories: ['unparsed'] }; // a guard that cannot say "safe" does not pass the sample
    }
  }
}
