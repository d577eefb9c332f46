// Stored chat completions (OpenAI's `store: true` on POST /v1/chat/completions): the completion as answered, the
// request's messages and settings, in the data dir's SQLite database; GET (list, one, its messages), POST (metadata),
// DELETE.

import type Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';
import { metadataProblem } from '../platform/metadata.js';
import { UnknownCursorError, type Store } from '../platform/store.js';
import { ApiError, invalid } from './errors.js';
import { pageOf, queryOne } from './paging.js';
import { get, type ChatParams } from './validate.js';

type Obj = Record<string, unknown>;
type Order = 'asc' | 'desc';

const DEFAULT_LIMIT = 20;
const MAX_LIMIT = 100;
const NO_STORE = 'this server stores no chat completions (started with --no-batch: no data dir), so `store: true` keeps nothing';

/** The completions table: one row per stored completion, in `seq` order of storing; `created` is the completion's own. */
export class ChatCompletionStore {
  constructor(private readonly db: Database.Database) {
    db.exec(`CREATE TABLE IF NOT EXISTS chat_completions (
      seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, created INTEGER NOT NULL, model TEXT NOT NULL,
      metadata TEXT NOT NULL, completion TEXT NOT NULL, messages TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS chat_completions_created ON chat_completions (created, seq)`);
  }

  /** `completion`: the chat.completion object without metadata; `messages`: the stored message objects (with ids). */
  put(completion: Obj & { id: string; created: number; model: string }, metadata: Readonly<Record<string, string>>, messages: readonly Obj[]): void {
    this.db.prepare('INSERT INTO chat_completions (id, created, model, metadata, completion, messages) VALUES (?, ?, ?, ?, ?, ?)')
      .run(completion.id, completion.created, completion.model, JSON.stringify(metadata), JSON.stringify(completion), JSON.stringify(messages));
  }

  /** The stored chat.completion (its metadata in it), or undefined. */
  get(id: string): Obj | undefined {
    const row = this.db.prepare('SELECT completion, metadata FROM chat_completions WHERE id = ?').get(id) as { completion: string; metadata: string } | undefined;
    return row && withMetadata(row);
  }

  messages(id: string): Obj[] | undefined {
    const row = this.db.prepare('SELECT messages FROM chat_completions WHERE id = ?').pluck().get(id) as string | undefined;
    return row === undefined ? undefined : JSON.parse(row) as Obj[];
  }

  /** Replace the metadata; false when no completion has this id. */
  setMetadata(id: string, metadata: Readonly<Record<string, string>>): boolean {
    return this.db.prepare('UPDATE chat_completions SET metadata = ? WHERE id = ?').run(JSON.stringify(metadata), id).changes > 0;
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM chat_completions WHERE id = ?').run(id).changes > 0;
  }

  /**
   * Completions by `created` (then storing order), of one model and holding every given metadata pair when asked,
   * after the completion `after` (cursor), at most `limit`.
   */
  list(q: { model: string | null; metadata: Readonly<Record<string, string>>; after: string | null; limit: number; order: Order }): Obj[] {
    let cursor: { created: number; seq: number } | undefined;
    if (q.after !== null) {
      cursor = this.db.prepare('SELECT created, seq FROM chat_completions WHERE id = ?').get(q.after) as { created: number; seq: number } | undefined;
      if (!cursor) throw new UnknownCursorError(q.after, 'stored chat completion');
    }
    const pairs = Object.entries(q.metadata);
    const meta = pairs.map(() => " AND EXISTS (SELECT 1 FROM json_each(chat_completions.metadata) WHERE key = ? AND type = 'text' AND value = ?)").join('');
    const cmp = q.order === 'asc' ? '>' : '<';
    const dir = q.order === 'asc' ? 'ASC' : 'DESC';
    const rows = this.db.prepare(`SELECT completion, metadata FROM chat_completions
      WHERE (? IS NULL OR model = ?)${meta} AND (? IS NULL OR (created, seq) ${cmp} (?, ?)) ORDER BY created ${dir}, seq ${dir} LIMIT ?`)
      .all(q.model, q.model, ...pairs.flat(), cursor?.created ?? null, cursor?.created ?? null, cursor?.seq ?? null, q.limit) as Array<{ completion: string; metadata: string }>;
    return rows.map(withMetadata);
  }
}

/** What a stored completion carries beside the chat.completion fields (OpenAI's retrieve / list; its create answer has none). */
const SETTINGS = ['request_id', 'seed', 'temperature', 'top_p', 'presence_penalty', 'frequency_penalty', 'tools', 'tool_choice', 'response_format'] as const;

