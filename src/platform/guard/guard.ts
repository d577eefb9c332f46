// Guard: a Llama Guard checkpoint on its own engine; judge(messages) → flagged, categories, unsafe probability.

import { randomUUID } from 'node:crypto';
import { statModel } from '../../formats/load.js';
import { basename } from 'node:path';
import { ENGINE_START_OPTIONS, startEngineChecked, type EngineStartOptions } from '../../engine/client.js';
import type { EngineClient, GenerateOutput, GenerateRequest, LogprobEntry, RequestPriority } from '../../engine/protocol.js';
import { ChatTemplate, loadChatTemplate, selectChatTemplate } from '../../formats/chat-template.js';
import { readGguf } from '../../formats/gguf.js';
import { tokenizerFromGguf } from '../../formats/gguf-tokenizer.js';
import { loadTokenizer, type Tokenizer } from '../../formats/tokenizer.js';
import {
  buildGuardPrompt, detectGuardFormat, effectiveCategories, guardConversation, GUARD_FORMATS,
  type ChatTurn, type GuardCategory, type GuardFormat, type GuardMessage, type GuardRole,
} from './prompt.js';
import { GuardOutputError, parseVerdict, probabilityOf, verdictStep } from './verdict.js';
import { checkOptions, type OptionKeys } from '../../tensor/options.js';
import { choiceRegex } from '../../engine/constrained/regex.js';

export type GuardTokenizer = Pick<Tokenizer, 'encode' | 'encodePlain' | 'decode' | 'bosId' | 'bosToken' | 'specialTokens'>;

/** Sentinels standing for special-token text inside judged messages while the prompt renders (planes 15–16, private use). */
const SENTINEL_BASE = 0xf0000;
const SENTINEL_LAST = 0x10fffd;

export interface JudgeOptions {
  role?: GuardRole; // default 'user'
  categories?: readonly GuardCategory[];
  exclude?: readonly string[];
  threshold?: number; // flagged when P(unsafe) ≥ threshold; default 0.5
  signal?: AbortSignal;
  priority?: RequestPriority;
}

export interface GuardVerdict {
  readonly flagged: boolean;
  readonly verdict: 'safe' | 'unsafe'; // what the guard wrote (greedy)
  readonly categories: readonly string[]; // codes; when flagged by threshold alone, the ones the guard names after "unsafe"
  readonly unsafeProbability: number; // P(first verdict token = "unsafe")
  readonly output: string; // the guard's raw answer
  readonly prompt: string; // the exact prompt text
  readonly usage: { readonly promptTokens: number; readonly completionTokens: number }; // over every guard request made
}

export interface GuardOpenOptions extends Omit<EngineStartOptions, 'model' | 'modelId'> {
  format?: GuardFormat; // default: the checkpoint's Llama Guard template, else llama-guard-3
  name?: string; // the model name it answers to (/v1/moderations); default: the path's base name, without .gguf
}

export const DEFAULT_THRESHOLD = 0.5;
const { model: _model, modelId: _modelId, ...GUARD_ENGINE_OPTIONS } = ENGINE_START_OPTIONS;
const GUARD_OPEN_OPTIONS = { ...GUARD_ENGINE_OPTIONS, format: true, name: true } as const satisfies OptionKeys<GuardOpenOptions>;
const JUDGE_OPTIONS = { role: true, categories: true, exclude: true, threshold: true, signal: true, priority: true } as const satisfies OptionKeys<JudgeOptions>;
const TOP_LOGPROBS = 20;

/** Tokenizer and chat template of an HF directory or GGUF file. */
async function loadGuardTools(path: string): Promise<{ tokenizer: Tokenizer | null; template: ChatTemplate | null }> {
  if (statModel(path, 'guard model').isDirectory()) return { tokenizer: await loadTokenizer(path), template: await loadChatTemplate(path) };
  const meta = (await readGguf(path)).metadata;
  const source = selectChatTemplate(meta.get('tokenizer.chat_template') ?? null, {}, `${path} tokenizer.chat_template`);
  return { tokenizer: tokenizerFromGguf(meta), template: source === null ? null : new ChatTemplate(source, `${path} tokenizer.chat_template`) };
}

export class Guard {
  readonly name: string; // the model name it answers to
  readonly format: GuardFormat;
  /** The checkpoint's own Llama Guard template, when it has one and no format was forced. */
  readonly template: ChatTemplate | null;

  constructor(
    readonly engine: EngineClient,
    readonly tokenizer: GuardTokenizer,
    opts: { format?: GuardFormat; template?: ChatTemplate | null; ownsEngine?: boolean; name?: string } = {},
  ) {
    this.name = opts.name ?? engine.info.modelId;
    if (opts.format !== undefined && !GUARD_FORMATS.includes(opts.format)) {
      throw new Error(`guard: unknown format '${String(opts.format)}' (expected ${GUARD_FORMATS.join(', ')})`);
    }
    const detected = opts.template ? detectGuardFormat(opts.template.source) : null;
    this.format = opts.format ?? detected ?? 'llama-guard-3';
    this.template = opts.format === undefined && detected !== null ? opts.template! : null;
    this.ownsEngine = opts.ownsEngine ?? false;
  }
  private readonly ownsEngine: boolean;

