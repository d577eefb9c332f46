// Request validation for the OpenAI routes: every field checked by hand, normalized into engine-ready parameters.

import type { ConstraintSpec, SamplingSpec } from '../engine/protocol.js';
import { compileGrammar, type TextSpec } from '../engine/constrained/constraint.js';
import { compileSchema, SchemaError } from '../engine/constrained/json-schema.js';
import { RegexError } from '../engine/constrained/regex.js';
import type { ChatMessage } from '../formats/chat-template.js';
import type { GenerationDefaults } from '../formats/hf-config.js';
import { MAX_JSON_DEPTH } from '../platform/files.js';
import { metadataProblem } from '../platform/metadata.js';
import { ApiError, invalid } from './errors.js';

/** What validation needs to know about the served model. */
export interface ValidationContext {
  readonly modelName: string;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly maxNumSeqs: number; // the most completions one request may ask for (--max-num-seqs)
  readonly defaults?: GenerationDefaults; // the model's generation_config.json: used where the request is silent
  readonly adapterNames?: readonly string[]; // LoRA adapters served by name besides the base
  readonly otherNames?: readonly string[]; // models this route serves on another engine (named in the 404, checked there)
}

/** Fields common to chat and text completions. */
export interface GenerationParams {
  readonly model: string;
  readonly n: number;
  readonly stream: boolean;
  readonly includeUsage: boolean;
  readonly maxTokens: number | null; // null → as many as the context allows
  readonly maxTokensParam: string; // which field set it, for error messages
  readonly maxTokensCap: number | null; // when maxTokens is null: generation_config.json's max_new_tokens, if any
  readonly sampling: SamplingSpec;
  readonly stop: readonly string[];
  readonly stopTokenIds: readonly number[];
  readonly ignoreEos: boolean;
  readonly minTokens: number; // vLLM extra: stop ids masked and stop strings off for the first min_tokens tokens
  readonly includeStopStr: boolean; // vLLM extra include_stop_str_in_output: the matched stop stays in the text
  readonly tokensAsIds: boolean; // vLLM extra return_tokens_as_token_ids: logprobs name tokens 'token_id:N'
  readonly allowedTokenIds: readonly number[] | null; // vLLM extra: only these ids may be sampled; null → any
  readonly badWords: readonly string[]; // vLLM extra: words whose last token is masked where the output would complete them
  readonly skipSpecialTokens: boolean;
  readonly speculative: boolean; // false opts this request out of the server's speculative decoding
  readonly prediction: string | null; // Predicted Outputs: text the answer is expected to repeat (drafts for speculation)
  readonly logprobs: number | null; // top-K per generated token; null → none
  readonly returnTokenIds: boolean; // vLLM extra: token_ids per choice, prompt_token_ids
  readonly ignored: readonly string[]; // documented-harmless OpenAI fields the request set and this server ignores
  readonly constraint: ConstraintSpec | null; // response_format / structured_outputs / guided_* / a forced tool call / strict tools under auto: constrained decoding
  readonly truncatePromptTokens: number | null; // vLLM extra: keep the prompt's last k tokens (-1: as many as fit); null → all
}

/** An OpenAI function tool as the request gave it (passed to the chat template as is, `strict` aside). */
export interface ToolDef { readonly type: 'function'; readonly function: { readonly name: string; readonly description?: string; readonly parameters?: Record<string, unknown>; readonly strict?: boolean | null } }
export type ToolChoice = 'none' | 'auto' | 'required' | { readonly name: string };

export interface ChatParams extends GenerationParams {
  readonly messages: ChatMessage[];
  readonly addGenerationPrompt: boolean;
  readonly continueFinalMessage: boolean; // vLLM extra: the prompt ends inside the final message, which the model continues
  readonly chatTemplateKwargs: Readonly<Record<string, unknown>> | null; // vLLM extra: further chat template variables
  readonly tools: readonly ToolDef[]; // empty: none
  readonly toolChoice: ToolChoice; // 'none' when there are no tools
  readonly parallelToolCalls: boolean;
  readonly promptLogprobs: number | null; // vLLM extra: top-K logprobs of the rendered prompt's tokens (not streamed); null → none
}

export type Prompt = { readonly text: string } | { readonly ids: readonly number[] };

export interface CompletionParams extends GenerationParams {
  readonly prompts: readonly Prompt[];
  readonly echo: boolean;
  readonly promptLogprobs: number | null;
}

export interface EmbeddingParams {
  readonly model: string;
  readonly inputs: readonly Prompt[];
  readonly encodingFormat: 'float' | 'base64';
  readonly pooling: 'mean' | 'last' | null; // null: the model's embedding_config.json (mean without one)
  readonly normalize: boolean;
  readonly ignored: readonly string[]; // 'user' when set: accepted and ignored
  readonly truncatePromptTokens: number | null; // vLLM extra: keep each input's first k tokens (-1: as many as the model takes); null → all
}

const MAX_N = 128;
const MAX_STOP = 16;
const MAX_TOP_LOGPROBS = 20;
// OpenAI's limit on an embeddings `input` list (its SDK helpers batch up to it; LlamaIndex sends 100, LangChain 1000);
// the routes then refuse what exceeds the server's slots plus queue, naming the flags.
const MAX_PROMPTS = 2048;

const COMMON_FIELDS = [
  'model', 'n', 'stream', 'stream_options', 'max_tokens', 'temperature', 'top_p', 'top_k', 'min_p', 'repetition_penalty',
  'frequency_penalty', 'presence_penalty', 'seed', 'stop', 'stop_token_ids', 'ignore_eos', 'skip_special_tokens',
  'logit_bias', 'logprobs', 'user', 'return_token_ids', 'min_tokens', 'include_stop_str_in_output', 'allowed_token_ids', 'bad_words', 'return_tokens_as_token_ids',
  'speculative', 'guided_json', 'guided_regex', 'guided_choice', 'prediction', 'truncate_prompt_tokens',
  'structured_outputs',
];
/**
 * OpenAI chat fields that cannot change a Llama model's answer here: accepted, ignored, and named in the
 * x-floe-ignored-fields response header (README "HTTP API" lists each decision).
 */
const CHAT_IGNORED = new Set([
  'metadata', 'store', 'service_tier', 'prompt_cache_key', 'prompt_cache_retention', 'prompt_cache_options', 'safety_identifier',
  'reasoning_effort', 'verbosity', 'modalities', 'audio', 'web_search_options',
]);
/** OpenAI's moderated completions (chat and responses `moderation`): would block or score the answer with OpenAI's moderation model. */
export const MODERATION_REFUSED = `'moderation' (OpenAI's moderated completions) is not supported; ask for 'guardrails' instead (a Llama Guard model judges the request and the answer; start the server with --guard-model PATH)`;
const CHAT_FIELDS = new Set([
  ...COMMON_FIELDS, 'messages', 'max_completion_tokens', 'top_logprobs', 'response_format', 'tools', 'tool_choice',
  'functions', 'function_call', 'add_generation_prompt', 'parallel_tool_calls', 'moderation', 'prompt_logprobs', ...CHAT_IGNORED,
  'chat_template_kwargs', 'continue_final_message',
]);
const COMPLETION_FIELDS = new Set([...COMMON_FIELDS, 'prompt', 'echo', 'suffix', 'best_of', 'prompt_logprobs']);
const EMBEDDING_FIELDS = new Set(['model', 'input', 'encoding_format', 'dimensions', 'user', 'pooling', 'normalize', 'truncate_prompt_tokens']);
const CHAT_ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);

