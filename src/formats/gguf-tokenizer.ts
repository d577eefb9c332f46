// GGUF tokenizer.ggml.* metadata -> HF tokenizer.json / tokenizer_config.json objects -> Tokenizer (byte-level BPE, SentencePiece).
import { Tokenizer, type TokenizerJson, type TokenizerConfigJson, type AddedTokenJson } from "./tokenizer.js";
import { SpmTokenizer, spmTokenizerJson, type SpmModel } from "./spm.js";
import { ggufMetadataFile } from "./gguf.js";
import { showJson } from "./json-show.js";

/** Llama 3 pre-tokenizer split: contractions, letter runs, digit groups of 1-3, punctuation, newlines, spaces. */
export const LLAMA3_SPLIT_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** GGUF token_type values (llama.cpp's llama_token_type). */
export const GgufTokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

const LLAMA3_PRE = new Set(["llama-bpe", "llama3", "llama-v3"]);
const GPT2_PRE = new Set(["default", "gpt2", "gpt-2"]);

export interface GgufTokenizerFiles {
  tokenizerJson: TokenizerJson;
  tokenizerConfig: TokenizerConfigJson;
  /** eos_token_id, then eot / eom ids when present. */
  eosIds: number[];
}

function fail(key: string, msg: string): never {
  throw new Error(`GGUF metadata ${key}: ${msg}`);
}

/** A corrupted (huge) string value cut short for a message. */
const clip = (s: string) => (s.length > 60 ? `${s.slice(0, 60)}... (${s.length} chars)` : s);

function arrayOf(meta: Map<string, unknown>, key: string): ArrayLike<unknown> {
  const v = meta.get(key);
  if (Array.isArray(v) || ArrayBuffer.isView(v)) return v as unknown as ArrayLike<unknown>;
  return fail(key, v === undefined ? "missing" : `expected an array, got ${typeof v}`);
}

function optInt(meta: Map<string, unknown>, key: string): number | undefined {
  const v = meta.get(key);
  if (v === undefined) return undefined;
  const n = typeof v === "bigint" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0) fail(key, `expected a non-negative integer, got ${showJson(v, 60)}`);
  return n;
}

function optBool(meta: Map<string, unknown>, key: string): boolean | undefined {
  const v = meta.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") fail(key, `expected a boolean, got ${typeof v}`);
  return v;
}

