// Guard in the server: POST /v1/moderations (OpenAI's shape) and the chat-completions guardrails (input / output rails).

import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { GenerateOutput, LogprobEntry } from '../engine/protocol.js';
import { DEFAULT_THRESHOLD, type Guard, type GuardVerdict, type JudgeOptions } from '../platform/guard/guard.js';
import { OPENAI_CATEGORIES, openAiKeys, parseCategories, parseExclude } from '../platform/guard/policy.js';
import { effectiveCategories, guardConversation, type ChatTurn, type GuardCategory, type GuardRole } from '../platform/guard/prompt.js';
import { GuardOutputError } from '../platform/guard/verdict.js';
import { ApiError, invalid } from './errors.js';

export const DEFAULT_UNSAFE_RESPONSE = 'Response filtered by floe guard';
export const DEFAULT_GUARD_WINDOW = 64;
/** Texts one /v1/moderations request may judge. */
export const MAX_MODERATION_INPUTS = 64;

export interface GuardServeOptions {
  readonly guard: () => Guard | null; // null: no --guard-model
  readonly enforce: boolean; // --guardrails: rails on for every chat request
  readonly window: number; // --guard-window: tokens held back per streamed judgement
  readonly tracked: <T>(fn: () => Promise<T>) => Promise<T>; // a graceful stop lets it finish before the guard stops
}

/**
 * Guard failures as API errors: an answer that is not a verdict is the guard's fault (502), never "safe"; a prompt
 * too long for the guard is a 400 naming `param`, the field that held the text.
 */
export function guardApiError(e: unknown, param = 'messages'): unknown {
  if (e instanceof GuardOutputError) return new ApiError(502, `guard model failure: ${e.message}`, null, 'guard_error');
  if (e instanceof Error && /^guard: the guard prompt is \d+ tokens/.test(e.message)) return new ApiError(400, e.message, param, 'context_length_exceeded');
  return e;
}

async function judged(guard: Guard, messages: readonly ChatTurn[], opts: JudgeOptions, param?: string): Promise<GuardVerdict> {
  try {
    return await guard.judge(messages, opts);
  } catch (e) {
    throw guardApiError(e, param);
  }
}

/** One request's rails: what it asked for (Cortex-style `guardrails`), the verdicts so far and the guard's token use. */
export class Rails {
  private readonly verdicts: GuardVerdict[] = [];
  readonly usage = { promptTokens: 0, completionTokens: 0 };

  constructor(
    readonly guard: Guard,
    readonly input: boolean,
    readonly output: boolean,
    readonly responseWhenUnsafe: string,
    readonly judgeOpts: Pick<JudgeOptions, 'categories' | 'exclude' | 'threshold'>,
  ) {}

  private async judge(messages: readonly ChatTurn[], role: 'user' | 'agent'): Promise<GuardVerdict> {
    const v = await judged(this.guard, messages, { ...this.judgeOpts, role });
    this.verdicts.push(v);
    this.usage.promptTokens += v.usage.promptTokens;
    this.usage.completionTokens += v.usage.completionTokens;
    return v;
  }

  /** The input rail: judge the prompt (last user message) before generating. */
  async checkInput(messages: readonly ChatTurn[]): Promise<GuardVerdict | null> {
    return this.input ? this.judge(messages, 'user') : null;
  }

  /**
   * The output rail over engine outputs (`context(source)`: the conversation the answer of that prompt follows; `total`:
   * the number of choices over every source): text is held back per choice and released only after the guard judged the
   * whole answer so far (every `window` tokens and at the end); the first unsafe judgement replaces the held text by
   * the refusal, ends that choice with finish_reason 'content_filter' and stops its generation. `continues`
   * (continue_final_message): the answer continues the context's final assistant turn, judged as that one turn.
   */
  async *wrap<T extends { source: number; value: GenerateOutput }>(
    stream: AsyncGenerator<T>, context: (source: number) => readonly ChatTurn[], n: number, total: number, window: number, abort: () => void,
    continues = false,
  ): AsyncGenerator<T> {
    type Held = { ids: number[]; text: string; logprobs: LogprobEntry[] | null; released: string; filtered: boolean; done: boolean };
    const held = new Map<number, Held>();
    try {
      for await (const item of stream) {
        const o = item.value;
        const k = item.source * n + o.index;
        let h = held.get(k);
        if (!h) held.set(k, (h = { ids: [], text: '', logprobs: o.logprobs ? [] : null, released: '', filtered: false, done: false }));
        if (h.filtered) continue; // its engine request may still run when other choices do
        h.ids.push(...o.tokenIds);
        h.text += o.text;
        if (o.logprobs) h.logprobs?.push(...o.logprobs);
        const end = o.finishReason !== null;
        if (!end && h.ids.length < window) continue;
        const v = await this.judge(withAnswer(context(item.source), h.released + h.text, continues), 'agent');
        const out: GenerateOutput = v.flagged
          ? { ...o, tokenIds: h.ids, text: h.released === '' ? this.responseWhenUnsafe : `\n${this.responseWhenUnsafe}`, logprobs: null, finishReason: 'content_filter' as 'stop', stopReason: null }
          : { ...o, tokenIds: h.ids, text: h.text, logprobs: h.logprobs };
        h.released += h.text;
        h.ids = [];
        h.text = '';
        h.logprobs = o.logprobs ? [] : null;
        h.filtered = v.flagged;
        h.done = end || v.flagged;
        yield { ...item, value: out };
        if (v.flagged && [...held.values()].filter((x) => !x.done).length === 0 && held.size >= total) {
          abort(); // every choice ended: stop generating
          return;
        }
      }
    } finally {
      await stream.return(undefined as never);
    }
  }