export type Obj = Record<string, unknown>;

/** A value as an error message names it: 'null', 'an array', 3, "text", 'nothing', … */
export const describe = (v: unknown): string => {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'number') return Number.isNaN(v) ? 'NaN' : String(v);
  if (typeof v === 'string') return v.length > 40 ? `a string of ${v.length} characters` : JSON.stringify(v);
  if (v === undefined) return 'nothing';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
};

export { MAX_JSON_DEPTH }; // the request nesting limit (platform/files.ts: batch input lines share it)

/** The path to the first array or object nested deeper than MAX_JSON_DEPTH levels in `v` (at `depth`), or null. */
function deepPath(v: unknown, depth: number): Array<string | number> | null {
  if (v === null || typeof v !== 'object') return null;
  if (depth > MAX_JSON_DEPTH) return [];
  const entries: Array<[string | number, unknown]> = Array.isArray(v) ? [...v.entries()] : Object.entries(v);
  for (const [k, x] of entries) {
    const p = deepPath(x, depth + 1);
    if (p) return [k, ...p];
  }
  return null;
}

/**
 * A 400 when `v` nests arrays and objects more than MAX_JSON_DEPTH levels deep, else null. `param`: the field `v` is
 * (null for the request body: the error names the body's top-level field the deep value sits in).
 */
export function nestingError(v: unknown, param: string | null): ApiError | null {
  const p = deepPath(v, 1);
  if (!p) return null;
  const path = p.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 && param === null ? k : `.${k}`)).join('');
  const where = param === null ? (typeof p[0] === 'string' ? path : null) : param + path;
  const shown = where === null ? 'the request body' : `'${where.length > 120 ? `${where.slice(0, 120)}…` : where}'`;
  return new ApiError(400, `${shown} nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep; flatten it`,
    param ?? (typeof p[0] === 'string' ? p[0] : null), 'too_deeply_nested');
}

/** A field the request left out (or sent as null) that it must give. */
export function required(param: string, what = ''): ApiError {
  return invalid(param, `'${param}' is required${what}`, 'missing_required_parameter');
}

export function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** The request body as an object whose keys are all in `fields`, or a 400 naming the first that is not. */
export function bodyObject(body: unknown, fields: ReadonlySet<string>): Obj {
  if (!isObj(body)) throw new ApiError(400, `the request body must be a JSON object, got ${body === undefined ? 'nothing' : describe(body)}`, null, 'invalid_body');
  for (const k of Object.keys(body)) {
    if (!fields.has(k)) throw invalid(k, `unrecognized request argument '${k}'`, 'unknown_parameter');
  }
  return body;
}

/** null and absent are the same (clients send explicit nulls for defaults). */
export function get(b: Obj, key: string): unknown {
  const v = b[key];
  return v === null ? undefined : v;
}

interface NumOpts { min?: number; max?: number; gt?: number; integer?: boolean }

function num(v: unknown, param: string, o: NumOpts): number {
  const range = [
    o.gt !== undefined ? `> ${o.gt}` : o.min !== undefined ? `>= ${o.min}` : null,
    o.max !== undefined ? `<= ${o.max}` : null,
  ].filter((s) => s !== null).join(' and ');
  const what = `${o.integer ? 'an integer' : 'a number'}${range ? ` ${range}` : ''}`;
  if (typeof v !== 'number' || !Number.isFinite(v) || (o.integer && !Number.isSafeInteger(v))) {
    throw invalid(param, `'${param}' must be ${what}, got ${describe(v)}`, 'invalid_type');
  }
  if ((o.min !== undefined && v < o.min) || (o.gt !== undefined && !(v > o.gt)) || (o.max !== undefined && v > o.max)) {
    throw invalid(param, `'${param}' must be ${what}, got ${v}`);
  }
  return v;
}

function optNum(b: Obj, key: string, def: number, o: NumOpts): number {
  const v = get(b, key);
  return v === undefined ? def : num(v, key, o);
}

export function optBool(b: Obj, key: string, def: boolean): boolean {
  const v = get(b, key);
  if (v === undefined) return def;
  if (typeof v !== 'boolean') throw invalid(key, `'${key}' must be a boolean, got ${describe(v)}`, 'invalid_type');
  return v;
}

function optString(b: Obj, key: string): string | undefined {
  const v = get(b, key);
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalid(key, `'${key}' must be a string, got ${describe(v)}`, 'invalid_type');
  return v;
}

function tokenIds(v: unknown, param: string, vocabSize: number, allowEmpty = false): number[] {
  if (!Array.isArray(v)) throw invalid(param, `'${param}' must be an array of token ids, got ${describe(v)}`, 'invalid_type');
  if (v.length === 0 && !allowEmpty) throw invalid(param, `'${param}' must not be empty`);
  v.forEach((id, i) => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw invalid(param, `'${param}[${i}]' must be a token id in [0, ${vocabSize}), got ${describe(id)}`);
    }
  });
  return v as number[];
}

/** The request's `model` (absent: the base), or a 404 naming what this server serves. */
export function checkModel(b: Obj, ctx: ValidationContext): string {
  const m = get(b, 'model');
  if (m === undefined) return ctx.modelName;
  if (typeof m !== 'string') throw invalid('model', `'model' must be a string, got ${describe(m)}`, 'invalid_type');
  if (m !== ctx.modelName && !ctx.adapterNames?.includes(m)) {
    const names = [ctx.modelName, ...(ctx.adapterNames ?? []), ...(ctx.otherNames ?? [])].map((n) => `'${n}'`).join(', ');
    throw new ApiError(404, `the model '${m.slice(0, 200)}' does not exist; this server serves ${names}`, 'model', 'model_not_found');
  }
  return m;
}

