// Structured metadata filters for RAG search: {field, op, value} over the chunk table's metadata columns, validated
// and compiled to a LanceDB (DataFusion SQL) predicate with quoted literals, so callers never send SQL.

/** A metadata column and the type its values have. */
export const FILTER_FIELDS = {
  source: 'string', kind: 'string', doc_hash: 'string', chunk: 'int', start_offset: 'int', end_offset: 'int',
} as const satisfies Record<string, 'string' | 'int'>;
export type FilterField = keyof typeof FILTER_FIELDS;

export const FILTER_OPS = ['=', '!=', '<', '<=', '>', '>=', 'in', 'not_in', 'prefix'] as const;
export type FilterOp = (typeof FILTER_OPS)[number];

export interface FilterCondition {
  readonly field: FilterField;
  readonly op: FilterOp;
  readonly value: string | number | readonly (string | number)[];
}

/** One condition, or several that must all hold. */
export type Filter = FilterCondition | readonly FilterCondition[];

export class FilterError extends Error {
  constructor(readonly param: string, message: string) {
    super(message);
  }
}

const MAX_CONDITIONS = 32;
const MAX_IN_VALUES = 1024;
const INT32 = 2 ** 31;
const show = (v: unknown) => (v === undefined ? 'nothing' : JSON.stringify(v)?.slice(0, 80) ?? String(v));
const obj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Validate a filter from untrusted JSON (`param` names it in errors); null/undefined is no filter. */
export function parseFilter(v: unknown, param = 'where'): Filter | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') {
    throw new FilterError(param, `'${param}' must be a structured filter {"field", "op", "value"} (or an array of them, all of which must hold), ` +
      `not a string: raw SQL is not accepted. Fields: ${Object.keys(FILTER_FIELDS).join(', ')}; ops: ${FILTER_OPS.join(', ')}`);
  }
  if (Array.isArray(v)) {
    if (v.length === 0) throw new FilterError(param, `'${param}' is an empty array; give at least one condition or leave it out`);
    if (v.length > MAX_CONDITIONS) throw new FilterError(param, `'${param}' has ${v.length} conditions; at most ${MAX_CONDITIONS}`);
    return v.map((c, i) => condition(c, `${param}[${i}]`));
  }
  return condition(v, param);
}

function condition(v: unknown, at: string): FilterCondition {
  if (!obj(v)) throw new FilterError(at, `'${at}' must be an object {"field", "op", "value"}, got ${show(v)}`);
  for (const k of Object.keys(v)) if (k !== 'field' && k !== 'op' && k !== 'value') throw new FilterError(`${at}.${k}`, `'${at}' has an unknown key '${k}'; a condition has field, op and value`);
  const field = v.field;
  if (typeof field !== 'string' || !Object.hasOwn(FILTER_FIELDS, field)) {
    throw new FilterError(`${at}.field`, `'${at}.field' must be one of ${Object.keys(FILTER_FIELDS).join(', ')}, got ${show(field)}`);
  }
  const op = v.op ?? '=';
  if (typeof op !== 'string' || !(FILTER_OPS as readonly string[]).includes(op)) throw new FilterError(`${at}.op`, `'${at}.op' must be one of ${FILTER_OPS.join(', ')}, got ${show(op)}`);
  const type = FILTER_FIELDS[field as FilterField];
  const scalar = (x: unknown, where: string): string | number => {
    if (type === 'string') {
      if (typeof x !== 'string') throw new FilterError(where, `'${where}' must be a string (${field} is text), got ${show(x)}`);
      if (x.includes('\0')) throw new FilterError(where, `'${where}' contains a NUL character`);
      return x;
    }
    if (typeof x !== 'number' || !Number.isInteger(x) || Math.abs(x) >= INT32) throw new FilterError(where, `'${where}' must be a 32-bit integer (${field} is an integer), got ${show(x)}`);
    return x;
  };
  const value = v.value;
  if (op === 'in' || op === 'not_in') {
    if (!Array.isArray(value) || value.length === 0 || value.length > MAX_IN_VALUES) {
      throw new FilterError(`${at}.value`, `'${at}.value' must be a non-empty array of at most ${MAX_IN_VALUES} values for op '${op}', got ${show(value)}`);
    }
    return { field: field as FilterField, op, value: value.map((x, i) => scalar(x, `${at}.value[${i}]`)) };
  }
  if (op === 'prefix' && type !== 'string') throw new FilterError(`${at}.op`, `'${at}.op' prefix applies to text fields (source, kind, doc_hash), not ${field}`);
  return { field: field as FilterField, op: op as FilterOp, value: scalar(value, `${at}.value`) };
}

/** SQL string literal: single quotes doubled. */
export const sqlString = (s: string): string => `'${s.replaceAll("'", "''")}'`;

const literal = (x: string | number): string => (typeof x === 'number' ? String(x) : sqlString(x));

/** The predicate LanceDB evaluates; every value is a quoted literal, every column one of FILTER_FIELDS. */
export function compileFilter(f: Filter): string {
  const conds = (Array.isArray(f) ? f : [f]) as readonly FilterCondition[];
  return conds.map((c) => {
    if (!Object.hasOwn(FILTER_FIELDS, c.field)) throw new FilterError('where', `unknown filter field ${show(c.field)}`);
    const col = c.field; // a known identifier, safe unquoted
    switch (c.op) {
      case 'in': case 'not_in': {
        const list = (c.value as readonly (string | number)[]).map(literal).join(', ');
        return `${col} ${c.op === 'in' ? 'IN' : 'NOT IN'} (${list})`;
      }
      case 'prefix': {
        const p = c.value as string;
        // starts_with avoids LIKE's % and _ wildcards in the value
        return `starts_with(${col}, ${sqlString(p)})`;
      }
      case '=': case '!=': case '<': case '<=': case '>': case '>=':
        return `${col} ${c.op} ${literal(c.value as string | number)}`;
      default:
        throw new FilterError('where', `unknown filter op ${show(c.op)}`);
    }
  }).map((s) => `(${s})`).join(' AND ');
}
