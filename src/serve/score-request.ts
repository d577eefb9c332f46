// Request validation for vLLM's Score API (POST /score) and Rerank API (POST /rerank: Jina's and Cohere's shape):
// every field checked by hand, the texts paired.

import { invalid } from './errors.js';
import { bodyObject, describe, get, isObj, optBool, required, truncatePromptTokens, type Obj } from './validate.js';

/** One text to embed and the request field it came from, which its 400s name (`text_2[3]`, `documents[0]`). */
export interface ScoreText {
  readonly text: string;
  readonly param: string;
}

export interface ScoreParams<M> {
  readonly model: M; // what the route made of the request's `model` (absent: null)
  readonly fields: readonly [string, string]; // the request's names for the two sides: text_1/text_2, or vLLM's others
  readonly first: readonly ScoreText[]; // one text scored against every `second` (1:N), or as many as it (N:N)
  readonly second: readonly ScoreText[];
  readonly truncatePromptTokens: number | null; // keep each text's first k tokens (-1: as many as the model takes); null → all
  readonly ignored: readonly string[]; // 'user' when set: accepted and ignored
}

export interface RerankParams<M> {
  readonly model: M;
  readonly query: ScoreText;
  readonly documents: readonly ScoreText[];
  readonly topN: number; // the best topN results; 0: all of them
  readonly returnDocuments: boolean;
  readonly truncatePromptTokens: number | null;
  readonly ignored: readonly string[];
}

// vLLM's ScoreRequest takes its two sides under any one of these pairs of names (text_1/text_2 first, the original)
const SCORE_PAIRS = [['text_1', 'text_2'], ['data_1', 'data_2'], ['queries', 'documents'], ['queries', 'items']] as const;
const SCORE_NAMES = [...new Set(SCORE_PAIRS.flat())];
const COMMON_FIELDS = ['model', 'truncate_prompt_tokens', 'user'];
const SCORE_FIELDS = new Set([...COMMON_FIELDS, ...SCORE_NAMES]);
const RERANK_FIELDS = new Set([...COMMON_FIELDS, 'query', 'documents', 'top_n', 'return_documents']);
const MAX_TEXTS = 2048; // per list, as /v1/embeddings' `input` (OpenAI's limit)

/** `model`: the route's check of the request's model (absent: null), before the other fields', as validate.ts orders them. */
export function parseScoreRequest<M>(body: unknown, model: (name: string | null) => M): ScoreParams<M> {
  const b = bodyObject(body, SCORE_FIELDS);
  const m = model(modelOf(b));
  const [f1, f2] = scoreFields(b);
  const first = texts(get(b, f1), f1, false);
  const second = texts(get(b, f2), f2, false);
  // vLLM's rule (score utils: "Input lengths must be either 1:1, 1:N or N:N")
  if (first.length > 1 && first.length !== second.length) {
    throw invalid(f2, `'${f1}' holds ${first.length} texts and '${f2}' ${second.length}: score one ${f1} against any number of ${f2} (1:N), or as many of each, paired in order (N:N)`);
  }
  return { model: m, fields: [f1, f2], first, second, truncatePromptTokens: truncatePromptTokens(b), ignored: ignoredOf(b) };
}

export function parseRerankRequest<M>(body: unknown, model: (name: string | null) => M): RerankParams<M> {
  const b = bodyObject(body, RERANK_FIELDS);
  const m = model(modelOf(b));
  const q = get(b, 'query');
  if (q === undefined) throw required('query');
  if (typeof q !== 'string') throw invalid('query', `'query' must be a string, got ${describe(q)}`, 'invalid_type');
  if (q === '') throw invalid('query', `'query' must not be empty`);
  const d = get(b, 'documents');
  if (d === undefined) throw required('documents');
  const top = get(b, 'top_n') ?? 0;
  if (typeof top !== 'number' || !Number.isSafeInteger(top)) throw invalid('top_n', `'top_n' must be an integer >= 0 (0: all the documents), got ${describe(top)}`, 'invalid_type');
  if (top < 0) throw invalid('top_n', `'top_n' must be an integer >= 0 (0: all the documents), got ${top}`);
  return {
    model: m, query: { text: q, param: 'query' }, documents: texts(d, 'documents', true), topN: top,
    returnDocuments: optBool(b, 'return_documents', true), truncatePromptTokens: truncatePromptTokens(b), ignored: ignoredOf(b),
  };
}