/** Build HF tokenizer files from GGUF metadata: byte-level BPE ("gpt2") or SentencePiece ("llama"). */
export function ggufToTokenizerJson(meta: Map<string, unknown>): GgufTokenizerFiles {
  const model = meta.get("tokenizer.ggml.model");
  if (model === "llama") return spmFiles(meta, true).files;
  if (model !== "gpt2") {
    fail("tokenizer.ggml.model", `'${clip(String(model))}' is not supported; expected 'gpt2' (byte-level BPE) or 'llama' (SentencePiece)`);
  }
  const tokens = arrayOf(meta, "tokenizer.ggml.tokens");
  const n = tokens.length;
  const types: ArrayLike<unknown> | null = meta.has("tokenizer.ggml.token_type") ? arrayOf(meta, "tokenizer.ggml.token_type") : null;
  if (types !== null && types.length !== n) {
    fail("tokenizer.ggml.token_type", `length ${types.length} does not match tokenizer.ggml.tokens length ${n}`);
  }
  const mergesRaw = arrayOf(meta, "tokenizer.ggml.merges");

  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  const added: AddedTokenJson[] = [];
  for (let id = 0; id < n; id++) {
    const content = tokens[id];
    if (typeof content !== "string") fail("tokenizer.ggml.tokens", `entry ${id} is ${typeof content}, expected a string`);
    const type = types === null ? GgufTokenType.NORMAL : Number(types[id]);
    if (type === GgufTokenType.CONTROL || type === GgufTokenType.USER_DEFINED) {
      // Matched as whole strings before pre-tokenization, like HF added tokens.
      added.push({ id, content, special: type === GgufTokenType.CONTROL, single_word: false, lstrip: false, rstrip: false, normalized: false });
    } else if (!(content in vocab)) {
      vocab[content] = id;
    }
  }
  const merges: string[] = new Array(mergesRaw.length);
  for (let i = 0; i < mergesRaw.length; i++) {
    const m = mergesRaw[i];
    if (typeof m !== "string" || m.indexOf(" ") <= 0) fail("tokenizer.ggml.merges", `entry ${i} is ${showJson(m, 60)}, expected "left right"`);
    merges[i] = m;
  }

  const pre = meta.get("tokenizer.ggml.pre") ?? "default";
  let preTokenizer: Record<string, unknown>;
  if (typeof pre === "string" && LLAMA3_PRE.has(pre)) {
    preTokenizer = {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: LLAMA3_SPLIT_REGEX }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    };
  } else if (typeof pre === "string" && GPT2_PRE.has(pre)) {
    preTokenizer = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  } else {
    return fail("tokenizer.ggml.pre", `'${clip(String(pre))}' is not supported; expected one of ${[...LLAMA3_PRE, ...GPT2_PRE].join(", ")}`);
  }

  const tokenAt = (key: string): string | undefined => {
    const id = optInt(meta, key);
    if (id === undefined) return undefined;
    if (id >= n) fail(key, `id ${id} is outside the vocabulary (size ${n})`);
    return tokens[id] as string;
  };
  const bos = tokenAt("tokenizer.ggml.bos_token_id");
  const eos = tokenAt("tokenizer.ggml.eos_token_id");
  const addBos = optBool(meta, "tokenizer.ggml.add_bos_token") ?? bos !== undefined;
  const addEos = optBool(meta, "tokenizer.ggml.add_eos_token") ?? false;

  // Post-processor: [BOS] A [EOS], as the flags say.
  const single: unknown[] = [];
  const special: Record<string, unknown> = {};
  const wrap = (tok: string) => {
    single.push({ SpecialToken: { id: tok, type_id: 0 } });
    special[tok] = { id: tok, ids: [vocabOrAddedId(tok, vocab, added)], tokens: [tok] };
  };
  if (addBos && bos !== undefined) wrap(bos);
  single.push({ Sequence: { id: "A", type_id: 0 } });
  if (addEos && eos !== undefined) wrap(eos);
  const postProcessor = single.length > 1 ? { type: "TemplateProcessing", single, pair: [], special_tokens: special } : null;

  const tokenizerJson: TokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: preTokenizer,
    post_processor: postProcessor,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      // llama.cpp skips merging for words that are already whole tokens in Llama 3 (HF: ignore_merges).
      ignore_merges: typeof pre === "string" && LLAMA3_PRE.has(pre),
      vocab,
      merges,
    },
  };

  const tokenizerConfig: TokenizerConfigJson = { clean_up_tokenization_spaces: false };
  if (bos !== undefined) tokenizerConfig.bos_token = bos;
  if (eos !== undefined) tokenizerConfig.eos_token = eos;
  const pad = tokenAt("tokenizer.ggml.padding_token_id");
  if (pad !== undefined) tokenizerConfig.pad_token = pad;
  const chat = chatTemplates(meta);
  if (chat !== undefined) tokenizerConfig.chat_template = chat;

  const eosIds: number[] = [];
  for (const key of ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]) {
    const id = optInt(meta, key);
    if (id !== undefined && id >= n) fail(key, `id ${id} is outside the vocabulary (size ${n})`);
    if (id !== undefined && !eosIds.includes(id)) eosIds.push(id);
  }
  return { tokenizerJson, tokenizerConfig, eosIds };
}

function vocabOrAddedId(tok: string, vocab: Record<string, number>, added: readonly AddedTokenJson[]): number {
  return added.find((a) => a.content === tok)?.id ?? vocab[tok]!;
}

/** tokenizer.chat_template (string) plus tokenizer.chat_template.<name> -> the tokenizer_config.json form. */
function chatTemplates(meta: Map<string, unknown>): string | { name: string; template: string }[] | undefined {
  const main = meta.get("tokenizer.chat_template");
  const named: { name: string; template: string }[] = [];
  const prefix = "tokenizer.chat_template.";
  for (const [key, value] of meta) {
    if (key.startsWith(prefix) && typeof value === "string") named.push({ name: key.slice(prefix.length), template: value });
  }
  if (named.length === 0) return typeof main === "string" ? main : undefined;
  if (typeof main === "string") named.unshift({ name: "default", template: main });
  return named;
}

