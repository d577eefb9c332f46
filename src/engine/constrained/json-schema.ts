// JSON Schema → grammar nodes for constrained decoding: the supported keyword subset, anything else refused by name.

import { JsonGrammar } from './grammar.js';

/** A value the decoder may produce. Objects emit their properties in declared order; optional ones may be skipped. */
export type Node =
  | { readonly t: 'any'; readonly id: number } // any JSON value
  | { readonly t: 'anyObject'; readonly id: number; readonly values?: Node } // an object of any keys (json_object mode); values: every value's node (any if absent)
  | { readonly t: 'object'; readonly id: number; readonly props: readonly Prop[] }
  | { readonly t: 'array'; readonly id: number; readonly items: Node; readonly min: number; readonly max: number } // max: Infinity → unbounded
  | { readonly t: 'string'; readonly id: number; readonly min: number; readonly max: number } // length in code points (an escape is one)
  | { readonly t: 'number' | 'integer'; readonly id: number }
  | { readonly t: 'literal'; readonly id: number; readonly texts: readonly Uint8Array[] } // JSON texts (enum, const, boolean, null)
  | { readonly t: 'anyOf'; readonly id: number; readonly nodes: readonly Node[] }
  | { readonly t: 'calls'; readonly id: number; readonly item: Node; readonly sep: Uint8Array; readonly max: number }; // item (sep item)*: parallel tool calls

export interface Prop { readonly key: Uint8Array; readonly name: string; readonly node: Node; readonly required: boolean } // key: JSON-escaped UTF-8, no quotes

/** The schema keywords the compiler understands; annotations are accepted and ignored. */
export const SUPPORTED_KEYWORDS = [
  'type', 'properties', 'required', 'additionalProperties', 'items', 'enum', 'const', 'anyOf', 'oneOf', 'minItems', 'maxItems',
  'minLength', 'maxLength',
] as const;
const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'strict', 'deprecated', 'readOnly', 'writeOnly']);

/** A schema the compiler cannot honour; `keyword` names the offending keyword, `path` where it is (JSON pointer). */
export class SchemaError extends Error {
  constructor(readonly keyword: string, readonly path: string, message: string) { super(message); }
}

const enc = new TextEncoder();

export class SchemaCompiler {
  private nextId = 0;
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

  compile(schema: unknown, path = '#'): Node {
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
        const kept = values.filter((v) => admits(g, JSON.stringify(v)));
        if (kept.length === 0) throw new SchemaError(kw, path, `no value of '${kw}' at ${path} satisfies the keywords beside it (${Object.keys(rest).filter((k) => !ANNOTATIONS.has(k)).join(', ')})`);
        return this.literals(kept);
      }
      return this.literals(values);
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
        return this.node({ t: 'string' as const, min, max });
      }
      case 'number': return this.node({ t: 'number' as const });
      case 'integer': return this.node({ t: 'integer' as const });
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
  string: ['minLength', 'maxLength'],
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
