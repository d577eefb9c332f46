// JSON Schema → grammar nodes for constrained decoding: the supported keyword subset, anything else refused by name.

import { ContinuationLengths, intersect, intersectDfas, MAX_DFA_STATES, minimize, type Dfa } from './dfa.js';
import { JsonGrammar } from './grammar.js';
import { integerRegex, MAX_SAFE, multipleDfa, numberRegex, NUMBER_DIGITS, toDec, type Bound } from './ranges.js';
import { parseRegex, RegexError, searchRegex, type Ast } from './regex.js';

/** A value the decoder may produce. Objects emit their properties in declared order; optional ones may be skipped. */
export type Node =
  | { readonly t: 'any'; readonly id: number } // any JSON value
  | { readonly t: 'anyObject'; readonly id: number; readonly values?: Node } // an object of any keys (json_object mode); values: every value's node (any if absent)
  | { readonly t: 'object'; readonly id: number; readonly props: readonly Prop[] }
  | { readonly t: 'array'; readonly id: number; readonly items: Node; readonly min: number; readonly max: number } // max: Infinity → unbounded
  | { readonly t: 'string'; readonly id: number; readonly min: number; readonly max: number; readonly dfa?: Dfa; readonly lens?: ContinuationLengths } // dfa: pattern / format over the decoded code points (any string if none); min / max: length in code points (an escape is one), counted beside the dfa where lens is set, else 0 / Infinity (nothing to count)
  | { readonly t: 'number' | 'integer'; readonly id: number; readonly dfa?: Dfa } // dfa: the bounds, over the number's text
  | { readonly t: 'ref'; readonly id: number; readonly ref: string; readonly path: string; to: Node | null } // $ref: its target, set once compiled (an ancestor where the schema recurses)
  | { readonly t: 'literal'; readonly id: number; readonly texts: readonly Uint8Array[] } // JSON texts (enum, const, boolean, null)
  | { readonly t: 'anyOf'; readonly id: number; readonly nodes: readonly Node[] }
  | { readonly t: 'calls'; readonly id: number; readonly item: Node; readonly sep: Uint8Array; readonly max: number }; // item (sep item)*: parallel tool calls

export interface Prop { readonly key: Uint8Array; readonly name: string; readonly node: Node; readonly required: boolean } // key: JSON-escaped UTF-8, no quotes

/** The schema keywords the compiler understands; annotations are accepted and ignored. */
export const SUPPORTED_KEYWORDS = [
  'type', 'properties', 'required', 'additionalProperties', 'items', 'enum', 'const', 'anyOf', 'oneOf', 'minItems', 'maxItems',
  'minLength', 'maxLength', 'pattern', 'format', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf', '$ref', 'allOf',
] as const;
// annotations, and the definitions $ref points into (read where a $ref leads, not where they stand)
const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'strict', 'deprecated', 'readOnly', 'writeOnly', '$defs', 'definitions']);