function generationParams(b: Obj, ctx: ValidationContext, chat: boolean): GenerationParams {
  const model = checkModel(b, ctx);
  const n = optNum(b, 'n', 1, { min: 1, max: MAX_N, integer: true });
  if (n > ctx.maxNumSeqs) {
    throw invalid('n', `'n' is ${n}, but this server runs at most ${ctx.maxNumSeqs} sequences at once; raise --max-num-seqs or ask for fewer completions`);
  }
  const stream = optBool(b, 'stream', false);
  let includeUsage = false;
  const ignored = Object.keys(b).filter((k) => (k === 'user' || (chat && CHAT_IGNORED.has(k))) && get(b, k) !== undefined);
  const so = get(b, 'stream_options');
  if (so !== undefined) {
    if (!stream) throw invalid('stream_options', `'stream_options' is only allowed when 'stream' is true`);
    if (!isObj(so)) throw invalid('stream_options', `'stream_options' must be an object, got ${describe(so)}`, 'invalid_type');
    for (const k of Object.keys(so)) {
      // include_obfuscation pads stream chunks against side channels: nothing to pad on a local server
      if (k !== 'include_usage' && k !== 'include_obfuscation') throw invalid(`stream_options.${k}`, `unrecognized argument 'stream_options.${k}'`, 'unknown_parameter');
    }
    const iu = get(so, 'include_usage');
    if (iu !== undefined && typeof iu !== 'boolean') {
      throw invalid('stream_options.include_usage', `'stream_options.include_usage' must be a boolean, got ${describe(iu)}`, 'invalid_type');
    }
    includeUsage = iu === true;
    if (get(so, 'include_obfuscation') !== undefined) ignored.push('stream_options.include_obfuscation');
  }

  let maxTokens: number | null = null;
  let maxTokensParam = 'max_tokens';
  for (const key of chat ? ['max_completion_tokens', 'max_tokens'] : ['max_tokens']) {
    const v = get(b, key);
    if (v !== undefined && maxTokens === null) {
      maxTokens = num(v, key, { min: 1, integer: true });
      maxTokensParam = key;
    } else if (v !== undefined) {
      num(v, key, { min: 1, integer: true });
    }
  }
  if (!chat && get(b, 'max_tokens') === undefined) maxTokens = 16; // OpenAI's legacy completions default
  const d = ctx.defaults ?? {};
  // vLLM: generation_config.json's max_new_tokens caps the output a chat request left open
  const maxTokensCap = chat && maxTokens === null ? d.maxNewTokens ?? null : null;

  // A field the request leaves out takes the model's generation_config.json value (as vLLM does), else OpenAI's default.
  const temperature = optNum(b, 'temperature', d.temperature ?? 1, { min: 0, max: 2 });
  const topPAsked = optNum(b, 'top_p', d.topP ?? 1, { min: 0, max: 1 });
  // OpenAI takes top_p 0 (clients send it for determinism): a nucleus of the most likely token alone, i.e. top-k 1
  const topP = topPAsked === 0 ? 1 : topPAsked;
  const topKAsked = optNum(b, 'top_k', d.topK ?? 0, { min: -1, integer: true });
  const topK = topPAsked === 0 ? 1 : topKAsked;
  const minP = optNum(b, 'min_p', d.minP ?? 0, { min: 0, max: 1 });
  const repetitionPenalty = optNum(b, 'repetition_penalty', d.repetitionPenalty ?? 1, { gt: 0, max: 100 });
  const frequencyPenalty = optNum(b, 'frequency_penalty', 0, { min: -2, max: 2 });
  const presencePenalty = optNum(b, 'presence_penalty', 0, { min: -2, max: 2 });
  const seedV = get(b, 'seed');
  const seed = seedV === undefined ? null : seedOf(seedV);

  let logitBias: Record<string, number> | null = null;
  const lb = get(b, 'logit_bias');
  if (lb !== undefined) {
    if (!isObj(lb)) throw invalid('logit_bias', `'logit_bias' must be an object mapping token ids to biases, got ${describe(lb)}`, 'invalid_type');
    logitBias = {};
    for (const [k, v] of Object.entries(lb)) {
      const id = Number(k);
      if (!/^\d+$/.test(k) || !Number.isSafeInteger(id) || id >= ctx.vocabSize) {
        throw invalid('logit_bias', `'logit_bias' key '${k.slice(0, 40)}' must be a token id in [0, ${ctx.vocabSize})`);
      }
      logitBias[String(id)] = num(v, `logit_bias`, { min: -100, max: 100 });
    }
  }

  let stop: string[] = [];
  const sv = get(b, 'stop');
  if (typeof sv === 'string') stop = sv === '' ? [] : [sv];
  else if (Array.isArray(sv)) {
    if (sv.length > MAX_STOP) throw invalid('stop', `'stop' may hold at most ${MAX_STOP} strings, got ${sv.length}`);
    sv.forEach((s, i) => {
      if (typeof s !== 'string' || s === '') throw invalid('stop', `'stop[${i}]' must be a non-empty string, got ${describe(s)}`);
    });
    stop = sv as string[];
  } else if (sv !== undefined) throw invalid('stop', `'stop' must be a string or an array of strings, got ${describe(sv)}`, 'invalid_type');
  const stv = get(b, 'stop_token_ids');
  const stopTokenIds = stv === undefined ? [] : tokenIds(stv, 'stop_token_ids', ctx.vocabSize, true);
  const minTokens = optNum(b, 'min_tokens', 0, { min: 0, integer: true });
  if (maxTokens !== null && minTokens > maxTokens) {
    throw invalid('min_tokens', `'min_tokens' (${minTokens}) must be at most '${maxTokensParam}' (${maxTokens})`);
  }

  let logprobs: number | null = null;
  const lp = get(b, 'logprobs');
  if (chat) {
    const on = optBool(b, 'logprobs', false);
    const top = get(b, 'top_logprobs');
    if (top !== undefined) {
      const k = num(top, 'top_logprobs', { min: 0, max: MAX_TOP_LOGPROBS, integer: true });
      if (!on) throw invalid('top_logprobs', `'top_logprobs' requires 'logprobs' to be true`);
      logprobs = k;
    } else if (on) logprobs = 0;
  } else if (lp !== undefined) {
    logprobs = num(lp, 'logprobs', { min: 0, max: MAX_TOP_LOGPROBS, integer: true });
  }

  const user = get(b, 'user');
  if (user !== undefined && typeof user !== 'string') throw invalid('user', `'user' must be a string, got ${describe(user)}`, 'invalid_type');

  return {
    model, n, stream, includeUsage, maxTokens, maxTokensParam, maxTokensCap,
    sampling: { temperature, topP, topK, minP, repetitionPenalty, frequencyPenalty, presencePenalty, seed, logitBias },
    stop, stopTokenIds,
    speculative: optBool(b, 'speculative', true),
    prediction: prediction(b),
    ignoreEos: optBool(b, 'ignore_eos', false),
    minTokens,
    includeStopStr: optBool(b, 'include_stop_str_in_output', false),
    tokensAsIds: optBool(b, 'return_tokens_as_token_ids', false),
    allowedTokenIds: get(b, 'allowed_token_ids') === undefined ? null : tokenIds(get(b, 'allowed_token_ids'), 'allowed_token_ids', ctx.vocabSize), // get: null is absent
    badWords: badWords(b),
    skipSpecialTokens: optBool(b, 'skip_special_tokens', true),
    logprobs,
    returnTokenIds: optBool(b, 'return_token_ids', false),
    ignored,
    constraint: structuredOutputs(b) ?? guided(b),
    truncatePromptTokens: truncatePromptTokens(b),
  };
}

const MAX_BAD_WORDS = 256;

/** vLLM's bad_words: a list of words (non-blank strings, at most MAX_BAD_WORDS of 200 characters); absent / null → none. */
function badWords(b: Obj): string[] {
  const v = get(b, 'bad_words');
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw invalid('bad_words', `'bad_words' must be an array of strings, got ${describe(v)}`, 'invalid_type');
  if (v.length > MAX_BAD_WORDS) throw invalid('bad_words', `'bad_words' may hold at most ${MAX_BAD_WORDS} words, got ${v.length}`);
  v.forEach((w, i) => {
    if (typeof w !== 'string' || w.trim() === '' || w.length > 200) throw invalid('bad_words', `'bad_words[${i}]' must be a non-blank string of at most 200 characters, got ${describe(w)}`);
  });
  return v as string[];
}

/**
 * OpenAI's seed is an int64, which JSON brings as a double (integral, and inexact, past 2^53): taken mod 2^53 (exact in
 * doubles), so the sampler's safe-integer seed is the same for the same request.
 */