/** SentencePiece vocabulary (tokenizer.ggml.model = "llama") -> the codec's model and the HF files. */
function spmFiles(meta: Map<string, unknown>, withMerges: boolean): { model: SpmModel; files: GgufTokenizerFiles; addBos: boolean; addEos: boolean } {
  const tokens = arrayOf(meta, "tokenizer.ggml.tokens");
  const n = tokens.length;
  const pieces: string[] = new Array(n);
  for (let id = 0; id < n; id++) {
    const t = tokens[id];
    if (typeof t !== "string") fail("tokenizer.ggml.tokens", `entry ${id} is ${typeof t}, expected a string`);
    pieces[id] = t;
  }
  const numbers = (key: string, fallback: number): number[] => {
    if (!meta.has(key)) return new Array<number>(n).fill(fallback);
    const a = arrayOf(meta, key);
    if (a.length !== n) fail(key, `length ${a.length} does not match tokenizer.ggml.tokens length ${n}`);
    return Array.from(a, (v, i) => (typeof v === "number" ? v : fail(key, `entry ${i} is ${typeof v}, expected a number`)));
  };
  const scores = numbers("tokenizer.ggml.scores", 0);
  const types = numbers("tokenizer.ggml.token_type", GgufTokenType.NORMAL);
  const idAt = (key: string): number | null => {
    const id = optInt(meta, key);
    if (id !== undefined && id >= n) fail(key, `id ${id} is outside the vocabulary (size ${n})`);
    return id ?? null;
  };
  // llama.cpp's SPM defaults: bos 1, eos 2, unk 0, add_bos true, add_space_prefix true
  const bosId = meta.has("tokenizer.ggml.bos_token_id") ? idAt("tokenizer.ggml.bos_token_id") : n > 1 ? 1 : null;
  const eosId = meta.has("tokenizer.ggml.eos_token_id") ? idAt("tokenizer.ggml.eos_token_id") : n > 2 ? 2 : null;
  const unkId = meta.has("tokenizer.ggml.unknown_token_id") ? idAt("tokenizer.ggml.unknown_token_id") : n > 0 ? 0 : null;
  const addBos = optBool(meta, "tokenizer.ggml.add_bos_token") ?? true;
  const addEos = optBool(meta, "tokenizer.ggml.add_eos_token") ?? false;
  const model: SpmModel = {
    pieces, scores, types, unkId,
    addSpacePrefix: optBool(meta, "tokenizer.ggml.add_space_prefix") ?? true,
    prefixMode: "llama.cpp",
  };
  const tokenizerJson = spmTokenizerJson(model, bosId, eosId, addBos, addEos, withMerges);
  const tokenizerConfig: TokenizerConfigJson = { clean_up_tokenization_spaces: false };
  if (bosId !== null) tokenizerConfig.bos_token = pieces[bosId];
  if (eosId !== null) tokenizerConfig.eos_token = pieces[eosId];
  if (unkId !== null) tokenizerConfig.unk_token = pieces[unkId];
  const pad = idAt("tokenizer.ggml.padding_token_id");
  if (pad !== null) tokenizerConfig.pad_token = pieces[pad];
  const chat = chatTemplates(meta);
  if (chat !== undefined) tokenizerConfig.chat_template = chat;
  const eosIds: number[] = [];
  for (const id of [eosId, idAt("tokenizer.ggml.eot_token_id"), idAt("tokenizer.ggml.eom_token_id")]) {
    if (id !== null && !eosIds.includes(id)) eosIds.push(id);
  }
  return { model, files: { tokenizerJson, tokenizerConfig, eosIds }, addBos, addEos };
}

/**
 * The Tokenizer described by GGUF metadata; null when the file carries no tokenizer. Errors name `file` (by default
 * the file the map was parsed from: LoadedModel.ggufMetadata).
 */
export function tokenizerFromGguf(meta: Map<string, unknown>, file: string | null = ggufMetadataFile(meta)): Tokenizer | null {
  if (!meta.has("tokenizer.ggml.model")) return null;
  if (file === null) return buildTokenizer(meta);
  try {
    return buildTokenizer(meta);
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
}

function buildTokenizer(meta: Map<string, unknown>): Tokenizer {
  if (meta.get("tokenizer.ggml.model") === "llama") {
    // ids come from SpmCodec: the HF json is only the vocabulary there, so no merges
    const { model, files, addBos, addEos } = spmFiles(meta, false);
    return new SpmTokenizer(model, "GGUF tokenizer.ggml.*", files.tokenizerJson, files.tokenizerConfig, { extraEosIds: files.eosIds, addBos, addEos });
  }
  const { tokenizerJson, tokenizerConfig, eosIds } = ggufToTokenizerJson(meta);
  return new Tokenizer(tokenizerJson, tokenizerConfig, { extraEosIds: eosIds });
}