/** `format` values and the (whole-string, ECMA) regexes that decode them: subsets of what ajv-formats' full mode accepts. */
const DATE = '(?:\\d{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\\d|30)|02-(?:0[1-9]|1\\d|2[0-8]))|(?:\\d{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)';
const TIME = '(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(?:\\.\\d{1,9})?(?:Z|[+-](?:[01]\\d|2[0-3]):[0-5]\\d)';
const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
// URIs: http(s) with a lowercase host (labels of letters and digits joined by single hyphens, so no 'xn--' label asks for
// IDNA decoding, and a last label of letters, so no host reads as a number) or an IPv4 address, a port of 1-65535, path
// segments, query (with = and &) and fragment of unreserved characters and %-escapes: what URL parsers (WHATWG, pydantic's
// HttpUrl) take as written. A reference is such a URI or a path (absolute or not, no ':'), each with query and fragment.
const PCHAR = '(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})';
const QCHAR = '(?:[A-Za-z0-9._~=&-]|%[0-9A-Fa-f]{2})';
const TAIL = `(?:\\?${QCHAR}*)?(?:#${PCHAR}*)?`;
const PORT = '(?:[1-9]\\d{0,3}|[1-5]\\d{4}|6[0-4]\\d{3}|65[0-4]\\d{2}|655[0-2]\\d|6553[0-5])';
// IPv6 (RFC 4291 §2.2): eight groups, or fewer around one '::' standing for at least one zero group (i before it, at most
// 7 - i after), the last two groups possibly an IPv4 address; hex in lowercase (RFC 5952's canonical case). Exactly the
// lowercase strings ajv-formats' ipv6 takes.
const HEX4 = '[0-9a-f]{1,4}';
const IPV4 = `(?:${OCTET}\\.){3}${OCTET}`;
const IPV6 = [`(?:${HEX4}:){7}${HEX4}`, `(?:${HEX4}:){6}${IPV4}`, ...Array.from({ length: 8 }, (_, i) => {
  const after = [...(i < 7 ? [`${HEX4}(?::${HEX4}){0,${6 - i}}`] : []), ...(i < 6 ? [`(?:${HEX4}:){0,${5 - i}}${IPV4}`] : [])];
  return `${i === 0 ? '' : `(?:${HEX4}:){${i - 1}}${HEX4}`}::${after.length > 0 ? `(?:${after.join('|')})?` : ''}`;
})].join('|');
const URI = `https?://(?:(?:[a-z0-9]+(?:-[a-z0-9]+)*\\.)*[a-z]{2,}|(?:${OCTET}\\.){3}${OCTET})(?::${PORT})?(?:/${PCHAR}*)*${TAIL}`;
export const FORMATS: Readonly<Record<string, string>> = {
  date: DATE,
  time: TIME,
  'date-time': `${DATE}T${TIME}`,
  uuid: '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}',
  email: '[A-Za-z0-9_+-]{1,32}(?:\\.[A-Za-z0-9_+-]{1,32}){0,2}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?\\.){1,3}[A-Za-z]{2,12}',
  ipv4: IPV4,
  ipv6: IPV6,
  hostname: `${LABEL}(?:\\.${LABEL}){0,2}`,
  uri: URI,
  'uri-reference': `${URI}|(?:/(?:${PCHAR}+(?:/${PCHAR}*)*)?|${PCHAR}+(?:/${PCHAR}*)*)?${TAIL}`,
};
const ANY_STRING = intersect([{ t: 'rep', x: { t: 'set', ranges: [], neg: true }, min: 0, max: Infinity }])!; // one state: every code point but a surrogate
const NUMBER_BOUNDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'] as const;

/** A schema the compiler cannot honour; `keyword` names the offending keyword, `path` where it is (JSON pointer). */
export class SchemaError extends Error {
  constructor(readonly keyword: string, readonly path: string, message: string) { super(message); }
}

const enc = new TextEncoder();

interface Doc { readonly schema: unknown; readonly refs: Map<string, Extract<Node, { t: 'ref' }>> }

export class SchemaCompiler {
  private nextId = 0;
  private doc: Doc | null = null; // the schema '#' refers to, while one is compiled
  private node<T extends Omit<Node, 'id'>>(n: T): T & { id: number } { return { ...n, id: this.nextId++ }; }

  /** Any JSON object (the json_object response format), or one whose every value is a `values`. */
  anyObject(values?: Node): Node { return this.node({ t: 'anyObject' as const, ...(values ? { values } : {}) }); }

  /** Alternatives of literal JSON texts (guided_choice-style enums). */
  literals(values: readonly unknown[]): Node {
    return this.node({ t: 'literal' as const, texts: values.map((v) => enc.encode(JSON.stringify(v))) });
  }

  /** One or more items separated by `sep` (at most `max`). */
  calls(item: Node, sep: string, max: number): Node {
    return this.node({ t: 'calls' as const, item, sep: enc.encode(sep), max });
  }

  /** A Llama 3.1 JSON call {"name": …, "parameters": …}; the parameters are a document of their own ('#' is their root). */
  call(name: string, parameters: unknown): Node {
    const prop = (n: string, node: Node): Prop => ({ name: n, key: enc.encode(n), node, required: true });
    return this.node({ t: 'object' as const, props: [prop('name', this.literals([name])), prop('parameters', this.document(parameters, '#'))] });
  }

  /** Compile `schema` as the document its $refs point into; refs that could never let a value end are refused. */
  document(schema: unknown, path = '#'): Node {
    const prev = this.doc;
    this.doc = { schema, refs: new Map() };
    try {
      const root = this.compile(schema, path);
      checkRefs(root, [...this.doc.refs.values()]);
      return root;
    } finally { this.doc = prev; }
  }