function withMetadata(row: { completion: string; metadata: string }): Obj {
  const c = JSON.parse(row.completion) as Obj;
  for (const k of SETTINGS) c[k] ??= null; // a completion stored before its settings were
  return { ...c, metadata: JSON.parse(row.metadata) as Obj };
}

/**
 * A request's settings as a stored completion answers them, after the model's generation_config.json defaults: the
 * sampling used (`top_p` 0, which runs as top-k 1, as asked; `seed` as used, mod 2^53, null when none was given),
 * `tools` and `response_format` as given (absent: null, and `{type: "text"}`), `tool_choice` as given, else chat's
 * default ('auto' with tools, 'none' without).
 */
export function chatSettings(body: Obj, p: ChatParams): Obj {
  const s = p.sampling;
  return {
    seed: s.seed, temperature: s.temperature, top_p: get(body, 'top_p') === 0 ? 0 : s.topP,
    presence_penalty: s.presencePenalty, frequency_penalty: s.frequencyPenalty,
    tools: get(body, 'tools') ?? null, tool_choice: get(body, 'tool_choice') ?? p.toolChoice,
    response_format: get(body, 'response_format') ?? { type: 'text' },
  };
}

/** A request's `messages` as OpenAI lists a stored completion's: `{id: <completion id>-<i>, role, content, name, content_parts}`. */
export function storedMessages(completionId: string, messages: readonly Obj[]): Obj[] {
  return messages.map((m, i) => {
    const parts = Array.isArray(m.content) ? m.content as Obj[] : null;
    const content = parts ? parts.map((p) => (typeof p.text === 'string' ? p.text : '')).join('') : (m.content ?? null);
    const { role, name, content: _c, ...rest } = m;
    return { id: `${completionId}-${i}`, role, content, name: name ?? null, content_parts: parts, ...rest };
  });
}

/** Streamed chunks folded into the message, logprobs and finish_reason each choice of the plain answer carries. */
export class ChunkAssembler {
  private readonly parts: Array<{
    content: string | null; calls: Array<{ id: string; type: 'function'; function: { name: string; arguments: string } }>;
    logprobs: unknown[]; finish: string | null;
  }> = [];

  add(chunk: unknown): void {
    const c = chunk as { object?: unknown; choices?: unknown };
    if (c?.object !== 'chat.completion.chunk' || !Array.isArray(c.choices)) return;
    for (const ch of c.choices as Array<{ index: number; delta: Obj; logprobs: { content?: unknown[] } | null; finish_reason: string | null }>) {
      const s = (this.parts[ch.index] ??= { content: null, calls: [], logprobs: [], finish: null });
      const d = ch.delta as { content?: string | null; tool_calls?: Array<{ index: number; id?: string; function?: { name?: string; arguments?: string } }> };
      if (typeof d.content === 'string') s.content = (s.content ?? '') + d.content;
      for (const t of d.tool_calls ?? []) {
        const call = (s.calls[t.index] ??= { id: '', type: 'function', function: { name: '', arguments: '' } });
        if (t.id !== undefined) call.id = t.id;
        call.function.name += t.function?.name ?? '';
        call.function.arguments += t.function?.arguments ?? '';
      }
      if (ch.logprobs?.content) s.logprobs.push(...ch.logprobs.content);
      if (ch.finish_reason !== null) s.finish = ch.finish_reason;
    }
  }

  /** Choice `i` as a plain answer's: the message (with tool_calls when it called), logprobs (when asked), finish_reason. */
  choice(i: number, logprobs: boolean): Obj {
    const s = this.parts[i] ?? { content: null, calls: [], logprobs: [], finish: null };
    const message = s.calls.length > 0
      ? { role: 'assistant', content: s.content || null, refusal: null, tool_calls: s.calls }
      : { role: 'assistant', content: s.content ?? '', refusal: null };
    return { index: i, message, logprobs: logprobs ? { content: s.logprobs, refusal: null } : null, finish_reason: s.finish };
  }
}

/** What the chat route stores through; null without a data dir. */
export interface ChatStore {
  /**
   * Keep a finished completion: `completion` as answered, the request's `messages`, `requestId` its x-request-id,
   * `settings` its chatSettings.
   */
  put(completion: Obj & { id: string; created: number; model: string }, metadata: Readonly<Record<string, string>> | null, messages: readonly Obj[], requestId: string, settings: Obj): void;
}

