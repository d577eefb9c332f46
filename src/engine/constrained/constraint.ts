// Constraint specs (plain data, cross the worker boundary) → compiled grammars over a vocabulary, cached per spec.

import { JsonGrammar, type ByteGrammar } from './grammar.js';
import { SchemaCompiler, type Node } from './json-schema.js';
import { EitherGrammar, LazyGrammar } from './lazy.js';
import { choiceRegex, RegexGrammar } from './regex.js';
import { CompiledConstraint, TokenIndex, tokenBytes, type TokenVocab } from './token-mask.js';

/** A function tools-call grammar item: the Llama 3.1 JSON call format {"name": …, "parameters": {…}}. */
export interface ToolSpec { readonly name: string; readonly parameters: unknown }

export type ConstraintSpec =
  | { readonly kind: 'json_schema'; readonly schema: unknown }
  | { readonly kind: 'json_object' }
  | { readonly kind: 'regex'; readonly pattern: string }
  | { readonly kind: 'choice'; readonly choices: readonly string[] }
  | {
    readonly kind: 'tool_calls'; readonly tools: readonly ToolSpec[]; readonly parallel: boolean;
    // tool_choice auto with strict tools: 'free' text unless the output opens a call, or this text constraint
    // (response_format) unless it opens a call (as under 'free': '{' or <|python_tag|> past blanks); absent: the output
    // is calls (tool_choice required / named)
    readonly text?: 'free' | TextSpec;
  };
/** A constraint on text (not calls). */
export type TextSpec = Exclude<ConstraintSpec, { kind: 'tool_calls' }>;

/** Separator between parallel tool calls in the model's output (as vLLM's llama3_json parser reads them). */
export const TOOL_CALL_SEPARATOR = '; ';

/** The byte grammar of a spec; throws SchemaError / RegexError for what it cannot honour. */
export function compileGrammar(spec: ConstraintSpec): ByteGrammar {
  const sc = new SchemaCompiler();
  switch (spec.kind) {
    case 'json_schema': return new JsonGrammar(sc.compile(spec.schema)) as ByteGrammar;
    case 'json_object': return new JsonGrammar(sc.anyObject()) as ByteGrammar;
    case 'regex': return new RegexGrammar(spec.pattern) as ByteGrammar;
    case 'choice': return new RegexGrammar(choiceRegex(spec.choices)) as ByteGrammar;
    case 'tool_calls': {
      const calls: Node[] = spec.tools.map((t) => sc.call(t.name, t.parameters ?? { type: 'object' }));
      const item: Node = calls.length === 1 ? calls[0]! : { t: 'anyOf', id: -3, nodes: calls };
      const grammar = new JsonGrammar(spec.parallel ? sc.calls(item, TOOL_CALL_SEPARATOR, Infinity) : item) as ByteGrammar;
      if (spec.text === undefined) return grammar;
      return (spec.text === 'free' ? new LazyGrammar(grammar) : new EitherGrammar(compileGrammar(spec.text), new LazyGrammar(grammar, false))) as ByteGrammar;
    }
  }
}

const CACHE_LIMIT = 16; // compiled schemas kept (each with up to 16 MB of memoized masks)

/** Compiled constraints of one served vocabulary, LRU by spec. */
export class ConstraintCache {
  readonly table: (Uint8Array | null)[];
  readonly index: TokenIndex;
  readonly specials = new Map<number, string>(); // special tokens but EOS: their text (a lazy grammar's <|python_tag|>)
  private readonly cache = new Map<string, CompiledConstraint>();

  /** `table`: the vocabulary's token bytes when the caller has them already (else built here). */
  constructor(vocab: TokenVocab, modelVocabSize: number, readonly eosIds: readonly number[], table?: (Uint8Array | null)[]) {
    this.table = table ?? tokenBytes(vocab);
    this.index = new TokenIndex(this.table, modelVocabSize);
    for (let id = 0; id < Math.min(vocab.vocabSize, modelVocabSize); id++) {
      const text = vocab.isSpecial(id) && !eosIds.includes(id) ? vocab.idToToken(id) : undefined;
      if (text !== undefined) this.specials.set(id, text);
    }
  }

  get(spec: ConstraintSpec): CompiledConstraint {
    const key = JSON.stringify(spec);
    let c = this.cache.get(key);
    if (c) { this.cache.delete(key); this.cache.set(key, c); return c; }
    c = new CompiledConstraint(compileGrammar(spec), this.index, this.table, this.eosIds, this.specials);
    if (this.cache.size >= CACHE_LIMIT) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, c);
    return c;
  }
}