  compile(schema: unknown, path = '#'): Node {
    if (this.doc === null) return this.document(schema, path);
    if (schema === true || (isObj(schema) && Object.keys(schema).every((k) => ANNOTATIONS.has(k)))) return this.node({ t: 'any' as const });
    if (!isObj(schema)) throw new SchemaError('schema', path, `schema at ${path} must be an object or true, got ${JSON.stringify(schema)}`);
    for (const k of Object.keys(schema)) {
      if (!ANNOTATIONS.has(k) && !(SUPPORTED_KEYWORDS as readonly string[]).includes(k)) {
        throw new SchemaError(k, path, `JSON Schema keyword '${k}' at ${path} is not supported for constrained decoding (supported: ${SUPPORTED_KEYWORDS.join(', ')})`);
      }
    }
    if ('const' in schema || 'enum' in schema) {
      const kw = 'const' in schema ? 'const' : 'enum';
      if (kw === 'enum' && (!Array.isArray(schema.enum) || schema.enum.length === 0)) throw new SchemaError('enum', path, `'enum' at ${path} must be a non-empty array`);
      const values: unknown[] = kw === 'const' ? [schema.const] : schema.enum;
      // keywords beside them (type, another enum, …) keep only the values they allow
      const { [kw]: _, ...rest } = schema;
      if (Object.keys(rest).some((k) => !ANNOTATIONS.has(k))) {
        const g = new JsonGrammar(this.compile(rest, path));
        let kept: unknown[];
        try { kept = values.filter((v) => admits(g, JSON.stringify(v))); } catch {
          throw new SchemaError(kw, path, `'${kw}' at ${path} beside a '$ref' that recurses into this schema is not supported`);
        }
        if (kept.length === 0) throw new SchemaError(kw, path, `no value of '${kw}' at ${path} satisfies the keywords beside it (${Object.keys(rest).filter((k) => !ANNOTATIONS.has(k)).join(', ')})`);
        return this.literals(kept);
      }
      return this.literals(values);
    }
    if (schema.$ref !== undefined) {
      const beside = Object.keys(schema).find((k) => k !== '$ref' && !ANNOTATIONS.has(k));
      if (beside !== undefined) throw new SchemaError(beside, path, `'${beside}' beside '$ref' at ${path} is not supported; put it in the schema the '$ref' points to`);
      return this.ref(schema.$ref, path);
    }
    if (schema.allOf !== undefined) {
      // pydantic writes {"allOf": [{"$ref": …}], "description": …}: one schema is that schema
      if (!Array.isArray(schema.allOf) || schema.allOf.length !== 1) throw new SchemaError('allOf', path, `'allOf' at ${path} is supported with exactly one schema, got ${Array.isArray(schema.allOf) ? schema.allOf.length : JSON.stringify(schema.allOf)}`);
      const beside = Object.keys(schema).find((k) => k !== 'allOf' && !ANNOTATIONS.has(k));
      if (beside !== undefined) throw new SchemaError(beside, path, `'${beside}' beside 'allOf' at ${path} is not supported; put it inside the 'allOf' schema`);
      return this.compile(schema.allOf[0], `${path}/allOf/0`);
    }
    const alts = schema.anyOf ?? schema.oneOf;
    if (alts !== undefined) {
      const kw = schema.anyOf !== undefined ? 'anyOf' : 'oneOf';
      if (!Array.isArray(alts) || alts.length === 0) throw new SchemaError(kw, path, `'${kw}' at ${path} must be a non-empty array of schemas`);
      // keywords beside the alternatives would have to hold in each of them: refused rather than left unenforced
      const beside = Object.keys(schema).find((k) => k !== kw && !ANNOTATIONS.has(k));
      if (beside !== undefined) throw new SchemaError(beside, path, `'${beside}' beside '${kw}' at ${path} is not supported; put it inside each alternative`);
      // oneOf is decoded as anyOf: alternatives that overlap would need exclusion, which the grammar does not do
      return this.node({ t: 'anyOf' as const, nodes: alts.map((s, i) => this.compile(s, `${path}/${kw}/${i}`)) });
    }
    // no type: the one its keywords apply to (properties → object, …), so that they hold
    const type = schema.type ?? impliedType(schema);
    if (Array.isArray(type)) {
      if (type.length === 0) throw new SchemaError('type', path, `'type' at ${path} is an empty list: no value could match`);
      return this.node({ t: 'anyOf' as const, nodes: type.map((ty) => this.compile({ ...schema, type: ty }, path)) });
    }
    switch (type) {
      case undefined: return this.node({ t: 'any' as const });
      case 'string': {
        const min = count(schema.minLength, 'minLength', path, 0);
        const max = count(schema.maxLength, 'maxLength', path, Infinity);
        if (min > max) throw new SchemaError('minLength', path, `minLength ${min} > maxLength ${max} at ${path}`);
        if (schema.pattern === undefined && schema.format === undefined && min === 0 && max === Infinity) return this.node({ t: 'string' as const, min, max });
        return this.node({ t: 'string' as const, ...stringDfa(schema, path, min, max) });
      }
      case 'number': case 'integer': {
        const dfa = numberDfa(type, schema, path);
        return this.node({ t: type, ...(dfa ? { dfa } : {}) });
      }
      case 'boolean': return this.literals([true, false]);
      case 'null': return this.literals([null]);
      case 'array': {
        const min = count(schema.minItems, 'minItems', path, 0);
        const max = count(schema.maxItems, 'maxItems', path, Infinity);
        if (min > max) throw new SchemaError('minItems', path, `minItems ${min} > maxItems ${max} at ${path}`);
        if (Array.isArray(schema.items)) throw new SchemaError('items', path, `tuple 'items' (an array) at ${path} is not supported; give one schema`);
        const items = schema.items === undefined ? this.node({ t: 'any' as const }) : this.compile(schema.items, `${path}/items`);
        return this.node({ t: 'array' as const, items, min, max });
      }
      case 'object': {
        const props = schema.properties;
        if (props === undefined) {
          const req = schema.required;
          if (Array.isArray(req) && req.length > 0) throw new SchemaError('required', path, `'required' at ${path} names '${req[0]}', which has no schema in 'properties'`);
          const ap = schema.additionalProperties;
          if (ap === false) return this.literals([{}]);
          // every value is an additionalProperties schema (a map)
          return isObj(ap) ? this.anyObject(this.compile(ap, `${path}/additionalProperties`)) : this.anyObject();
        }
        if (!isObj(props)) throw new SchemaError('properties', path, `'properties' at ${path} must be an object`);
        const req = schema.required ?? [];
        if (!Array.isArray(req) || !req.every((r) => typeof r === 'string')) throw new SchemaError('required', path, `'required' at ${path} must be an array of strings`);
        for (const r of req) if (!(r in props)) throw new SchemaError('required', path, `required property '${r}' at ${path} is not in 'properties'`);
        const ap = schema.additionalProperties;
        if (ap !== undefined && typeof ap !== 'boolean' && !isObj(ap)) throw new SchemaError('additionalProperties', path, `'additionalProperties' at ${path} must be a boolean or a schema`);
        // extra properties are never generated: the output validates whether or not the schema allows them
        return this.node({
          t: 'object' as const,
          props: Object.entries(props).map(([name, s]) => ({
            name, key: enc.encode(JSON.stringify(name).slice(1, -1)), node: this.compile(s, `${path}/properties/${escapePointer(name)}`), required: req.includes(name),
          })),
        });
      }
      default:
        throw new SchemaError('type', path, `'type' ${JSON.stringify(type)} at ${path} is not one of string, number, integer, boolean, null, array, object`);
    }
  }