  /** The response's `guardrails` field. */
  summary(): { flagged: boolean; categories: string[]; unsafe_probability: number } {
    const flagged = this.verdicts.some((v) => v.flagged);
    const categories = [...new Set(this.verdicts.flatMap((v) => v.categories))];
    const p = this.verdicts.reduce((m, v) => Math.max(m, v.unsafeProbability), 0);
    return { flagged, categories, unsafe_probability: p };
  }

  /** The response's `usage` (with `usage.guard`) and `guardrails` fields. */
  fields<U extends object>(usage: U): { usage: U & { guard: ReturnType<Rails['usageField']> }; guardrails: ReturnType<Rails['summary']> } {
    return { usage: { ...usage, guard: this.usageField() }, guardrails: this.summary() };
  }

  /** The guard's tokens, reported as `usage.guard`. */
  usageField(): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
    return { prompt_tokens: this.usage.promptTokens, completion_tokens: this.usage.completionTokens, total_tokens: this.usage.promptTokens + this.usage.completionTokens };
  }
}

/**
 * The conversation an answer ends: a new assistant turn, or with `continues` the final turn's text followed by the
 * answer (a prefill and its continuation are one message; as two turns the guard would read them joined by a blank line).
 */
function withAnswer(turns: readonly ChatTurn[], answer: string, continues: boolean): ChatTurn[] {
  const last = turns[turns.length - 1];
  if (!continues || last?.role !== 'assistant') return [...turns, { role: 'assistant', content: answer }];
  const c = last.content;
  const content = typeof c === 'string' ? c + answer : Array.isArray(c) ? [...c, { type: 'text', text: answer }] : answer;
  return [...turns.slice(0, -1), { ...last, content }];
}

/**
 * The request's `guardrails` field (removed from the body): true, false, or {enabled?, input?, output?,
 * response_when_unsafe?, threshold?, categories?, exclude?}. Null when rails are off for this request.
 */
export function takeRails(body: unknown, o: GuardServeOptions): Rails | null {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return o.enforce ? railsFrom({}, o) : null;
  const b = body as Record<string, unknown>;
  const g = b.guardrails;
  delete b.guardrails;
  if (g === undefined || g === null) return o.enforce ? railsFrom({}, o) : null;
  if (typeof g === 'boolean') {
    if (!g && o.enforce) throw invalid('guardrails', 'this server enforces guardrails (--guardrails); they cannot be turned off per request');
    return g ? railsFrom({}, o) : null;
  }
  if (typeof g !== 'object' || Array.isArray(g)) throw invalid('guardrails', `'guardrails' must be a boolean or an object, got ${Array.isArray(g) ? 'an array' : typeof g}`, 'invalid_type');
  const spec = g as Record<string, unknown>;
  const known = ['enabled', 'input', 'output', 'response_when_unsafe', 'threshold', 'categories', 'exclude'];
  for (const k of Object.keys(spec)) if (!known.includes(k)) throw invalid(`guardrails.${k}`, `unrecognized argument 'guardrails.${k}' (expected ${known.join(', ')})`, 'unknown_parameter');
  if (spec.enabled !== undefined && typeof spec.enabled !== 'boolean') throw invalid('guardrails.enabled', `'guardrails.enabled' must be a boolean`, 'invalid_type');
  if (spec.enabled === false) {
    if (o.enforce) throw invalid('guardrails.enabled', 'this server enforces guardrails (--guardrails); they cannot be turned off per request');
    return null;
  }
  // --guardrails enforces the output rail: a request may add the input rail, not drop the output one
  if (o.enforce && spec.output === false) throw invalid('guardrails.output', 'this server enforces guardrails (--guardrails): the output rail cannot be turned off per request');
  return railsFrom(spec, o);
}