/** The stored-completion routes; without a data dir they answer 404s that say nothing is stored. */
export function registerChatStoreRoutes(app: FastifyInstance, dataStore: (() => Store) | null): ChatStore | null {
  let chats: ChatCompletionStore | null = null;
  const store = (): ChatCompletionStore | null => (dataStore ? (chats ??= new ChatCompletionStore(dataStore().db)) : null);
  const need = (): ChatCompletionStore => {
    const s = store();
    if (!s) throw new ApiError(404, NO_STORE, null, 'not_found');
    return s;
  };
  const notFound = (id: string) => new ApiError(404, `no stored chat completion with id '${id.slice(0, 100)}' (only completions created with store: true are kept)`, 'completion_id', 'not_found');
  const stored = (id: string): Obj => {
    const c = need().get(id);
    if (!c) throw notFound(id);
    return c;
  };
  type Q = { Querystring: Record<string, string | string[] | undefined> };
  type P = { Params: { id: string } };

  app.get<Q>('/v1/chat/completions', async (req) => {
    const s = need();
    const q = req.query;
    const { after, limit, order } = page(q);
    const model = queryOne(q, 'model');
    const rows = cursorList(() => s.list({ model: model ?? null, metadata: metadataFilter(q), after, limit: limit + 1, order }));
    const data = rows.slice(0, limit);
    return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: rows.length > limit };
  });

  app.get<P>('/v1/chat/completions/:id', async (req) => stored(req.params.id));

  app.post<P>('/v1/chat/completions/:id', async (req) => {
    const s = need();
    const body = req.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalid('metadata', `the body must be a JSON object {"metadata": {...}}, got ${body === undefined ? 'nothing' : JSON.stringify(body).slice(0, 40)}`, 'invalid_type');
    for (const k of Object.keys(body)) {
      if (k !== 'metadata') throw invalid(k.slice(0, 100), `unknown parameter '${k.slice(0, 100)}': a stored chat completion's only field that can change is 'metadata'`, 'unknown_parameter');
    }
    const md = (body as Obj).metadata;
    if (md === undefined) throw invalid('metadata', `'metadata' is required: the new metadata (an object of strings, or null to clear it)`, 'missing_required_parameter');
    const problem = metadataProblem(md);
    if (problem) throw invalid(problem.param, problem.message);
    if (!s.setMetadata(req.params.id, (md ?? {}) as Record<string, string>)) throw notFound(req.params.id);
    return stored(req.params.id);
  });

  app.delete<P>('/v1/chat/completions/:id', async (req) => {
    if (!need().delete(req.params.id)) throw notFound(req.params.id);
    return { object: 'chat.completion.deleted', id: req.params.id, deleted: true };
  });

  app.get<P & Q>('/v1/chat/completions/:id/messages', async (req) => {
    const messages = need().messages(req.params.id);
    if (!messages) throw notFound(req.params.id);
    const { after, limit, order } = page(req.query);
    return pageOf(messages, order, after, limit, (a) => new ApiError(404, `'after' names no message of chat completion '${req.params.id.slice(0, 100)}': '${a.slice(0, 100)}'`, 'after', 'not_found'));
  });

  if (!dataStore) return null;
  return {
    put(completion, metadata, messages, requestId, settings) {
      store()!.put({ ...completion, request_id: requestId, ...settings }, metadata ?? {}, storedMessages(completion.id, messages));
    },
  };
}

function cursorList<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof UnknownCursorError) throw new ApiError(404, e.message, 'after', 'not_found');
    throw e;
  }
}

/** A list's `after`, `limit` (1 to 100, default 20) and `order` (`asc`, the default, or `desc`), as OpenAI pages them. */
function page(q: Record<string, string | string[] | undefined>): { after: string | null; limit: number; order: Order } {
  const order = queryOne(q, 'order') ?? 'asc';
  if (order !== 'asc' && order !== 'desc') throw invalid('order', `'order' must be "asc" or "desc", got ${JSON.stringify(order).slice(0, 40)}`);
  const l = queryOne(q, 'limit');
  const limit = l === undefined ? DEFAULT_LIMIT : Number(l);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT || l?.trim() === '') throw invalid('limit', `'limit' must be an integer from 1 to ${MAX_LIMIT}, got ${JSON.stringify(l).slice(0, 40)}`);
  return { after: queryOne(q, 'after') ?? null, limit, order };
}

/** OpenAI's list filter `metadata[KEY]=VALUE` (every pair must match); any other `metadata…` parameter is a 400, never ignored. */
function metadataFilter(q: Record<string, string | string[] | undefined>): Record<string, string> {
  const pairs: Record<string, string> = {};
  for (const key of Object.keys(q)) {
    if (!key.startsWith('metadata')) continue;
    const k = key.slice(0, 100);
    const v = queryOne(q, key);
    if (key === 'metadata' && (v === '' || v === 'null')) continue; // the openai client sends metadata: null as 'metadata='
    const m = /^metadata\[([^\]]+)\]$/.exec(key);
    if (!m) throw invalid(k, `unknown query parameter '${k}': filter stored chat completions by metadata with metadata[KEY]=VALUE`);
    pairs[m[1]!] = v!;
  }
  return pairs;
}