  /** The node a `$ref` names (a JSON pointer inside the document), compiled once per document; recursion refers back to it. */
  private ref(ref: unknown, path: string): Node {
    if (typeof ref !== 'string') throw new SchemaError('$ref', path, `'$ref' at ${path} must be a string, got ${JSON.stringify(ref)}`);
    const doc = this.doc!;
    const known = doc.refs.get(ref);
    if (known) return known;
    if (ref !== '#' && !ref.startsWith('#/')) {
      throw new SchemaError('$ref', path, `'$ref' ${JSON.stringify(ref)} at ${path} is not supported: only references inside the schema are ('#', '#/$defs/…', '#/definitions/…')`);
    }
    let target: unknown = doc.schema;
    let tokens: string[];
    try { tokens = ref === '#' ? [] : ref.slice(2).split('/').map((t) => decodeURIComponent(t).replace(/~1/g, '/').replace(/~0/g, '~')); } catch {
      throw new SchemaError('$ref', path, `'$ref' ${JSON.stringify(ref)} at ${path} is not a valid JSON pointer (bad %-escape)`);
    }
    for (const t of tokens) {
      target = target !== null && typeof target === 'object' && Object.prototype.hasOwnProperty.call(target, t) ? (target as Record<string, unknown>)[t] : undefined;
      if (target === undefined) throw new SchemaError('$ref', path, `'$ref' ${JSON.stringify(ref)} at ${path} points to nothing: the schema has no '${t}' there`);
    }
    const node: Extract<Node, { t: 'ref' }> = { t: 'ref', id: this.nextId++, ref, path, to: null };
    doc.refs.set(ref, node);
    node.to = this.compile(target, ref === '#' ? '#' : `#/${tokens.map(escapePointer).join('/')}`);
    return node;
  }
}