function railsFrom(spec: Record<string, unknown>, o: GuardServeOptions): Rails {
  const guard = o.guard();
  if (!guard) throw invalid('guardrails', 'guardrails need a guard model, and this server has none: start it with --guard-model PATH', 'guard_unavailable');
  const bool = (k: string, dflt: boolean): boolean => {
    const v = spec[k];
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') throw invalid(`guardrails.${k}`, `'guardrails.${k}' must be a boolean`, 'invalid_type');
    return v;
  };
  const text = spec.response_when_unsafe ?? DEFAULT_UNSAFE_RESPONSE;
  if (typeof text !== 'string') throw invalid('guardrails.response_when_unsafe', `'guardrails.response_when_unsafe' must be a string`, 'invalid_type');
  const threshold = spec.threshold;
  if (threshold !== undefined && !(typeof threshold === 'number' && threshold >= 0 && threshold <= 1)) {
    throw invalid('guardrails.threshold', `'guardrails.threshold' must be a number in [0, 1]`);
  }
  let categories: GuardCategory[] | undefined;
  let exclude: string[] | undefined;
  // checked here against the guard's policy, not when the guard first renders its prompt (an excluded code it does
  // not have was a 500 then)
  try {
    if (spec.categories !== undefined) categories = parseCategories(spec.categories, 'guardrails.categories');
    effectiveCategories({ format: guard.format, categories });
  } catch (e) {
    throw invalid('guardrails.categories', (e as Error).message);
  }
  try {
    if (spec.exclude !== undefined) exclude = parseExclude(spec.exclude, 'guardrails.exclude');
    effectiveCategories({ format: guard.format, categories, exclude });
  } catch (e) {
    throw invalid('guardrails.exclude', (e as Error).message);
  }
  if (o.enforce) enforcedJudgement(threshold as number | undefined, categories, exclude);
  const input = bool('input', false);
  const output = bool('output', true);
  if (!input && !output) throw invalid('guardrails', `guardrails with neither 'input' nor 'output' judge nothing`);
  return new Rails(guard, input, output, text, { categories, exclude, threshold: threshold as number | undefined });
}

/**
 * --guardrails judges with the guard's own policy at the default threshold: a request may make that check stricter
 * (a lower threshold), never weaker (a higher threshold, excluded categories, or its own categories in place of the
 * policy, which a guard judges by a different prompt).
 */
function enforcedJudgement(threshold: number | undefined, categories: readonly GuardCategory[] | undefined, exclude: readonly string[] | undefined): void {
  const why = 'this server enforces guardrails (--guardrails)';
  if (threshold !== undefined && threshold > DEFAULT_THRESHOLD) {
    throw invalid('guardrails.threshold', `${why}: 'guardrails.threshold' may be at most the enforced ${DEFAULT_THRESHOLD} (a lower one flags more), got ${threshold}`);
  }
  if (categories !== undefined) {
    throw invalid('guardrails.categories', `${why}: the guard judges by its own policy; 'guardrails.categories' cannot replace it per request`);
  }
  if (exclude !== undefined && exclude.length > 0) {
    throw invalid('guardrails.exclude', `${why}: no category can be excluded per request, got ${exclude.join(', ')}`);
  }
}