function modelOf(b: Obj): string | null {
  const m = get(b, 'model');
  if (m === undefined) return null;
  if (typeof m !== 'string') throw invalid('model', `'model' must be a string, got ${describe(m)}`, 'invalid_type');
  return m;
}

function ignoredOf(b: Obj): string[] {
  const user = get(b, 'user');
  if (user !== undefined && typeof user !== 'string') throw invalid('user', `'user' must be a string, got ${describe(user)}`, 'invalid_type');
  return user === undefined ? [] : ['user'];
}

/** The pair of names the request gives its two sides under; both must be there, and no name of another pair. */
function scoreFields(b: Obj): readonly [string, string] {
  const named = SCORE_NAMES.filter((k) => get(b, k) !== undefined);
  if (named.length === 0) throw required('text_1', ` (the text scored against 'text_2'; vLLM's other names for the pair: data_1/data_2, queries/documents, queries/items)`);
  const pair = SCORE_PAIRS.find((p) => named.every((k) => (p as readonly string[]).includes(k)));
  if (!pair) {
    const base = SCORE_PAIRS.find((p) => (p as readonly string[]).includes(named[0]!))!;
    const odd = named.find((k) => !(base as readonly string[]).includes(k))!;
    throw invalid(odd, `give the two sides under one pair of names (${SCORE_PAIRS.map((p) => p.join('/')).join(', ')}), got ${named.map((k) => `'${k}'`).join(', ')}`);
  }
  for (const k of pair) if (get(b, k) === undefined) throw required(k, ` beside '${pair.find((x) => x !== k)}'`);
  return pair;
}

/**
 * One side's texts: a string or a non-empty array of strings. Rerank documents may also be objects with a string
 * `text` (Jina's and Cohere's document objects; other keys are the caller's metadata). vLLM's multimodal
 * `{"content": [...]}` is refused: floe's embedding models read text only, as vLLM refuses it for a text model.
 */
function texts(v: unknown, param: string, documentObjects: boolean): ScoreText[] {
  if (typeof v === 'string') return [text(v, param, documentObjects)];
  const what = `a string or an array of strings${documentObjects ? ' (or of {"text": ...} objects)' : ''}`;
  if (!Array.isArray(v)) throw invalid(param, `'${param}' must be ${what}, got ${describe(v)}`, 'invalid_type');
  if (v.length === 0) throw invalid(param, `'${param}' must not be empty`);
  if (v.length > MAX_TEXTS) throw invalid(param, `'${param}' may hold at most ${MAX_TEXTS} texts, got ${v.length}`);
  return v.map((x, i) => text(x, `${param}[${i}]`, documentObjects));
}

function text(v: unknown, param: string, documentObjects: boolean): ScoreText {
  let s = v;
  if (documentObjects && isObj(v) && 'text' in v) s = v.text;
  else if (isObj(v) && 'content' in v) {
    throw invalid(param, `'${param}' is multimodal content ({"content": [...]}), but this embedding model reads text only: send the text as a string`, 'invalid_type');
  }
  if (typeof s !== 'string') {
    const where = s === v ? param : `${param}.text`;
    throw invalid(where, `'${where}' must be ${documentObjects && s === v ? 'a string or a {"text": string} object' : 'a string'}, got ${describe(s)}`, 'invalid_type');
  }
  if (s === '') throw invalid(param, `'${param}' must not be empty`);
  return { text: s, param };
}