/** Refs must let a value begin (no ref is its own first alternative) and end (no required recursion without a way out). */
function checkRefs(root: Node, refs: readonly Extract<Node, { t: 'ref' }>[]): void {
  for (const r of refs) {
    // what a value of r may begin with, through refs and alternatives: r again means no byte ever decides
    const seen = new Set<Node>();
    const stack: Node[] = [r.to!];
    while (stack.length > 0) {
      const n = stack.pop()!;
      if (n === r) throw new SchemaError('$ref', r.path, `'$ref' ${JSON.stringify(r.ref)} at ${r.path} refers back to itself before any value begins: no output could be generated`);
      if (seen.has(n)) continue;
      seen.add(n);
      if (n.t === 'ref') stack.push(n.to!);
      else if (n.t === 'anyOf') stack.push(...n.nodes);
    }
  }
  if (refs.length === 0) return;
  // finite values, to a fixpoint: a node has one when its required parts do
  const all: Node[] = [];
  const seen = new Set<Node>();
  const walk = (n: Node): void => {
    if (seen.has(n)) return;
    seen.add(n);
    all.push(n);
    switch (n.t) {
      case 'object': for (const p of n.props) walk(p.node); break;
      case 'array': walk(n.items); break;
      case 'anyObject': if (n.values) walk(n.values); break;
      case 'anyOf': for (const x of n.nodes) walk(x); break;
      case 'ref': walk(n.to!); break;
      case 'calls': walk(n.item); break;
      default: break;
    }
  };
  walk(root);
  const finite = new Set<Node>();
  for (let changed = true; changed;) {
    changed = false;
    for (const n of all) {
      if (finite.has(n)) continue;
      const ok = n.t === 'object' ? n.props.every((p) => !p.required || finite.has(p.node))
        : n.t === 'array' ? n.min === 0 || finite.has(n.items)
          : n.t === 'anyOf' ? n.nodes.some((x) => finite.has(x))
            : n.t === 'ref' ? finite.has(n.to!)
              : n.t === 'calls' ? finite.has(n.item) : true;
      if (ok) { finite.add(n); changed = true; }
    }
  }
  const stuck = refs.find((r) => seen.has(r) && !finite.has(r));
  if (stuck) throw new SchemaError('$ref', stuck.path, `'$ref' ${JSON.stringify(stuck.ref)} at ${stuck.path} recurses without a way out: each of its values must contain another (make the recursion optional, nullable or allow an empty array)`);
}