function seedOf(v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < -(2 ** 63) || v >= 2 ** 63) {
    throw invalid('seed', `'seed' must be an integer in the int64 range [-2^63, 2^63), got ${describe(v)}`, typeof v === 'number' ? 'invalid_value' : 'invalid_type');
  }
  return (v % 2 ** 53) || 0; // || 0: no -0
}

/** OpenAI's Predicted Outputs: {type: "content", content: string | [{type: "text", text}]} → the text (parts joined). */
function prediction(b: Obj): string | null {
  const v = get(b, 'prediction');
  if (v === undefined) return null;
  const want = `{"type": "content", "content": string or [{"type": "text", "text": string}]}`;
  if (!isObj(v)) throw invalid('prediction', `'prediction' must be an object ${want}, got ${describe(v)}`, 'invalid_type');
  for (const k of Object.keys(v)) {
    if (k !== 'type' && k !== 'content') throw invalid(`prediction.${k}`, `unrecognized argument 'prediction.${k}'; 'prediction' is ${want}`, 'unknown_parameter');
  }
  if (v.type === undefined || v.type === null) throw required('prediction.type', ` ("content")`);
  if (v.type !== 'content') throw invalid('prediction.type', `'prediction.type' must be "content", got ${describe(v.type)}`);
  const c = v.content;
  if (c === undefined || c === null) throw required('prediction.content');
  if (typeof c === 'string') return c;
  if (!Array.isArray(c)) throw invalid('prediction.content', `'prediction.content' must be a string or an array of text parts [{"type": "text", "text": string}], got ${describe(c)}`, 'invalid_type');
  return c.map((part, i) => {
    const p = `prediction.content[${i}]`;
    if (!isObj(part)) throw invalid(p, `'${p}' must be a text part {"type": "text", "text": string}, got ${describe(part)}`, 'invalid_type');
    if (part.type !== 'text') throw invalid(`${p}.type`, `'${p}.type' must be "text", got ${describe(part.type)}`);
    if (typeof part.text !== 'string') throw invalid(`${p}.text`, `'${p}.text' must be a string, got ${describe(part.text)}`, 'invalid_type');
    return part.text;
  }).join('');
}

/**
 * vLLM's truncate_prompt_tokens: an integer >= 1 (the tokens to keep) or -1 (as many as the model can take); null and
 * absent: no truncation. The bound by the model's length is the route's (serve/prompt-truncation.ts).
 */
export function truncatePromptTokens(b: Obj): number | null {
  const v = get(b, 'truncate_prompt_tokens');
  if (v === undefined) return null;
  const want = `an integer >= 1 (keep that many prompt tokens) or -1 (as many as the model can take)`;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw invalid('truncate_prompt_tokens', `'truncate_prompt_tokens' must be ${want}, got ${describe(v)}`, 'invalid_type');
  if (v < 1 && v !== -1) throw invalid('truncate_prompt_tokens', `'truncate_prompt_tokens' must be ${want}, got ${v}`);
  return v;
}

/**
 * Past a complete constrained value only EOS may follow: ignoring it leaves nothing to sample, and so does masking it
 * under min_tokens when the value completes sooner (the engine refuses both too).
 */
function refuseBesideConstraint(g: GenerationParams, constraint: ConstraintSpec | null): void {
  for (const [on, key] of [[g.ignoreEos, 'ignore_eos'], [g.minTokens > 0, 'min_tokens']] as const) {
    if (constraint && on) {
      throw invalid(key, `'${key}' cannot be combined with constrained decoding (response_format, structured_outputs, guided_*, a forced tool call, strict tools under tool_choice auto): past a complete value only EOS may follow`, 'unsupported_parameter');
    }
  }
  // masks of their own beside the grammar's could leave no token the grammar allows
  for (const [on, key] of [[g.allowedTokenIds !== null, 'allowed_token_ids'], [g.badWords.length > 0, 'bad_words']] as const) {
    if (constraint && on) {
      throw invalid(key, `'${key}' cannot be combined with constrained decoding (response_format, structured_outputs, guided_*, a forced tool call, strict tools under tool_choice auto): its mask could leave no token the grammar allows`, 'unsupported_parameter');
    }
  }
}

/** A constraint compiles (schema keywords, regex syntax) or the request is refused naming `param`. */
function checkConstraint(spec: ConstraintSpec, param: string): ConstraintSpec {
  try {
    compileGrammar(spec);
  } catch (e) {
    if (e instanceof SchemaError) throw invalid(param, `'${param}': ${e.message}`, 'unsupported_parameter');
    if (e instanceof RegexError) throw invalid(param, `'${param}': ${e.message}`);
    // the compilers recurse per group / schema level: a pattern of thousands of nested groups overflowed the stack (a 500)
    if (e instanceof RangeError) throw invalid(param, `'${param}' is nested too deeply to compile (${e.message}); nest it less deeply`, 'unsupported_parameter');
    throw e;
  }
  return spec;
}

/** vLLM's guided_json / guided_regex / guided_choice (at most one). */
function guided(b: Obj): ConstraintSpec | null {
  const set = (['guided_json', 'guided_regex', 'guided_choice'] as const).filter((k) => get(b, k) !== undefined);
  if (set.length > 1) throw invalid(set[1]!, `only one of guided_json, guided_regex, guided_choice may be given; got ${set.join(' and ')}`);
  if (set.length === 0) return null;
  const key = set[0]!;
  return textConstraint(key === 'guided_json' ? 'json' : key === 'guided_regex' ? 'regex' : 'choice', get(b, key), key);
}

/** A JSON schema (an object, or a string holding one), a regex or a list of choices, as `param` gave it: compiled, or a 400 naming `param`. */
function textConstraint(kind: 'json' | 'regex' | 'choice', v: unknown, param: string): ConstraintSpec {
  if (kind === 'json') {
    let schema = v;
    if (typeof v === 'string') {
      try { schema = JSON.parse(v); } catch (e) { throw invalid(param, `'${param}' is a string but not JSON: ${(e as Error).message}`); }
      const deep = nestingError(schema, param);
      if (deep) throw deep;
    }
    if (!isObj(schema)) throw invalid(param, `'${param}' must be a JSON Schema object, got ${describe(schema)}`, 'invalid_type');
    return checkConstraint({ kind: 'json_schema', schema }, param);
  }
  if (kind === 'regex') {
    if (typeof v !== 'string' || v === '') throw invalid(param, `'${param}' must be a non-empty string, got ${describe(v)}`, 'invalid_type');
    return checkConstraint({ kind: 'regex', pattern: v }, param);
  }
  if (!Array.isArray(v) || v.length === 0 || !v.every((c) => typeof c === 'string' && c !== '')) {
    throw invalid(param, `'${param}' must be a non-empty array of non-empty strings, got ${describe(v)}`, 'invalid_type');
  }
  return checkConstraint({ kind: 'choice', choices: v as string[] }, param);
}

// vLLM's StructuredOutputsParams (0.10.2 on): one constraint of these, then options; disable_fallback is 0.10.2-0.11's.
const SO_CONSTRAINTS = ['json', 'regex', 'choice', 'grammar', 'json_object', 'structural_tag'] as const;
const SO_OPTIONS = ['disable_fallback', 'disable_any_whitespace', 'disable_additional_properties', 'whitespace_pattern'] as const;
const SO_KEYS = new Set<string>([...SO_CONSTRAINTS, ...SO_OPTIONS]);