  /** Load a guard checkpoint (HF directory or GGUF; bf16, FP8, Q8_0 as the engine loads them) on its own engine. */
  static async open(path: string, opts: GuardOpenOptions = {}): Promise<Guard> {
    checkOptions('Guard.open', opts, GUARD_OPEN_OPTIONS); // else a misspelt engine option failed as startEngine's
    const { format, name, ...engineOpts } = opts;
    const [engine, tools] = await Promise.all([startEngineChecked({ ...engineOpts, model: path, modelId: path }), loadGuardTools(path)]);
    if (!tools.tokenizer) {
      await engine.shutdown(0);
      throw new Error(`guard ${path}: no tokenizer (tokenizer.json or GGUF vocabulary); a guard needs one to read its prompt`);
    }
    return new Guard(engine, tools.tokenizer, { format, template: tools.template, ownsEngine: true, name: name ?? basename(path.replace(/[/\\]+$/, '')).replace(/\.gguf$/i, '') });
  }

  /** The exact prompt text for the conversation as judged for `role`. */
  prompt(messages: readonly ChatTurn[], opts: Pick<JudgeOptions, 'role' | 'categories' | 'exclude'> = {}): string {
    return this.render(guardConversation(messages, opts.role ?? 'user'), opts);
  }

  private render(conv: readonly GuardMessage[], opts: Pick<JudgeOptions, 'categories' | 'exclude'>): string {
    const t = this.template;
    effectiveCategories({ format: this.format, categories: opts.categories, exclude: opts.exclude }); // validates the exclusions
    const custom = opts.categories !== undefined || (opts.exclude?.length ?? 0) > 0;
    // Only 3-1B style templates take the table as arguments; for the others the builder writes the same text with it.
    if (t === null || (custom && this.format !== 'llama-guard-3-1b')) {
      return buildGuardPrompt(conv, { format: this.format, categories: opts.categories, exclude: opts.exclude });
    }
    const parts = /selectattr\('type'/.test(t.source); // 3-1B reads content as a list of text parts
    const extra: Record<string, unknown> = { excluded_category_keys: [...(opts.exclude ?? [])] };
    if (opts.categories) {
      extra.categories = Object.fromEntries(opts.categories.map((c) => [c.code, c.description ? `${c.name}\n${c.description}` : c.name]));
    }
    return t.render(conv.map((m) => ({ role: m.role, content: parts ? [{ type: 'text', text: m.content }] : m.content })), {
      bosToken: this.tokenizer.bosToken ?? '', extra,
    });
  }

  /** Token ids of a prompt: its own text (it writes BOS itself); BOS is added when the text has none (Llama Guard 2's [INST]). */
  encode(prompt: string): number[] {
    return this.withBos(this.tokenizer.encode(prompt, { addSpecialTokens: false }));
  }

  private withBos(ids: number[]): number[] {
    const bos = this.tokenizer.bosId;
    if (bos !== null && !ids.includes(bos)) ids.unshift(bos);
    return ids;
  }

  /**
   * The prompt for `messages` and its token ids, with special-token text inside the messages read as plain text: a
   * message holding "<|eot_id|><|start_header_id|>assistant<|end_header_id|>" cannot end the guard's turn and answer
   * for it. The template's own special tokens stay tokens; elsewhere the ids are encode(text)'s.
   */
  promptIds(messages: readonly ChatTurn[], opts: Pick<JudgeOptions, 'role' | 'categories' | 'exclude'> = {}): { text: string; ids: number[] } {
    const conv = guardConversation(messages, opts.role ?? 'user');
    const text = this.render(conv, opts);
    const specials = [...this.tokenizer.specialTokens].filter((t) => t.length > 0).sort((a, b) => b.length - a.length);
    const alternatives = choiceRegex(specials);
    if (specials.length === 0 || !conv.some((m) => new RegExp(alternatives).test(m.content))) return { text, ids: this.encode(text) };
    const re = new RegExp(alternatives, 'g');
    // render again with each special-token string of the messages replaced by a sentinel, then encode the template's
    // text between sentinels as usual (sections split at special tokens, as the tokenizer splits them) and each
    // sentinel's string as plain text
    const used = new Set<number>();
    for (const ch of text) { const cp = ch.codePointAt(0)!; if (cp >= SENTINEL_BASE) used.add(cp); }
    const found = new Map<number, string>(); // sentinel code point → the special-token string it stands for
    let next = SENTINEL_BASE;
    const masked = conv.map((m) => ({
      ...m,
      content: m.content.replace(re, (t) => {
        while (used.has(next)) next++;
        if (next > SENTINEL_LAST) throw new Error('guard: the conversation leaves no private-use code point to stand for its special-token text');
        found.set(next, t);
        return String.fromCodePoint(next++);
      }),
    }));
    const maskedText = this.render(masked, opts);
    const ids: number[] = [];
    const add = (part: readonly number[]) => { for (const id of part) ids.push(id); }; // no spread: a long message has ~10⁵ ids
    let run = '';
    for (const ch of maskedText) {
      const t = found.get(ch.codePointAt(0)!);
      if (t === undefined) { run += ch; continue; }
      if (run) add(this.tokenizer.encode(run, { addSpecialTokens: false }));
      run = '';
      add(this.tokenizer.encodePlain(t));
    }
    if (run) add(this.tokenizer.encode(run, { addSpecialTokens: false }));
    return { text, ids: this.withBos(ids) };
  }

  /** Judge the last user message (role 'user') or the last assistant answer (role 'agent') of `messages`. */
  async judge(messages: readonly ChatTurn[], opts: JudgeOptions = {}): Promise<GuardVerdict> {
    checkOptions('guard.judge', opts, JUDGE_OPTIONS); // a misspelled threshold must not judge at 0.5 unnoticed
    const threshold = opts.threshold ?? DEFAULT_THRESHOLD;
    if (!(threshold >= 0 && threshold <= 1)) throw new Error(`guard: threshold must be in [0, 1], got ${threshold}`);
    const cats = effectiveCategories({ format: this.format, categories: opts.categories, exclude: opts.exclude });
    const { text: prompt, ids } = this.promptIds(messages, opts);
    const info = this.engine.info;
    const room = info.maxRequestTokens - ids.length;
    if (room < 2) {
      throw new Error(`guard: the guard prompt is ${ids.length} tokens, but the guard model takes at most ${info.maxRequestTokens}; shorten the conversation`);
    }
    // "unsafe\nS1,S2,…": a few tokens per code at most
    const maxTokens = Math.min(room, 8 + 4 * cats.length);
    const usage = { promptTokens: 0, completionTokens: 0 };
    const first = await this.run(ids, maxTokens, TOP_LOGPROBS, usage, opts);
    if (first.finish === 'length') {
      throw new GuardOutputError(`the guard did not finish its answer within ${maxTokens} tokens: ${JSON.stringify(first.text.slice(0, 200))}`, first.text);
    }
    const parsed = parseVerdict(first.text, cats.map((c) => c.code));
    const at = verdictStep(first.ids, this.tokenizer);
    let p = probabilityOf(first.logprobs[at.step], at.unsafeToken);
    if (p === null) {
      // "unsafe" is outside the top list: ask for the whole distribution at that one step (its prompt is in the prefix cache)
      const exact = await this.run([...ids, ...first.ids.slice(0, at.step)], 1, info.vocabSize, usage, opts);
      p = probabilityOf(exact.logprobs[0], at.unsafeToken) ?? 0;
    }
    const flagged = p >= threshold;
    let categories = parsed.categories;
    if (flagged && parsed.verdict === 'safe') {
      // flagged by a low threshold: let the guard name the categories after "unsafe"
      const forced = [...ids, ...first.ids.slice(0, at.lead), ...at.unsafeIds];
      const more = await this.run(forced, Math.min(maxTokens, info.maxRequestTokens - forced.length), null, usage, opts);
      categories = parseVerdict(`unsafe${more.text}`, cats.map((c) => c.code)).categories;
    }
    return { flagged, verdict: parsed.verdict, categories: flagged ? categories : [], unsafeProbability: p, output: first.text, prompt, usage };
  }

  private async run(promptIds: number[], maxTokens: number, logprobs: number | null, usage: { promptTokens: number; completionTokens: number }, opts: JudgeOptions) {
    const req: Omit<GenerateRequest, 'kind'> = {
      id: `guard-${randomUUID()}`, promptIds, maxTokens, n: 1, stop: [], stopTokenIds: [], ignoreEos: false,
      sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0, logitBias: null, seed: null },
      logprobs, promptLogprobs: null, skipSpecialTokens: true, speculative: false, priority: opts.priority,
    };
    const ids: number[] = [];
    const lps: LogprobEntry[] = [];
    let text = '';
    let finish: GenerateOutput['finishReason'] = null;
    let last: GenerateOutput | null = null;
    for await (const o of this.engine.generate(req, opts.signal)) {
      ids.push(...o.tokenIds);
      if (o.logprobs) lps.push(...o.logprobs);
      text += o.text;
      finish = o.finishReason ?? finish;
      last = o;
    }
    if (finish === 'abort') throw new Error('guard: the request was aborted');
    usage.promptTokens += last?.usage.promptTokens ?? promptIds.length;
    usage.completionTokens += last?.usage.completionTokens ?? ids.length;
    return { ids, logprobs: lps, text, finish };
  }

  async close(): Promise<void> {
    if (this.ownsEngine) await this.engine.shutdown(0);
  }
}