/** A string's pattern and format as one automaton over its code points, and the lengths to count beside it. */
function stringDfa(schema: Record<string, unknown>, path: string, min: number, max: number): { dfa: Dfa; min: number; max: number; lens?: ContinuationLengths } {
  const asts: Ast[] = [];
  const kws: string[] = [];
  if (schema.pattern !== undefined) {
    const p = schema.pattern;
    if (typeof p !== 'string') throw new SchemaError('pattern', path, `'pattern' at ${path} must be a string, got ${JSON.stringify(p)}`);
    try { asts.push(searchRegex(p)); } catch (e) {
      if (e instanceof RegexError) throw new SchemaError('pattern', path, `'pattern' at ${path} cannot be enforced: ${e.message}`);
      throw e;
    }
    kws.push('pattern');
  }
  if (schema.format !== undefined) {
    const f = schema.format;
    if (typeof f !== 'string' || !Object.prototype.hasOwnProperty.call(FORMATS, f)) {
      throw new SchemaError('format', path, `'format' ${JSON.stringify(f)} at ${path} is not supported for constrained decoding (supported: ${Object.keys(FORMATS).join(', ')})`);
    }
    asts.push(parseRegex(FORMATS[f]!, true));
    kws.push('format');
  }
  let dfa: Dfa | null = ANY_STRING;
  if (asts.length > 0) {
    try { dfa = intersect(asts); } catch (e) {
      if (e instanceof RegexError) throw new SchemaError(kws[0]!, path, `'${kws.join("' with '")}' at ${path} cannot be enforced: ${e.message}`);
      throw e;
    }
    if (dfa === null) throw new SchemaError(kws[0]!, path, `no string satisfies ${kws.map((k) => `'${k}'`).join(' and ')} at ${path}${kws.length > 1 ? ' together' : ''}`);
  }
  const len = dfa.lengths();
  if (len.min >= min && len.max <= max) return { dfa, min: 0, max: Infinity }; // every string it takes has a length in bounds
  const kw = max < Infinity ? 'maxLength' : 'minLength';
  let lens: ContinuationLengths;
  try { lens = ContinuationLengths.of(dfa, max); } catch (e) {
    if (e instanceof RegexError) throw new SchemaError(kw, path, `'${kws.join("' with '")}' with '${kw}' at ${path} cannot be enforced: ${e.message}`);
    throw e;
  }
  if (!lens.live(dfa.start, 0, min, max)) {
    const which = lens.shortest[dfa.start]! < 0 ? 'maxLength' : 'minLength'; // none as short as maxLength, or none as long as minLength
    throw new SchemaError(which, path, `no string satisfies ${[...kws, ...(min > 0 ? ['minLength'] : []), ...(max < Infinity ? ['maxLength'] : [])].map((k) => `'${k}'`).join(' and ')} at ${path} together`);
  }
  return { dfa, min, max, lens };
}

/** Bounds and multipleOf as an automaton over the number's JSON text (undefined: neither). */
function numberDfa(type: 'number' | 'integer', schema: Record<string, unknown>, path: string): Dfa | undefined {
  const v: Partial<Record<(typeof NUMBER_BOUNDS)[number], number>> = {};
  for (const kw of NUMBER_BOUNDS) {
    const x = schema[kw];
    if (x === undefined) continue;
    if (typeof x !== 'number' || !Number.isFinite(x)) {
      throw new SchemaError(kw, path, `'${kw}' at ${path} must be a number, got ${JSON.stringify(x)}${typeof x === 'boolean' ? " (draft-4's boolean form is not supported: give the bound, e.g. \"exclusiveMinimum\": 0)" : ''}`);
    }
    v[kw] = x;
  }
  const m = schema.multipleOf;
  if (m !== undefined && (typeof m !== 'number' || !Number.isFinite(m) || m <= 0)) {
    throw new SchemaError('multipleOf', path, `'multipleOf' at ${path} must be a number greater than 0, got ${JSON.stringify(m)}`);
  }
  if (Object.keys(v).length === 0 && m === undefined) return undefined;
  // the tighter of the inclusive and the exclusive bound on each side
  const side = (incl: number | undefined, excl: number | undefined, lower: boolean): { x: number; incl: boolean } | null => {
    if (incl === undefined && excl === undefined) return null;
    if (incl === undefined) return { x: excl!, incl: false };
    if (excl === undefined) return { x: incl, incl: true };
    return (lower ? excl >= incl : excl <= incl) ? { x: excl, incl: false } : { x: incl, incl: true };
  };
  const lo = side(v.minimum, v.exclusiveMinimum, true);
  const hi = side(v.maximum, v.exclusiveMaximum, false);
  const what = [...(lo ? [`${lo.incl ? '≥' : '>'} ${lo.x}`] : []), ...(hi ? [`${hi.incl ? '≤' : '<'} ${hi.x}`] : []), ...(m !== undefined ? [`a multiple of ${m}`] : [])].join(' and ');
  const kw = lo && hi ? (hi.incl ? 'maximum' : 'exclusiveMaximum') : lo ? (lo.incl ? 'minimum' : 'exclusiveMinimum') : hi ? (hi.incl ? 'maximum' : 'exclusiveMaximum') : 'multipleOf';
  // the bounds (the widest the grammar reads exactly where none is given) as a regex: its shape is what is written
  let re: string;
  if (type === 'integer') {
    const clamp = (n: bigint): bigint => (n > MAX_SAFE ? MAX_SAFE + 1n : n < -MAX_SAFE ? -MAX_SAFE - 1n : n);
    const a = lo === null ? -MAX_SAFE : clamp(BigInt(lo.incl ? Math.ceil(lo.x) : Math.floor(lo.x) + 1));
    const b = hi === null ? MAX_SAFE : clamp(BigInt(hi.incl ? Math.floor(hi.x) : Math.ceil(hi.x) - 1));
    re = integerRegex(a < -MAX_SAFE ? -MAX_SAFE : a, b > MAX_SAFE ? MAX_SAFE : b);
    if (re === '') throw new SchemaError(kw, path, `no integer is ${what} at ${path} (within ±(2^53-1), the integers JSON parsers read exactly)`);
  } else {
    const cap = 10n ** BigInt(NUMBER_DIGITS) - 1n;
    const bound = (s: { x: number; incl: boolean } | null, lower: boolean): Bound => {
      const far: Bound = { neg: lower, dec: { int: cap, frac: '' }, incl: true };
      if (s === null) return far;
      const d = toDec(s.x);
      return d.neg === lower && d.dec.int > cap ? far : { ...d, incl: s.incl };
    };
    re = numberRegex(bound(lo, true), bound(hi, false));
    if (re === '') throw new SchemaError(kw, path, `no number is ${what} at ${path} (written without exponent, at most ${NUMBER_DIGITS} digits)`);
  }
  let dfa = intersect([parseRegex(re)]);
  if (dfa === null) throw new SchemaError(kw, path, `no ${type} is ${what} at ${path}`);
  if (m === undefined) return dfa;
  // multipleOf: the bounds' automaton and the multiples' (digits read mod a, m = a·10^-s), each minimal, then their product.
  // The limit a user meets is MAX_DFA_STATES on the minimized product; the larger caps of the parts only bound the work
  // before minimizing, so every refusal names MAX_DFA_STATES.
  try {
    dfa = intersectDfas(minimize(dfa), multipleDfa(m, 8 * MAX_DFA_STATES), 2 * MAX_DFA_STATES);
    if (dfa !== null) dfa = minimize(dfa);
    if (dfa !== null && dfa.size > MAX_DFA_STATES) throw new RegexError('too complex');
  } catch (e) {
    if (!(e instanceof RegexError)) throw e;
    const { dec } = toDec(m);
    throw new SchemaError('multipleOf', path, `'multipleOf' ${m} at ${path} cannot be enforced${lo || hi ? ' with its bounds' : ''}: too complex: more than ${MAX_DFA_STATES} automaton states (a multiple's digits are read mod ${BigInt(`${dec.int}${dec.frac}`.replace(/(?<=\d)0+$/, ''))} at each digit place ${type === 'integer' ? 'an integer' : 'a number'} may have); a step of fewer significant digits, or tighter bounds, fits`);
  }
  if (dfa === null) throw new SchemaError('multipleOf', path, `no ${type} is ${what} at ${path}${type === 'number' ? ` (written without exponent, at most ${NUMBER_DIGITS} digits)` : ''}`);
  return dfa;
}