/**
 * vLLM's structured_outputs: json, regex, choice and json_object as guided_* and response_format json_object take
 * them; what floe's grammars cannot honour is a 400 naming `structured_outputs.KEY` (README "Structured outputs").
 */
function structuredOutputs(b: Obj): ConstraintSpec | null {
  const so = get(b, 'structured_outputs');
  if (so === undefined) return null;
  const P = 'structured_outputs';
  const want = `one of ${SO_CONSTRAINTS.map((k) => `'${k}'`).join(', ')}`;
  if (!isObj(so)) throw invalid(P, `'${P}' must be an object giving ${want}, e.g. {"choice": ["yes", "no"]}; got ${describe(so)}`, 'invalid_type');
  for (const k of Object.keys(so)) {
    if (!SO_KEYS.has(k)) throw invalid(`${P}.${k}`, `unrecognized argument '${P}.${k}'; '${P}' takes ${[...SO_KEYS].join(', ')}`, 'unknown_parameter');
  }
  // vLLM 0.12 removed guided_*: a request with both would hold two constraints
  const old = (['guided_json', 'guided_regex', 'guided_choice'] as const).find((k) => get(b, k) !== undefined);
  if (old) throw invalid(P, `'${P}' cannot be combined with '${old}' (vLLM's older field for the same); send one`);
  const at = (k: string) => (so[k] === null ? undefined : so[k]); // null is absent, as vLLM's None
  const set = SO_CONSTRAINTS.filter((k) => at(k) !== undefined);
  if (set.length === 0) throw invalid(P, `'${P}' must give ${want}; it gives none`, 'missing_required_parameter');
  if (set.length > 1) throw invalid(`${P}.${set[1]}`, `'${P}' may give only one constraint; got ${set.join(' and ')}`);
  for (const k of ['disable_fallback', 'disable_any_whitespace', 'disable_additional_properties'] as const) {
    if (at(k) !== undefined && typeof so[k] !== 'boolean') throw invalid(`${P}.${k}`, `'${P}.${k}' must be a boolean, got ${describe(so[k])}`, 'invalid_type');
  }
  if (at('whitespace_pattern') !== undefined) {
    throw invalid(`${P}.whitespace_pattern`, `'${P}.whitespace_pattern' is not supported: floe's JSON grammar allows at most one space after ':' and ',' and no other whitespace, and takes no other pattern`, 'unsupported_parameter');
  }
  const key = set[0]!;
  const param = `${P}.${key}`;
  if (key === 'grammar') throw invalid(param, `'${param}' is not supported: floe has no grammar language (EBNF, Lark); use 'json', 'regex' or 'choice'`, 'unsupported_parameter');
  if (key === 'structural_tag') throw invalid(param, `'${param}' is not supported; use 'json', 'regex' or 'choice', or tools with 'tool_choice'`, 'unsupported_parameter');
  if (key === 'json_object' && so.json_object !== true) {
    throw invalid(param, `'${param}' must be true (any JSON object), got ${describe(so.json_object)}; leave it out for no constraint`, typeof so.json_object === 'boolean' ? 'invalid_value' : 'invalid_type');
  }
  const spec: ConstraintSpec = key === 'json_object' ? { kind: 'json_object' } : textConstraint(key, so[key], param);
  // true asks for JSON with no blanks, yet one space may follow ':' and ','; vLLM applies it to JSON only
  if (so.disable_any_whitespace === true && (spec.kind === 'json_schema' || spec.kind === 'json_object')) {
    throw invalid(`${P}.disable_any_whitespace`, `'${P}.disable_any_whitespace: true' is not supported with '${key}': floe's JSON grammar allows at most one space after ':' and ',' (and no other whitespace) and cannot forbid that space`, 'unsupported_parameter');
  }
  return spec;
}

/** response_format: text, json_object, or json_schema {name, schema, strict}. */
function responseFormat(b: Obj): ConstraintSpec | null {
  const rf = get(b, 'response_format');
  if (rf === undefined) return null;
  if (!isObj(rf) || typeof rf.type !== 'string') throw invalid('response_format', `'response_format' must be an object with a string 'type'`, 'invalid_type');
  if (rf.type === 'text') return null;
  if (rf.type === 'json_object') return { kind: 'json_object' };
  if (rf.type !== 'json_schema') {
    throw invalid('response_format.type', `response_format type ${describe(rf.type)} is not supported; use 'text', 'json_object' or 'json_schema'`, 'unsupported_parameter');
  }
  const js = rf.json_schema;
  if (js === undefined || js === null) throw required('response_format.json_schema', ` when 'response_format.type' is 'json_schema'`);
  if (!isObj(js)) throw invalid('response_format.json_schema', `'response_format.json_schema' must be an object {name, schema, strict}`, 'invalid_type');
  if (js.name === undefined || js.name === null) throw required('response_format.json_schema.name');
  if (typeof js.name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(js.name)) {
    throw invalid('response_format.json_schema.name', `'response_format.json_schema.name' must be 1-64 letters, digits, '_' or '-', got ${describe(js.name)}`);
  }
  if (js.strict !== undefined && js.strict !== null && typeof js.strict !== 'boolean') throw invalid('response_format.json_schema.strict', `'response_format.json_schema.strict' must be a boolean`, 'invalid_type');
  const schema = js.schema ?? {};
  if (!isObj(schema)) throw invalid('response_format.json_schema.schema', `'response_format.json_schema.schema' must be a JSON Schema object, got ${describe(schema)}`, 'invalid_type');
  return checkConstraint({ kind: 'json_schema', schema }, 'response_format.json_schema.schema');
}

const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

function toolDefs(b: Obj): ToolDef[] {
  const v = get(b, 'tools');
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw invalid('tools', `'tools' must be an array of tools, got ${describe(v)}`, 'invalid_type');
  const names = new Set<string>();
  return v.map((t, i) => {
    const p = `tools[${i}]`;
    if (isObj(t) && (t.type === undefined || t.type === null)) throw required(`${p}.type`, ` (only "function" tools are supported)`);
    if (!isObj(t) || t.type !== 'function') throw invalid(`${p}.type`, `'${p}' must be {"type": "function", "function": {...}}; only function tools are supported`, 'unsupported_parameter');
    const f = t.function;
    if (f === undefined || f === null) throw required(`${p}.function`);
    if (!isObj(f)) throw invalid(`${p}.function`, `'${p}.function' must be an object`, 'invalid_type');
    if (f.name === undefined || f.name === null) throw required(`${p}.function.name`);
    if (typeof f.name !== 'string' || !TOOL_NAME.test(f.name)) throw invalid(`${p}.function.name`, `'${p}.function.name' must be 1-64 letters, digits, '_' or '-', got ${describe(f.name)}`);
    if (names.has(f.name)) throw invalid(`${p}.function.name`, `tool name '${f.name}' appears twice in 'tools'`);
    names.add(f.name);
    if (f.description !== undefined && typeof f.description !== 'string') throw invalid(`${p}.function.description`, `'${p}.function.description' must be a string`, 'invalid_type');
    if (f.parameters !== undefined && !isObj(f.parameters)) throw invalid(`${p}.function.parameters`, `'${p}.function.parameters' must be a JSON Schema object`, 'invalid_type');
    if (f.strict !== undefined && f.strict !== null && typeof f.strict !== 'boolean') throw invalid(`${p}.function.strict`, `'${p}.function.strict' must be a boolean, got ${describe(f.strict)}`, 'invalid_type');
    // a call's arguments are a JSON object (as OpenAI requires of every tool)
    if (isObj(f.parameters) && f.parameters.type !== undefined && f.parameters.type !== 'object') {
      throw invalid(`${p}.function.parameters`, `'${p}.function.parameters' of tool '${f.name}' must be a schema of type 'object' (a call's arguments are an object), got type ${describe(f.parameters.type)}`);
    }
    return { type: 'function', function: { ...f, name: f.name } } as ToolDef;
  });
}

