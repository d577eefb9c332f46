// Tokenizer: HF tokenizer.json (+ tokenizer_config.json) behind a small typed API, backed by @huggingface/tokenizers.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Tokenizer as HFTokenizer } from "@huggingface/tokenizers";
import { showJson } from "./json-show.js";

/** tokenizer.json as parsed JSON; validated only as far as we read it. */
export type TokenizerJson = Record<string, unknown> & { model: Record<string, unknown>; added_tokens?: AddedTokenJson[] };
/** tokenizer_config.json as parsed JSON. */
export type TokenizerConfigJson = Record<string, unknown>;

export interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
  single_word?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  normalized?: boolean;
}

export interface EncodeOptions {
  /** Add the post-processor's special tokens (BOS for Llama), as HF does. Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (BOS, EOT, headers) from the text. Default false. */
  skipSpecialTokens?: boolean;
  /** Apply HF's legacy " ," -> "," cleanup. Default false: decode(encode(s)) == s. */
  cleanUpSpaces?: boolean;
}

export interface TokenizerOptions {
  /** Extra end-of-sequence ids (generation_config.json eos_token_id). */
  extraEosIds?: readonly number[];
  /** The tokenizer_config.json path its errors name (default "tokenizer_config.json"). */
  configFile?: string;
}

/** A special-token field in tokenizer_config.json is a string or an AddedToken-like object. */
function tokenContent(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v !== null && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return null;
}

const MODEL_TYPES = ["BPE", "WordPiece", "Unigram", "WordLevel"];
const COMPONENTS = ["normalizer", "pre_tokenizer", "post_processor", "decoder"] as const;
const ADDED_TOKEN_FLAGS = ["special", "single_word", "lstrip", "rstrip", "normalized"] as const;

