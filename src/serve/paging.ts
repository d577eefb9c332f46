// One page of a list held in memory (a stored response's input items, a stored chat completion's messages), as OpenAI
// pages its lists: the items in the asked order, those after the `after` id, at most `limit`.

import { ApiError, invalid } from './errors.js';

/**
 * A query parameter given at most once. Fastify reads a repeated one (?after=a&after=b) as an array, which the list
 * routes would hand on as a string (to SQLite, to a filter): a 400 naming it instead.
 */
export function queryOne(q: Record<string, unknown>, key: string): string | undefined {
  const v = q[key];
  if (Array.isArray(v)) throw invalid(key, `'${key}' is given ${v.length} times; give it once`);
  return v as string | undefined;
}

/** The named query parameters, each given at most once (queryOne). */
export function queryOnce<K extends string>(q: Record<string, unknown>, keys: readonly K[]): { [k in K]?: string } {
  return Object.fromEntries(keys.map((k) => [k, queryOne(q, k)])) as { [k in K]?: string };
}

export interface ListPage<T> { object: 'list'; data: T[]; first_id: string | null; last_id: string | null; has_more: boolean }

/** items (in stored order) as one page; `missing` makes the 404 for an `after` that names none of them. */
export function pageOf<T extends { id?: unknown }>(items: readonly T[], order: 'asc' | 'desc', after: string | null | undefined, limit: number,
  missing: (after: string) => ApiError): ListPage<T> {
  const list = order === 'asc' ? items : [...items].reverse();
  let from = 0;
  if (after !== null && after !== undefined) {
    const at = list.findIndex((x) => x.id === after);
    if (at < 0) throw missing(after);
    from = at + 1;
  }
  const data = list.slice(from, from + limit);
  return { object: 'list', data, first_id: (data[0]?.id as string | undefined) ?? null, last_id: (data.at(-1)?.id as string | undefined) ?? null, has_more: from + limit < list.length };
}