function toolChoice(b: Obj, tools: readonly ToolDef[]): ToolChoice {
  const tc = get(b, 'tool_choice');
  if (tc === undefined) return tools.length > 0 ? 'auto' : 'none';
  if (tc === 'none') return 'none';
  if (tc === 'auto' || tc === 'required') {
    if (tools.length === 0) throw invalid('tool_choice', `'tool_choice' ${describe(tc)} needs 'tools'`);
    return tc;
  }
  if (isObj(tc) && tc.type === 'function' && isObj(tc.function) && typeof tc.function.name === 'string') {
    const name = tc.function.name;
    if (!tools.some((t) => t.function.name === name)) throw invalid('tool_choice', `'tool_choice' names function '${name.slice(0, 64)}', which is not in 'tools'`);
    return { name };
  }
  throw invalid('tool_choice', `'tool_choice' must be 'none', 'auto', 'required' or {"type": "function", "function": {"name": ...}}, got ${describe(tc)}`, 'invalid_type');
}

/** Whether a tool's parameters compile to a grammar, so that its calls can be decoded strictly. */
export function strictCompatible(params: Record<string, unknown> | undefined): boolean {
  return toolSchemaError(params) === null;
}

/** Why a tool's parameters do not compile to a grammar, or null; once per parameters object (the Responses API asks
 * for its tools without strict, then chat's validation for the same objects). */
const schemaErrors = new WeakMap<object, SchemaError | null>();
function toolSchemaError(params: Record<string, unknown> | undefined): SchemaError | null {
  const known = params && schemaErrors.get(params);
  if (known !== undefined) return known;
  let err: SchemaError | null = null;
  try { compileSchema(callArguments(params)); } catch (e) {
    if (!(e instanceof SchemaError)) throw e;
    err = e;
  }
  if (params) schemaErrors.set(params, err);
  return err;
}

/** A tool's parameters as the schema of a forced call's arguments: an object even where the schema names no type. */
function callArguments(params: Record<string, unknown> | undefined): Record<string, unknown> {
  if (params === undefined) return { type: 'object', properties: {} };
  const typed = ['type', 'enum', 'const', 'anyOf', 'oneOf'].some((k) => k in params);
  return typed ? params : { ...params, type: 'object' };
}

/** An assistant message's tool_calls → the template's form (arguments as an object, as HF templates expect). */
function messageToolCalls(v: unknown, p: string): Record<string, unknown>[] {
  if (!Array.isArray(v)) throw invalid(p, `'${p}' must be an array of tool calls`, 'invalid_type');
  return v.map((c, j) => {
    const q = `${p}[${j}]`;
    if (!isObj(c) || (c.type !== undefined && c.type !== 'function') || !isObj(c.function) || typeof c.function.name !== 'string') {
      throw invalid(q, `'${q}' must be {"id", "type": "function", "function": {"name", "arguments"}}`, 'invalid_type');
    }
    const a = c.function.arguments;
    let args: unknown = a ?? {};
    if (typeof a === 'string') {
      try { args = JSON.parse(a); } catch { throw invalid(`${q}.function.arguments`, `'${q}.function.arguments' must be a JSON string of an object, got ${describe(a)}`); }
      const deep = nestingError(args, `${q}.function.arguments`);
      if (deep) throw deep;
    }
    if (!isObj(args)) throw invalid(`${q}.function.arguments`, `'${q}.function.arguments' must encode a JSON object`);
    return { id: typeof c.id === 'string' ? c.id : undefined, type: 'function', function: { name: c.function.name, arguments: args } };
  });
}

function chatContent(v: unknown, param: string, role: string): string | null {
  if (v === undefined) {
    if (role === 'assistant') return null;
    throw invalid(param, `'${param}' is required for a '${role}' message`, 'missing_required_parameter');
  }
  if (typeof v === 'string') return v;
  if (!Array.isArray(v)) throw invalid(param, `'${param}' must be a string or an array of content parts, got ${describe(v)}`, 'invalid_type');
  const texts: string[] = [];
  v.forEach((part, j) => {
    const p = `${param}[${j}]`;
    if (!isObj(part)) throw invalid(p, `'${p}' must be a content part object, got ${describe(part)}`, 'invalid_type');
    if (part.type === undefined || part.type === null) throw required(`${p}.type`);
    if (part.type !== 'text') {
      throw invalid(`${p}.type`, `content part type ${describe(part.type)} is not supported: this model takes text only ('text' parts)`);
    }
    if (part.text === undefined || part.text === null) throw required(`${p}.text`);
    if (typeof part.text !== 'string') throw invalid(`${p}.text`, `'${p}.text' must be a string, got ${describe(part.text)}`, 'invalid_type');
    texts.push(part.text);
  });
  return texts.join('');
}