/** Compile a JSON Schema (throws SchemaError naming the unsupported keyword). */
export function compileSchema(schema: unknown): Node {
  return new SchemaCompiler().compile(schema);
}

/** The types a schema without 'type' constrains by its keywords (undefined: none, any value). */
function impliedType(schema: Record<string, unknown>): string | string[] | undefined {
  const types = Object.entries(IMPLIED).filter(([, kws]) => kws.some((k) => k in schema)).map(([t]) => t);
  return types.length === 0 ? undefined : types.length === 1 ? types[0] : types;
}
const IMPLIED: Record<string, readonly string[]> = {
  object: ['properties', 'required', 'additionalProperties'],
  array: ['items', 'minItems', 'maxItems'],
  string: ['minLength', 'maxLength', 'pattern', 'format'],
  number: [...NUMBER_BOUNDS, 'multipleOf'],
};

/** Whether a grammar takes `text` whole. */
function admits(g: JsonGrammar, text: string): boolean {
  let s: ReturnType<JsonGrammar['step']> = g.start;
  for (const b of enc.encode(text)) { s = g.step(s!, b); if (s === null) return false; }
  return g.accepts(s!);
}

function count(v: unknown, kw: string, path: string, def: number): number {
  if (v === undefined) return def;
  if (!Number.isInteger(v) || (v as number) < 0) throw new SchemaError(kw, path, `'${kw}' at ${path} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v as number;
}

function isObj(v: unknown): v is Record<string, any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function escapePointer(s: string): string { return s.replace(/~/g, '~0').replace(/\//g, '~1'); }