function bad(msg: string): never {
  throw new Error(`tokenizer.json: ${msg}`);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The fields the tokenizers library reads without checking (model, its vocab and merges, added_tokens, each
 * component's type): a malformed one fails here naming the field, expected vs got, not as a TypeError from inside it.
 */
export function checkTokenizerJson(j: Record<string, unknown>): void {
  const m = j.model as Record<string, unknown>;
  if (!isObject(m)) bad(`"model" must be an object, got ${showJson(m, 40)}`);
  const type = m.type ?? (Array.isArray(m.vocab) ? "Unigram" : undefined);
  if (type !== undefined && !MODEL_TYPES.includes(type as string)) bad(`model.type ${showJson(type, 40)} is not supported (${MODEL_TYPES.join(", ")})`);
  if (type === "Unigram") {
    if (!Array.isArray(m.vocab)) bad(`model.vocab of a Unigram model must be a list of [piece, score] pairs, got ${showJson(m.vocab, 40)}`);
    m.vocab.forEach((e, i) => {
      if (!Array.isArray(e) || typeof e[0] !== "string" || typeof e[1] !== "number") bad(`model.vocab[${i}] must be a [piece, score] pair, got ${showJson(e, 40)}`);
    });
  } else {
    if (!isObject(m.vocab)) bad(`model.vocab must be an object of token -> id, got ${showJson(m.vocab, 40)}`);
    for (const [k, id] of Object.entries(m.vocab)) {
      if (!Number.isSafeInteger(id) || (id as number) < 0) bad(`model.vocab[${showJson(k, 40)}] must be a non-negative integer id, got ${showJson(id, 40)}`);
    }
  }
  if (type === "BPE" || m.merges !== undefined) {
    if (!Array.isArray(m.merges)) bad(`model.merges must be a list of "left right" strings or [left, right] pairs, got ${showJson(m.merges, 40)}`);
    m.merges.forEach((e, i) => {
      const ok = typeof e === "string" ? e.indexOf(" ") > 0 : Array.isArray(e) && e.length === 2 && typeof e[0] === "string" && typeof e[1] === "string";
      if (!ok) bad(`model.merges[${i}] must be a "left right" string or a [left, right] pair, got ${showJson(e, 40)}`);
    });
  }
  for (const k of ["unk_token", "continuing_subword_prefix", "end_of_word_suffix"]) {
    if (m[k] !== undefined && m[k] !== null && typeof m[k] !== "string") bad(`model.${k} must be a string or null, got ${showJson(m[k], 40)}`);
  }
  if (j.added_tokens !== undefined && j.added_tokens !== null) {
    if (!Array.isArray(j.added_tokens)) bad(`"added_tokens" must be a list, got ${showJson(j.added_tokens, 40)}`);
    j.added_tokens.forEach((t: unknown, i: number) => {
      if (!isObject(t) || !Number.isSafeInteger(t.id) || (t.id as number) < 0 || typeof t.content !== "string") {
        bad(`added_tokens[${i}] must be an object with a non-negative integer "id" and a string "content", got ${showJson(t, 60)}`);
      }
      if (t.content === "") bad(`added_tokens[${i}] (id ${t.id}) has an empty "content": no text can ever match it`);
      // the library reads these as truthy / falsy: "false" made a token special; the tokenizers (Rust) library refuses them
      for (const k of ADDED_TOKEN_FLAGS) {
        if (t[k] !== undefined && typeof t[k] !== "boolean") bad(`added_tokens[${i}] (id ${t.id}) "${k}" must be true or false, got ${showJson(t[k], 40)}`);
      }
    });
  }
  for (const k of COMPONENTS) {
    const c = j[k];
    if (c !== undefined && c !== null && (!isObject(c) || typeof c.type !== "string")) bad(`"${k}" must be null or an object with a string "type", got ${showJson(c, 40)}`);
    if (isObject(c)) checkPatterns(c, k);
  }
}

/**
 * Every Split / Replace step's "pattern" is {"Regex": string} or {"String": string}, as the tokenizers (Rust) library
 * requires: the JS library warned on another value and ran the step as a no-op, so the text tokenized differently.
 */
function checkPatterns(c: Record<string, unknown>, where: string, depth = 0): void {
  if (depth > 8) return; // the library's own recursion reports deeper nesting
  if (c.type === "Split" || c.type === "Replace") {
    const p = c.pattern;
    const ok = isObject(p) && Object.keys(p).length === 1 && (typeof p.Regex === "string" || typeof p.String === "string");
    if (!ok) bad(`${where} (type ${c.type}) "pattern" must be {"Regex": string} or {"String": string}, got ${showJson(p, 40)}`);
  }
  for (const k of ["normalizers", "pretokenizers", "decoders", "processors"]) {
    const list = c[k];
    if (Array.isArray(list)) list.forEach((x, i) => { if (isObject(x)) checkPatterns(x, `${where}.${k}[${i}]`, depth + 1); });
  }
}

/**
 * tokenizer_config.json's special-token fields: a malformed one fails naming the file and the field, not as the
 * tokenizers library's TypeError (which loadTokenizer blamed on tokenizer.json) or a value silently ignored.
 */
function checkTokenizerConfig(cfg: TokenizerConfigJson, file: string): void {
  // read by floe, which ignored a value of another type (no BOS added, no EOS id) where transformers refuses it
  for (const k of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
    const v = cfg[k];
    if (v !== undefined && v !== null && tokenContent(v) === null) throw new Error(`${file}: "${k}" must be a string, an object with a string "content", or null, got ${showJson(v, 40)}`);
  }
  for (const k of ["add_bos_token", "add_eos_token"]) {
    const v = cfg[k];
    if (v !== undefined && v !== null && typeof v !== "boolean") throw new Error(`${file}: "${k}" must be true or false, got ${showJson(v, 40)}`);
  }
  const extra = cfg.additional_special_tokens;
  if (extra !== undefined && extra !== null) {
    if (!Array.isArray(extra)) throw new Error(`${file}: "additional_special_tokens" must be a list of tokens, got ${showJson(extra, 40)}`);
    extra.forEach((t, i) => {
      if (tokenContent(t) === null) throw new Error(`${file}: additional_special_tokens[${i}] must be a string or an object with a string "content", got ${showJson(t, 40)}`);
    });
  }
}

/** The library's tokenizer, probed once; a failure inside the library names the component that causes it. */
function buildHf(json: TokenizerJson, cfg: TokenizerConfigJson): HFTokenizer {
  const attempt = (j: TokenizerJson) => {
    const hf = new HFTokenizer(j, cfg);
    hf.encode("a", { add_special_tokens: true });
    return hf;
  };
  try {
    return attempt(json);
  } catch (e) {
    // the first component without which it builds (a value nested too deeply overflows the library's recursion too)
    let which = "";
    for (const k of COMPONENTS) {
      if (json[k] === undefined || json[k] === null) continue;
      try {
        attempt({ ...json, [k]: null });
        which = `"${k}" (type ${showJson((json[k] as { type?: unknown }).type, 40)}) is malformed or not supported; `;
        break;
      } catch { /* not this one alone */ }
    }
    const said = String((e as Error)?.message ?? e);
    bad(`${which}the tokenizers library cannot build it; the tokenizers library says: ${said.length > 300 ? `${said.slice(0, 300)}...` : said}`);
  }
}

export class Tokenizer {
  /** Number of ids: base vocab plus added tokens (max id + 1). */
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly bosToken: string | null;
  /** Ids that end generation: config eos_token first, then extras (deduplicated). */
  readonly eosIds: readonly number[];
  readonly eosToken: string | null;
  readonly specialTokens: ReadonlySet<string>;
  readonly specialIds: ReadonlySet<number>;
  readonly config: Readonly<TokenizerConfigJson>;
  private readonly hf: HFTokenizer;
  private readonly json: TokenizerJson & { added_tokens: AddedTokenJson[] };
  private plainHf: HFTokenizer | null = null; // the same tokenizer with no special added tokens (encodePlain), made on first use
  // Special ids the encoder wraps around one sequence: prefix ++ core ++ suffix.
  private readonly prefix: readonly number[];
  private readonly suffix: readonly number[];

  constructor(tokenizerJson: TokenizerJson, config: TokenizerConfigJson | null = null, opts: TokenizerOptions = {}) {
    if (tokenizerJson === null || typeof tokenizerJson !== "object" || typeof tokenizerJson.model !== "object") {
      throw new Error("tokenizer.json: expected an object with a 'model' field");
    }
    checkTokenizerJson(tokenizerJson);
    const cfg: TokenizerConfigJson = { ...(config ?? {}) };
    checkTokenizerConfig(cfg, opts.configFile ?? "tokenizer_config.json");
    this.config = cfg;
    // The library reads added_tokens unconditionally.
    const json = { ...tokenizerJson, added_tokens: tokenizerJson.added_tokens ?? [] };
    this.hf = buildHf(json, cfg);
    this.json = json;

    const specialTokens = new Set<string>();
    const specialIds = new Set<number>();
    for (const t of json.added_tokens) {
      if (t.special) {
        specialTokens.add(t.content);
        specialIds.add(t.id);
      }
    }
    const vocab = this.hf.get_vocab(true);
    let maxId = -1;
    for (const id of vocab.values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;

    this.bosToken = tokenContent(cfg.bos_token);
    this.eosToken = tokenContent(cfg.eos_token);
    // one the vocabulary lacks was ignored: no BOS added, no EOS id, while a chat template wrote it into prompts as text
    for (const [k, tok] of [["bos_token", this.bosToken], ["eos_token", this.eosToken]] as const) {
      if (tok !== null && this.hf.token_to_id(tok) === undefined) {
        throw new Error(`${opts.configFile ?? "tokenizer_config.json"}: ${k} ${showJson(tok, 40)} is not a token of tokenizer.json (neither in model.vocab nor in added_tokens)`);
      }
    }
    this.bosId = this.bosToken === null ? null : (this.hf.token_to_id(this.bosToken) ?? null);
    const eos: number[] = [];
    const eosId = this.eosToken === null ? undefined : this.hf.token_to_id(this.eosToken);
    if (eosId !== undefined) eos.push(eosId);
    for (const id of opts.extraEosIds ?? []) if (!eos.includes(id)) eos.push(id);
    this.eosIds = eos;
    for (const id of eos) {
      const tok = this.hf.id_to_token(id);
      if (tok !== undefined && specialIds.has(id)) specialTokens.add(tok);
    }
    this.specialTokens = specialTokens;
    this.specialIds = specialIds;

    // Probe the post-processor once: its special tokens do not depend on the text.
    const probe = "a";
    const core: number[] = this.hf.encode(probe, { add_special_tokens: false }).ids;
    const full: number[] = this.hf.encode(probe, { add_special_tokens: true }).ids;
    let at = -1;
    for (let i = 0; i + core.length <= full.length && at < 0; i++) {
      if (core.every((v, j) => full[i + j] === v)) at = i;
    }
    if (at < 0) throw new Error(`tokenizer.json: post-processor output ${JSON.stringify(full)} does not contain the text ids ${JSON.stringify(core)}`);
    let prefix = full.slice(0, at);
    let suffix = full.slice(at + core.length);
    // tokenizer_config add_bos_token / add_eos_token override the template (as LlamaTokenizerFast does).
    if (this.bosId !== null && typeof cfg.add_bos_token === "boolean") {
      const b = this.bosId;
      prefix = prefix.filter((id) => id !== b);
      if (cfg.add_bos_token) prefix = [b, ...prefix];
    }
    if (eosId !== undefined && typeof cfg.add_eos_token === "boolean") {
      suffix = suffix.filter((id) => id !== eosId);
      if (cfg.add_eos_token) suffix = [...suffix, eosId];
    }
    // a post-processor special token the library cannot resolve came out as id undefined (or an id past the
    // vocabulary), prepended to every prompt; the prompt then failed far from here, naming no file
    for (const id of [...prefix, ...suffix]) {
      if (!Number.isSafeInteger(id) || this.hf.id_to_token(id) === undefined) {
        throw new Error(`tokenizer.json: post_processor adds id ${showJson(id, 40)} to every text, which is not a token (ids are 0..${this.vocabSize - 1}); check its special_tokens`);
      }
    }
    this.prefix = prefix;
    this.suffix = suffix;
  }

  /** Text -> ids. Special tokens written in the text (e.g. "<|eot_id|>") map to their ids, as in HF. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids: number[] = this.hf.encode(text, { add_special_tokens: false }).ids;
    if (opts.addSpecialTokens === false) return ids;
    if (this.prefix.length === 0 && this.suffix.length === 0) return ids;
    return [...this.prefix, ...ids, ...this.suffix];
  }

  /**
   * Text -> ids with special-token text read as plain text (HF's split_special_tokens): "<|eot_id|>" in the text
   * becomes the byte-level tokens of its characters, never the token itself. No BOS / EOS is added. For text that
   * must not open or close a turn (a conversation a guard judges).
   */
  encodePlain(text: string): number[] {
    if (this.specialTokens.size === 0) return this.encode(text, { addSpecialTokens: false });
    this.plainHf ??= buildHf({ ...this.json, added_tokens: this.json.added_tokens.filter((t) => !t.special) }, this.config);
    return this.plainHf.encode(text, { add_special_tokens: false }).ids;
  }

  /** Ids -> text. Throws on an id outside [0, vocabSize). */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const kept: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || this.hf.id_to_token(id) === undefined) {
        throw new Error(`decode: token id ${id} at position ${i} is not in the vocabulary (size ${this.vocabSize})`);
      }
      if (opts.skipSpecialTokens && this.specialIds.has(id)) continue;
      kept.push(id);
    }
    if (kept.length === 0) return "";
    return this.hf.decode(kept, { clean_up_tokenization_spaces: opts.cleanUpSpaces ?? false });
  }

  /** The vocabulary string of one id (byte-level form, e.g. "Ġworld"), or undefined. */
  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  /** The id of one vocabulary string, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  isEos(id: number): boolean {
    return this.eosIds.includes(id);
  }
}

/**
 * A JSON object file, or null when there is no such file (or it holds `null` and `nullOk`, as generation_config.json
 * may: hf-config.ts reads it so); anything else (bad JSON, a list, a number) throws naming the file.
 */
async function readJsonIfExists(path: string, nullOk = true): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new Error(`${path}: cannot read: ${(e as Error).message}`);
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: invalid JSON: ${(e as Error).message}`);
  }
  // `null` here once read as "no tokenizer.json": the model then served without its tokenizer
  if (j === null && nullOk) return null;
  if (!isObject(j)) throw new Error(`${path}: expected a JSON object, got ${showJson(j, 40)}`);
  return j;
}

/**
 * generation_config.json eos_token_id: an id or a list of ids (null: none). Anything else names the file: a string,
 * a fraction, a nested list or a null entry was dropped without a word, and generation ran on past that EOS.
 */
function eosFromGenerationConfig(gen: Record<string, unknown> | null, file: string): number[] {
  const v = gen?.eos_token_id;
  if (v === undefined || v === null) return [];
  const ids = Array.isArray(v) ? v : [v];
  for (const id of ids) {
    if (!Number.isSafeInteger(id) || (id as number) < 0) throw new Error(`${file}: "eos_token_id" must be a token id or a list of them, got ${showJson(v, 60)}`);
  }
  return ids as number[];
}

/**
 * Load tokenizer.json (+ tokenizer_config.json, generation_config.json) from an HF model dir, else a SentencePiece
 * tokenizer.model converted (spm-model.ts); null if there is neither.
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer | null> {
  const path = join(dir, "tokenizer.json");
  const json = await readJsonIfExists(path, false);
  if (json === null && !existsSync(join(dir, "tokenizer.model"))) return null;
  const configFile = join(dir, "tokenizer_config.json");
  const config = await readJsonIfExists(configFile);
  const genFile = join(dir, "generation_config.json");
  const gen = await readJsonIfExists(genFile);
  const extraEos = eosFromGenerationConfig(gen, genFile);
  let tok: Tokenizer;
  if (json === null) {
    // imported here: spm.ts extends Tokenizer, so a static import would be circular
    const { loadSpmTokenizer } = await import("./spm-model.js");
    tok = await loadSpmTokenizer(dir, config, extraEos);
  } else {
    try {
      tok = new Tokenizer(json as TokenizerJson, config, { extraEosIds: extraEos, configFile });
    } catch (e) {
      const msg = (e as Error).message;
      if (msg.startsWith(`${configFile}: `)) throw e; // names its file already
      throw new Error(`${path}: ${msg.replace(/^tokenizer\.json: /, "")}`);
    }
  }
  // an id the tokenizer lacks can never be generated as that token: the stop it asks for would silently never happen
  for (const id of extraEos) {
    if (tok.idToToken(id) === undefined) {
      throw new Error(`${genFile}: eos_token_id ${id} is not a token of ${json === null ? join(dir, "tokenizer.model") : path} (its ids: 0..${tok.vocabSize - 1})`);
    }
  }
  return tok;
}