export function parseChatRequest(body: unknown, ctx: ValidationContext): ChatParams {
  const b = bodyObject(body, CHAT_FIELDS);
  for (const key of ['functions', 'function_call'] as const) {
    if (get(b, key) !== undefined) throw invalid(key, `'${key}' is deprecated and not supported; use 'tools' and 'tool_choice'`, 'unsupported_parameter');
  }
  const tools = toolDefs(b);
  const choice = toolChoice(b, tools);
  const parallelToolCalls = optBool(b, 'parallel_tool_calls', true);
  let constraint = responseFormat(b);
  // each constrained tool's schema compiles, or the 400 names the tool and the path inside its parameters
  const checkTool = (t: ToolDef) => {
    const p = `tools[${tools.indexOf(t)}].function.parameters`;
    const e = toolSchemaError(t.function.parameters);
    if (e) throw invalid(p, `'${p}' of tool '${t.function.name}': ${e.message}`, 'unsupported_parameter');
  };
  if (choice === 'required' || typeof choice === 'object') {
    // the answer is a call, so response_format (compiled above: a bad schema is still a 400) has no text to shape
    // here; OpenAI takes the pair too (an agent keeps its output format on every turn, forced calls included)
    const forced = typeof choice === 'object' ? tools.filter((t) => t.function.name === choice.name) : tools;
    forced.forEach(checkTool);
    constraint = checkConstraint({
      kind: 'tool_calls', parallel: parallelToolCalls && choice === 'required',
      tools: forced.map((t) => ({ name: t.function.name, parameters: callArguments(t.function.parameters) })),
    }, 'tools');
  } else if (choice === 'auto' && tools.some((t) => t.function.strict === true)) {
    // strict tools under auto: a call the model opens is decoded under the calls grammar (strict tools' schemas, any
    // object for the others); text stays free, or response_format's
    tools.filter((t) => t.function.strict === true).forEach(checkTool);
    constraint = checkConstraint({
      kind: 'tool_calls', parallel: parallelToolCalls, text: (constraint as TextSpec | null) ?? 'free',
      tools: tools.map((t) => ({ name: t.function.name, parameters: t.function.strict === true ? callArguments(t.function.parameters) : { type: 'object' } })),
    }, 'tools');
  }
  // OpenAI's rule (16 string values, keys up to 64 characters, values up to 512), stored or not
  const metaProblem = metadataProblem(get(b, 'metadata'));
  if (metaProblem) throw invalid(metaProblem.param, metaProblem.message);
  optBool(b, 'store', false);
  for (const key of ['service_tier', 'prompt_cache_key', 'prompt_cache_retention', 'safety_identifier', 'reasoning_effort', 'verbosity'] as const) optString(b, key);
  // Fields that would change the answer are refused rather than ignored.
  const modalities = get(b, 'modalities');
  if (modalities !== undefined) {
    if (!Array.isArray(modalities)) throw invalid('modalities', `'modalities' must be an array, got ${describe(modalities)}`, 'invalid_type');
    const other = modalities.find((m) => m !== 'text');
    if (other !== undefined) throw invalid('modalities', `modality ${describe(other)} is not supported: this model outputs text only`, 'unsupported_parameter');
  }
  if (get(b, 'audio') !== undefined) throw invalid('audio', `'audio' output is not supported: this model outputs text only`, 'unsupported_parameter');
  if (get(b, 'web_search_options') !== undefined) throw invalid('web_search_options', `'web_search_options' is not supported: this server does not search the web`, 'unsupported_parameter');
  if (get(b, 'moderation') !== undefined) throw invalid('moderation', MODERATION_REFUSED, 'unsupported_parameter');

  const mv = get(b, 'messages');
  if (mv === undefined) throw invalid('messages', `'messages' is required`, 'missing_required_parameter');
  if (!Array.isArray(mv)) throw invalid('messages', `'messages' must be an array of messages, got ${describe(mv)}`, 'invalid_type');
  if (mv.length === 0) throw invalid('messages', `'messages' must hold at least one message`);
  const messages: ChatMessage[] = mv.map((m, i) => {
    const p = `messages[${i}]`;
    if (!isObj(m)) throw invalid(p, `'${p}' must be an object, got ${describe(m)}`, 'invalid_type');
    if (m.role === undefined || m.role === null) throw required(`${p}.role`);
    if (typeof m.role !== 'string' || !CHAT_ROLES.has(m.role)) {
      throw invalid(`${p}.role`, `'${p}.role' must be one of ${[...CHAT_ROLES].join(', ')}, got ${describe(m.role)}`);
    }
    const calls = m.tool_calls === undefined || m.tool_calls === null ? null : messageToolCalls(m.tool_calls, `${p}.tool_calls`);
    if (calls && m.role !== 'assistant') throw invalid(`${p}.tool_calls`, `only assistant messages carry 'tool_calls'`);
    if (m.name !== undefined && m.name !== null && typeof m.name !== 'string') throw invalid(`${p}.name`, `'${p}.name' must be a string`, 'invalid_type');
    // OpenAI's rule: a tool result names the call it answers (clients send it; a template may show it)
    if (m.tool_call_id !== undefined && m.tool_call_id !== null && typeof m.tool_call_id !== 'string') {
      throw invalid(`${p}.tool_call_id`, `'${p}.tool_call_id' must be a string, got ${describe(m.tool_call_id)}`, 'invalid_type');
    }
    if (m.role === 'tool' && typeof m.tool_call_id !== 'string') throw required(`${p}.tool_call_id`, ': a tool message answers the tool call with this id');
    const content = chatContent(m.content === null ? undefined : m.content, `${p}.content`, m.role);
    // Llama templates know system, user, assistant, tool (ipython); 'developer' is OpenAI's new name for system.
    const role = m.role === 'developer' ? 'system' : m.role;
    const out: ChatMessage = { role, content: content ?? '' };
    if (typeof m.name === 'string') out.name = m.name;
    if (typeof m.tool_call_id === 'string') out.tool_call_id = m.tool_call_id;
    if (calls) out.tool_calls = calls;
    return out;
  });
  const g = generationParams(b, ctx, true);
  if (g.constraint && constraint?.kind === 'tool_calls' && constraint.text === 'free') constraint = { ...constraint, text: g.constraint as TextSpec };
  else if (g.constraint && constraint) {
    if (get(b, 'structured_outputs') !== undefined) throw invalid('structured_outputs', `'structured_outputs' cannot be combined with a 'response_format' other than 'text' or a forced tool call (tool_choice 'required' or named): both would constrain the output; send one`);
    throw invalid('guided_json', `guided_* cannot be combined with response_format or a forced tool call`);
  }
  // parallel_tool_calls without tools changes nothing: named like the other ignored fields
  const ignored = tools.length === 0 && get(b, 'parallel_tool_calls') !== undefined ? [...g.ignored, 'parallel_tool_calls'] : g.ignored;
  refuseBesideConstraint(g, constraint ?? g.constraint);
  const plv = get(b, 'prompt_logprobs');
  const promptLogprobs = plv === undefined ? null : num(plv, 'prompt_logprobs', { min: 0, max: MAX_TOP_LOGPROBS, integer: true });
  // vLLM: a chat stream carries no prompt logprobs (0 is taken there, and gives none)
  if (promptLogprobs !== null && promptLogprobs > 0 && g.stream) throw invalid('prompt_logprobs', `'prompt_logprobs' is not available with 'stream': true on chat completions (as vLLM); ask without streaming`);
  return {
    // streamed, 0 gives none: not asked of the engine, where prompt logprobs turn off the prefix cache for nothing
    ...g, ignored, constraint: constraint ?? g.constraint, messages, ...templateParams(b), promptLogprobs: g.stream ? null : promptLogprobs,
    tools: tools.map(({ type, function: { strict: _s, ...f } }) => ({ type, function: f })), // strict decides decoding, not the prompt
    toolChoice: choice, parallelToolCalls,
  };
}

/**
 * Names chat_template_kwargs may not hold, and why: the variables the route sets from the request and the tokenizer,
 * the template engine's built-ins, and what vLLM refuses there too. (`documents`, which no floe field sets, passes.)
 */
const BUILTIN = 'is a built-in of the template engine';
const TEMPLATE_OWN: Readonly<Record<string, string>> = {
  messages: `is set from 'messages'`, tools: `is set from 'tools'`,
  add_generation_prompt: `is set from the request's 'add_generation_prompt' (default true); send that field`,
  continue_final_message: `is a request field; send 'continue_final_message' itself`,
  bos_token: 'is set from the tokenizer', eos_token: 'is set from the tokenizer',
  chat_template: `is not a template variable: the model's template is used (vLLM refuses it here too)`,
  tokenize: 'is not a template variable (vLLM refuses it here too)',
  raise_exception: BUILTIN, range: BUILTIN, strftime_now: BUILTIN, namespace: BUILTIN,
  true: BUILTIN, false: BUILTIN, none: BUILTIN, True: BUILTIN, False: BUILTIN, None: BUILTIN,
};