export function registerGuardRoutes(app: FastifyInstance, o: GuardServeOptions): void {
  app.post('/v1/moderations', (req) => o.tracked(async () => {
    const guard = o.guard();
    if (!guard) throw new ApiError(400, 'this server has no guard model: start it with --guard-model PATH to serve /v1/moderations', null, 'guard_unavailable');
    const b = req.body as Record<string, unknown> | null;
    if (b === null || typeof b !== 'object' || Array.isArray(b)) throw new ApiError(400, 'the request body must be a JSON object', null, 'invalid_type');
    const known = ['input', 'model', 'messages', 'role', 'include_prompt'];
    for (const k of Object.keys(b)) if (!known.includes(k)) throw invalid(k, `unrecognized argument '${k}' (expected ${known.join(', ')})`, 'unknown_parameter');
    // the guard answers to its own name (omitted: the guard, as OpenAI's default moderation model); any other is a 404
    if (b.model !== undefined && typeof b.model !== 'string') throw invalid('model', `'model' must be a string, got ${typeof b.model}`, 'invalid_type');
    if (b.model !== undefined && b.model !== guard.name) {
      throw new ApiError(404, `the model '${b.model.slice(0, 200)}' does not exist; /v1/moderations is answered by the guard '${guard.name}'`, 'model', 'model_not_found');
    }
    if (b.include_prompt !== undefined && typeof b.include_prompt !== 'boolean') throw invalid('include_prompt', `'include_prompt' must be a boolean`, 'invalid_type');
    const results = [];
    for (const { turns, role, param } of moderationConversations(b)) {
      const v = await judged(guard, turns, { role, priority: 'interactive' }, param);
      const keys = new Set(v.categories.flatMap((c) => openAiKeys(guard.format, c)));
      results.push({
        flagged: v.flagged,
        categories: Object.fromEntries(OPENAI_CATEGORIES.map((k) => [k, keys.has(k)])),
        category_scores: Object.fromEntries(OPENAI_CATEGORIES.map((k) => [k, keys.has(k) ? v.unsafeProbability : 0])),
        category_applied_input_types: Object.fromEntries(OPENAI_CATEGORIES.map((k) => [k, keys.has(k) ? ['text'] : []])),
        llama_guard: {
          categories: v.categories, unsafe_probability: v.unsafeProbability, verdict: v.verdict, format: guard.format, role,
          ...(b.include_prompt ? { prompt: v.prompt } : {}),
        },
      });
    }
    return { id: `modr-${randomUUID().replaceAll('-', '')}`, model: guard.name, results };
  }));
}

/**
 * What one moderation request judges: OpenAI's `input` (each text as a user turn, role 'user'), or floe's extension
 * `messages` (one chat conversation; `role` 'agent' judges its last assistant turn, 'user' its last user turn; by default
 * the role of the conversation's last user/assistant turn).
 */
function moderationConversations(b: Record<string, unknown>): Array<{ turns: ChatTurn[]; role: GuardRole; param: string }> {
  if (b.messages === undefined) {
    if (b.role !== undefined) throw invalid('role', `'role' applies to 'messages' (floe's conversation extension), not to 'input'`);
    // a text too long for the guard is named where it sits: 'input' (one string) or 'input[i]'
    return moderationInputs(b.input).map((text, i) => ({ turns: [{ role: 'user', content: text }], role: 'user', param: typeof b.input === 'string' ? 'input' : `input[${i}]` }));
  }
  if (b.input !== undefined) throw invalid('messages', `give either 'input' (texts) or 'messages' (one conversation), not both`);
  const m = b.messages;
  if (!Array.isArray(m) || m.length === 0) throw invalid('messages', `'messages' must be a non-empty list of chat messages ({role, content})`, 'invalid_type');
  if (b.role !== undefined && b.role !== 'user' && b.role !== 'agent') throw invalid('role', `'role' must be 'user' or 'agent', got ${JSON.stringify(b.role)}`);
  const last = [...m].reverse().find((x) => x?.role === 'user' || x?.role === 'assistant') as ChatTurn | undefined;
  const role: GuardRole = (b.role as GuardRole | undefined) ?? (last?.role === 'assistant' ? 'agent' : 'user');
  try {
    guardConversation(m as ChatTurn[], role); // checks the shapes and that there is a turn to judge
  } catch (e) {
    throw invalid('messages', (e as Error).message);
  }
  return [{ turns: m as ChatTurn[], role, param: 'messages' }];
}

/** `input`: a string, a list of strings, or a list of {type: "text", text} parts (images are refused). */
function moderationInputs(v: unknown): string[] {
  if (v === undefined) throw invalid('input', `'input' is required`, 'missing_required_parameter');
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v) || v.length === 0) throw invalid('input', `'input' must be a string or a non-empty list`, 'invalid_type');
  // each input is one guard judgement, one after another: an unbounded list held the request (and the guard) for minutes
  if (v.length > MAX_MODERATION_INPUTS) throw invalid('input', `'input' may hold at most ${MAX_MODERATION_INPUTS} texts, got ${v.length}; send the rest in further requests`);
  return v.map((x, i) => {
    if (typeof x === 'string') return x;
    const p = x as { type?: unknown; text?: unknown } | null;
    if (p?.type === 'text' && typeof p.text === 'string') return p.text;
    if (p?.type === 'text') throw invalid(`input[${i}].text`, `'input[${i}].text' must be a string, got ${p.text === undefined ? 'nothing' : JSON.stringify(p.text)?.slice(0, 80)}`, 'invalid_type');
    throw invalid(`input[${i}]`, `only text can be moderated: expected a string or {"type": "text", "text": ...}, got ${p?.type === undefined ? typeof x : `type '${String(p.type)}'`}`);
  });
}