/** Why `v` is not a JSON value, or null (non-JSON values, functions or NaN, come only from callers in code). */
function jsonProblem(v: unknown): string | null {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return null;
  if (typeof v === 'number') return Number.isFinite(v) ? null : `${v} is not a JSON number`;
  if (Array.isArray(v)) return v.map(jsonProblem).find((p) => p !== null) ?? null;
  if (isObj(v) && [Object.prototype, null].includes(Object.getPrototypeOf(v))) return Object.values(v).map(jsonProblem).find((p) => p !== null) ?? null;
  return `${typeof v === 'object' ? (v as object).constructor?.name ?? 'object' : typeof v} is not a JSON value`;
}

/**
 * add_generation_prompt (default true, as vLLM), vLLM's continue_final_message (default false; true needs
 * add_generation_prompt false, as vLLM requires) and chat_template_kwargs (an object of further template variables;
 * one naming a variable set above is a 400, not silently overridden either way).
 */
function templateParams(b: Obj): Pick<ChatParams, 'addGenerationPrompt' | 'continueFinalMessage' | 'chatTemplateKwargs'> {
  const addGenerationPrompt = optBool(b, 'add_generation_prompt', true);
  const continueFinalMessage = optBool(b, 'continue_final_message', false);
  if (continueFinalMessage && addGenerationPrompt) {
    const why = get(b, 'add_generation_prompt') === undefined ? ` ('add_generation_prompt' defaults to true)` : '';
    throw invalid('continue_final_message', `cannot set both 'continue_final_message' and 'add_generation_prompt' to true${why}: ` +
      `send 'add_generation_prompt': false to continue the final message, or leave out 'continue_final_message' to start a new one`);
  }
  const kw = get(b, 'chat_template_kwargs');
  if (kw === undefined) return { addGenerationPrompt, continueFinalMessage, chatTemplateKwargs: null };
  if (!isObj(kw)) throw invalid('chat_template_kwargs', `'chat_template_kwargs' must be an object of template variables, got ${describe(kw)}`, 'invalid_type');
  const deep = nestingError(kw, 'chat_template_kwargs');
  if (deep) throw deep;
  for (const [k, v] of Object.entries(kw)) {
    const p = `chat_template_kwargs.${k.slice(0, 64)}`;
    const own = Object.hasOwn(TEMPLATE_OWN, k) ? TEMPLATE_OWN[k] : undefined;
    if (own !== undefined) throw invalid(p, `'${p}' cannot be set: '${k}' ${own}`);
    const bad = jsonProblem(v);
    if (bad !== null) throw invalid(p, `'${p}' must be a JSON value: ${bad}`, 'invalid_type');
  }
  return { addGenerationPrompt, continueFinalMessage, chatTemplateKwargs: kw };
}

/**
 * Text prompts, token-id prompts or lists of either. `emptyText`: a text may be '' (completions: the model then starts
 * from the tokens its tokenizer adds, Llama's BOS, as OpenAI's default prompt and vLLM do; the route refuses a prompt
 * that encodes to no tokens).
 */
function prompts(v: unknown, param: string, ctx: ValidationContext, emptyText = false): Prompt[] {
  const notEmpty = (s: string, p: string): string => {
    if (s === '' && !emptyText) throw invalid(p, `'${p}' must not be empty`);
    return s;
  };
  if (typeof v === 'string') return [{ text: notEmpty(v, param) }];
  if (!Array.isArray(v)) {
    throw invalid(param, `'${param}' must be a string, an array of strings, an array of token ids or an array of such arrays, got ${describe(v)}`, 'invalid_type');
  }
  if (v.length === 0) throw invalid(param, `'${param}' must not be empty`);
  if (v.length > MAX_PROMPTS && typeof v[0] !== 'number') throw invalid(param, `'${param}' may hold at most ${MAX_PROMPTS} inputs, got ${v.length}`);
  if (v.every((x) => typeof x === 'string')) return v.map((s, i) => ({ text: notEmpty(s as string, `${param}[${i}]`) }));
  if (typeof v[0] === 'number') return [{ ids: tokenIds(v, param, ctx.vocabSize) }];
  return v.map((x, i) => {
    if (typeof x === 'string') return { text: notEmpty(x, `${param}[${i}]`) };
    if (Array.isArray(x)) return { ids: tokenIds(x, `${param}[${i}]`, ctx.vocabSize) };
    throw invalid(`${param}[${i}]`, `'${param}[${i}]' must be a string or an array of token ids, got ${describe(x)}`, 'invalid_type');
  });
}

export function parseCompletionRequest(body: unknown, ctx: ValidationContext): CompletionParams {
  const b = bodyObject(body, COMPLETION_FIELDS);
  if (get(b, 'suffix') !== undefined) throw invalid('suffix', `'suffix' is not supported: Llama models have no fill-in-the-middle mode`, 'unsupported_parameter');
  const bestOf = get(b, 'best_of');
  if (bestOf !== undefined && bestOf !== 1) throw invalid('best_of', `'best_of' is not supported (only 1), got ${describe(bestOf)}`, 'unsupported_parameter');
  const pv = get(b, 'prompt');
  if (pv === undefined) throw invalid('prompt', `'prompt' is required`, 'missing_required_parameter');
  const ps = prompts(pv, 'prompt', ctx, true);
  const plv = get(b, 'prompt_logprobs');
  const promptLogprobs = plv === undefined ? null : num(plv, 'prompt_logprobs', { min: 0, max: MAX_TOP_LOGPROBS, integer: true });
  const g = generationParams(b, ctx, false);
  refuseBesideConstraint(g, g.constraint);
  return { ...g, prompts: ps, echo: optBool(b, 'echo', false), promptLogprobs };
}

export function parseEmbeddingRequest(body: unknown, ctx: ValidationContext): EmbeddingParams {
  const b = bodyObject(body, EMBEDDING_FIELDS);
  const model = checkModel(b, ctx);
  const iv = get(b, 'input');
  if (iv === undefined) throw invalid('input', `'input' is required`, 'missing_required_parameter');
  const inputs = prompts(iv, 'input', ctx);
  const ef = get(b, 'encoding_format') ?? 'float';
  if (ef !== 'float' && ef !== 'base64') throw invalid('encoding_format', `'encoding_format' must be 'float' or 'base64', got ${describe(ef)}`);
  const dim = get(b, 'dimensions');
  if (dim !== undefined) {
    const d = num(dim, 'dimensions', { min: 1, integer: true });
    if (d !== ctx.hiddenSize) throw invalid('dimensions', `'dimensions' must be the model's hidden size ${ctx.hiddenSize} (no truncation), got ${d}`, 'unsupported_parameter');
  }
  const user = get(b, 'user');
  if (user !== undefined && typeof user !== 'string') throw invalid('user', `'user' must be a string, got ${describe(user)}`, 'invalid_type');
  const pooling = get(b, 'pooling') ?? null;
  if (pooling !== null && pooling !== 'mean' && pooling !== 'last') throw invalid('pooling', `'pooling' must be 'mean' or 'last', got ${describe(pooling)}`);
  return { model, inputs, encodingFormat: ef, pooling, normalize: optBool(b, 'normalize', true), ignored: user === undefined ? [] : ['user'], truncatePromptTokens: truncatePromptTokens(b) };
}
