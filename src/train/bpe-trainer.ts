// Byte-level BPE trainer: Llama-3 pre-tokenization, GPT-2 byte->unicode alphabet, incremental pair counts; writes HF tokenizer.json.
import { mkdir, writeFile } from "node:fs/promises";
import { readTextFile } from "../formats/lines.js";
import { join } from "node:path";
import { LLAMA3_SPLIT_REGEX } from "../formats/gguf-tokenizer.js";
import type { AddedTokenJson, TokenizerConfigJson, TokenizerJson } from "../formats/tokenizer.js";

/** The Llama 3 special tokens, in id order after the learned vocabulary. */
export const DEFAULT_SPECIAL_TOKENS: readonly string[] = [
  "<|begin_of_text|>",
  "<|end_of_text|>",
  "<|start_header_id|>",
  "<|end_header_id|>",
  "<|eot_id|>",
];

/** Llama 3 headers; with `tools`, Llama 3.1's JSON tool calling (system "Environment: ipython", the functions in the
 * first user turn, calls as {"name", "parameters"} joined by "; ", results as ipython turns). */
export const LLAMA3_STYLE_CHAT_TEMPLATE =
  "{{- bos_token }}" +
  "{%- set has_tools = tools is defined and tools is not none and tools | length > 0 %}" +
  "{%- set ns = namespace(first_user=true) %}" +
  "{%- if has_tools and (messages | length == 0 or messages[0]['role'] != 'system') %}" +
  "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nEnvironment: ipython<|eot_id|>' }}" +
  "{%- endif %}" +
  "{%- for message in messages %}" +
  "{%- set content = message['content'] if message['content'] is string else '' %}" +
  "{%- if message['role'] == 'system' %}" +
  "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}" +
  "{%- if has_tools %}" +
  "{{- 'Environment: ipython\\n\\n' }}" +
  "{%- endif %}" +
  "{{- (content | trim) + '<|eot_id|>' }}" +
  "{%- elif message['role'] == 'user' and has_tools and ns.first_user %}" +
  "{%- set ns.first_user = false %}" +
  "{{- '<|start_header_id|>user<|end_header_id|>\\n\\n' }}" +
  "{{- 'Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\\n\\n' }}" +
  "{{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\\n\\n' }}" +
  "{%- for t in tools %}" +
  "{{- t | tojson }}" +
  "{{- '\\n\\n' }}" +
  "{%- endfor %}" +
  "{{- (content | trim) + '<|eot_id|>' }}" +
  "{%- elif message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] %}" +
  "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}" +
  "{%- for tc in message['tool_calls'] %}" +
  "{%- set f = tc['function'] if tc['function'] is defined else tc %}" +
  "{%- if not loop.first %}" +
  "{{- '; ' }}" +
  "{%- endif %}" +
  "{{- '{\"name\": \"' + f['name'] + '\", \"parameters\": ' + (f['arguments'] | tojson) + '}' }}" +
  "{%- endfor %}" +
  "{{- '<|eot_id|>' }}" +
  "{%- elif message['role'] == 'tool' or message['role'] == 'ipython' %}" +
  "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' }}" +
  "{%- if message['content'] is mapping %}" +
  "{{- message['content'] | tojson }}" +
  "{%- else %}" +
  "{{- content }}" +
  "{%- endif %}" +
  "{{- '<|eot_id|>' }}" +
  "{%- else %}" +
  "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (content | trim) + '<|eot_id|>' }}" +
  "{%- endif %}" +
  "{%- endfor %}" +
  "{%- if add_generation_prompt %}" +
  "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}" +
  "{%- endif %}";

export interface BpeTrainOptions {
  /** Total vocabulary: 256 bytes + merges + special tokens. */
  vocabSize: number;
  /** Stop merging when the best pair occurs fewer times than this. Default 2. */
  minFrequency?: number;
  /** Appended after the learned vocabulary. Default DEFAULT_SPECIAL_TOKENS. */
  specialTokens?: readonly string[];
  /** Called every `progressEvery` merges. */
  onProgress?: (merges: number, target: number) => void;
  progressEvery?: number;
}

export interface BpeModel {
  /** id -> byte-level token string; ids [0, 256) are the bytes in GPT-2 order, then one per merge. */
  tokens: string[];
  /** Merge i made token 256 + i from (left, right) ids. */
  merges: [number, number][];
  specialTokens: string[];
}

/** GPT-2 byte -> printable unicode char: printable Latin-1 bytes map to themselves, the rest to U+0100 upward. */
export function bytesToUnicode(): string[] {
  const table = new Array<string>(256);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCharCode(printable ? b : 256 + next++);
  }
  return table;
}

const BYTE_CHARS = bytesToUnicode();
const UTF8 = new TextEncoder();

/** A string's UTF-8 bytes in the byte-level alphabet (" the" -> "Ġthe"). */
export function toByteLevel(s: string): string {
  let out = "";
  for (const b of UTF8.encode(s)) out += BYTE_CHARS[b]!;
  return out;
}

/** Byte order of the 256 base ids: printable bytes first (as GPT-2's vocab), then the remapped ones. */
function baseByteOrder(): number[] {
  const printable: number[] = [];
  const rest: number[] = [];
  for (let b = 0; b < 256; b++) {
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) printable.push(b);
    else rest.push(b);
  }
  return [...printable, ...rest];
}

/** LLAMA3_SPLIT_REGEX for a JS RegExp: `(?i:...)` groups become `(?:...)` with [xX] classes for ASCII letters. */
export function llama3SplitRegExp(): RegExp {
  let src = LLAMA3_SPLIT_REGEX;
  const open = "(?i:";
  for (let at = src.indexOf(open); at >= 0; at = src.indexOf(open)) {
    // The group body holds no nested parentheses or classes (true for the Llama 3 pattern).
    const end = src.indexOf(")", at);
    const body = src.slice(at + open.length, end);
    if (/[()[\]\\]/.test(body)) throw new Error(`LLAMA3_SPLIT_REGEX: unsupported nested syntax in (?i:${body})`);
    const folded = body.replace(/[A-Za-z]/g, (c) => `[${c.toLowerCase()}${c.toUpperCase()}]`);
    src = src.slice(0, at) + "(?:" + folded + src.slice(end);
  }
  return new RegExp(src, "gu");
}

/** Pre-tokens of `text` (Llama 3 split), as raw strings. */
export function preTokenize(text: string, re: RegExp = llama3SplitRegExp()): string[] {
  return text.match(re) ?? [];
}

/** Counts of pre-tokens over many texts; feed texts one at a time. */
export class PreTokenCounter {
  readonly counts = new Map<string, number>();
  private readonly re = llama3SplitRegExp();

  add(text: string): void {
    const re = this.re;
    re.lastIndex = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const w = m[0];
      this.counts.set(w, (this.counts.get(w) ?? 0) + 1);
    }
  }
}

// Pair keys: left * 2^21 + right (exact in a double for ids < 2^21).
const KEY = 2 ** 21;
/** The largest vocabulary the pair keys can address. */
export const MAX_VOCAB_SIZE = KEY - 1;
const pairKey = (a: number, b: number) => a * KEY + b;

/** Max-heap of (count, pair key): larger count first, then the smaller key (deterministic ties). */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];
  get size(): number {
    return this.counts.length;
  }
  private above(i: number, j: number): boolean {
    const ci = this.counts[i]!, cj = this.counts[j]!;
    return ci > cj || (ci === cj && this.keys[i]! < this.keys[j]!);
  }
  private swap(i: number, j: number): void {
    const c = this.counts[i]!, k = this.keys[i]!;
    this.counts[i] = this.counts[j]!;
    this.keys[i] = this.keys[j]!;
    this.counts[j] = c;
    this.keys[j] = k;
  }
  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  pop(): { count: number; key: number } {
    const top = { count: this.counts[0]!, key: this.keys[0]! };
    const last = this.counts.length - 1;
    this.swap(0, last);
    this.counts.pop();
    this.keys.pop();
    let i = 0;
    const n = this.counts.length;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < n && this.above(l, m)) m = l;
      if (r < n && this.above(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
    return top;
  }
}

/**
 * Learn merges from pre-token counts. Each merge takes the most frequent adjacent pair (ties: smaller left id,
 * then smaller right id), rewrites only the words that contain it, and updates pair counts by the difference.
 */
export function trainBpe(preTokenCounts: ReadonlyMap<string, number>, opts: BpeTrainOptions): BpeModel {
  const specialTokens = [...(opts.specialTokens ?? DEFAULT_SPECIAL_TOKENS)];
  const minFrequency = opts.minFrequency ?? 2;
  const numMerges = opts.vocabSize - 256 - specialTokens.length;
  if (!Number.isInteger(opts.vocabSize) || numMerges < 0) {
    throw new Error(`vocab size ${opts.vocabSize} is too small: it must hold the 256 bytes and ${specialTokens.length} special tokens`);
  }
  if (opts.vocabSize >= KEY) throw new Error(`vocab size ${opts.vocabSize} is too large (max ${KEY - 1})`);
  if (new Set(specialTokens).size !== specialTokens.length) throw new Error(`special tokens contain duplicates: ${JSON.stringify(specialTokens)}`);

  const byteChar = bytesToUnicode();
  const order = baseByteOrder();
  const tokens: string[] = order.map((b) => byteChar[b]!);
  const idOfByte = new Int32Array(256);
  order.forEach((b, id) => (idOfByte[b] = id));

  // Words: symbol ids per distinct pre-token, with their counts.
  const enc = new TextEncoder();
  const words: Int32Array[] = [];
  const wordCounts: number[] = [];
  for (const [w, c] of preTokenCounts) {
    const bytes = enc.encode(w);
    if (bytes.length === 0 || c <= 0) continue;
    const syms = new Int32Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) syms[i] = idOfByte[bytes[i]!]!;
    words.push(syms);
    wordCounts.push(c);
  }

  const pairCounts = new Map<number, number>();
  // Words that held a pair at some point (may be stale; checked when merging).
  const where = new Map<number, number[]>();
  for (let wi = 0; wi < words.length; wi++) {
    const s = words[wi]!, c = wordCounts[wi]!;
    for (let i = 0; i + 1 < s.length; i++) {
      const k = pairKey(s[i]!, s[i + 1]!);
      pairCounts.set(k, (pairCounts.get(k) ?? 0) + c);
      const list = where.get(k);
      if (list === undefined) where.set(k, [wi]);
      else if (list[list.length - 1] !== wi) list.push(wi);
    }
  }
  const heap = new PairHeap();
  for (const [k, c] of pairCounts) heap.push(c, k);

  const merges: [number, number][] = [];
  const delta = new Map<number, number>();
  const every = opts.progressEvery ?? 500;
  while (merges.length < numMerges && heap.size > 0) {
    const top = heap.pop();
    const current = pairCounts.get(top.key) ?? 0;
    // Lazy heap: an entry above the live count is re-queued at the live count; one below it is a stale duplicate.
    if (top.count !== current) {
      if (current > 0 && top.count > current) heap.push(current, top.key);
      continue;
    }
    if (current < minFrequency) break;
    const a = Math.floor(top.key / KEY), b = top.key % KEY;
    const id = tokens.length;
    tokens.push(tokens[a]! + tokens[b]!);
    merges.push([a, b]);

    delta.clear();
    const seen = new Set<number>();
    for (const wi of where.get(top.key) ?? []) {
      if (seen.has(wi)) continue;
      seen.add(wi);
      const s = words[wi]!;
      let hit = false;
      for (let i = 0; i + 1 < s.length; i++) if (s[i] === a && s[i + 1] === b) { hit = true; break; }
      if (!hit) continue;
      const c = wordCounts[wi]!;
      // Old pairs out, merged word's pairs in (left to right, non-overlapping).
      for (let i = 0; i + 1 < s.length; i++) {
        const k = pairKey(s[i]!, s[i + 1]!);
        delta.set(k, (delta.get(k) ?? 0) - c);
      }
      const out = new Int32Array(s.length);
      let n = 0;
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          out[n++] = id;
          i++;
        } else {
          out[n++] = s[i]!;
        }
      }
      const merged = out.slice(0, n);
      words[wi] = merged;
      for (let i = 0; i + 1 < n; i++) {
        const k = pairKey(merged[i]!, merged[i + 1]!);
        delta.set(k, (delta.get(k) ?? 0) + c);
        if (merged[i] === id || merged[i + 1] === id) {
          const list = where.get(k);
          if (list === undefined) where.set(k, [wi]);
          else if (list[list.length - 1] !== wi) list.push(wi);
        }
      }
    }
    where.delete(top.key);
    for (const [k, d] of delta) {
      if (d === 0) continue;
      const c = (pairCounts.get(k) ?? 0) + d;
      if (c <= 0) pairCounts.delete(k);
      else pairCounts.set(k, c);
      if (d > 0) heap.push(c, k);
    }
    if (opts.onProgress && merges.length % every === 0) opts.onProgress(merges.length, numMerges);
  }
  return { tokens, merges, specialTokens };
}

export interface TokenizerFiles {
  tokenizerJson: TokenizerJson;
  tokenizerConfig: TokenizerConfigJson;
  /** For generation_config.json: BOS and the ids that end generation. */
  bosTokenId: number;
  eosTokenIds: number[];
}

/** HF tokenizer.json (BPE, Llama 3 split + ByteLevel, ByteLevel decoder, BOS template) and tokenizer_config.json. */
export function toTokenizerFiles(model: BpeModel, opts: { modelMaxLength?: number } = {}): TokenizerFiles {
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  model.tokens.forEach((t, id) => {
    if (t in vocab) throw new Error(`BPE model: token ${JSON.stringify(t)} appears twice (ids ${vocab[t]} and ${id})`);
    vocab[t] = id;
  });
  const base = model.tokens.length;
  const added: AddedTokenJson[] = model.specialTokens.map((content, i) => ({
    id: base + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  const idOf = (t: string): number => {
    const a = added.find((x) => x.content === t);
    if (a === undefined) throw new Error(`special token ${t} is required but not in ${JSON.stringify(model.specialTokens)}`);
    return a.id;
  };
  const bos = "<|begin_of_text|>", eos = "<|end_of_text|>";
  const bosId = idOf(bos), eosId = idOf(eos);
  const eosTokenIds = [eosId];
  if (model.specialTokens.includes("<|eot_id|>")) eosTokenIds.push(idOf("<|eot_id|>"));

  const tokenizerJson: TokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: LLAMA3_SPLIT_REGEX }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: model.merges.map(([a, b]) => `${model.tokens[a]} ${model.tokens[b]}`),
    },
  };
  const addedDecoder: Record<string, unknown> = {};
  for (const t of added) addedDecoder[String(t.id)] = { content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  const tokenizerConfig: TokenizerConfigJson = {
    added_tokens_decoder: addedDecoder,
    bos_token: bos,
    eos_token: eos,
    clean_up_tokenization_spaces: false,
    model_input_names: ["input_ids", "attention_mask"],
    model_max_length: opts.modelMaxLength ?? 2048,
    tokenizer_class: "PreTrainedTokenizerFast",
    chat_template: LLAMA3_STYLE_CHAT_TEMPLATE,
  };
  return { tokenizerJson, tokenizerConfig, bosTokenId: bosId, eosTokenIds };
}

/** Texts of a training file: JSONL lines give "text" (or prompt+completion, or message contents); other files are one text. */
export async function readTrainingTexts(path: string): Promise<string[]> {
  let raw: string;
  try {
    // bytes that are not UTF-8 are refused, not trained on as U+FFFD (a Latin-1 corpus); a leading BOM is dropped, as
    // finetune's reader drops it
    raw = readTextFile(path, { notUtf8: (at) => `${path}: not valid UTF-8 (an invalid byte at offset ${at}); convert the file to UTF-8 first (e.g. iconv -f latin1 -t utf-8)` });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === undefined) throw e; // not UTF-8, or too long: the message names the file
    throw new Error(`${path}: cannot read data: ${(e as Error).message}`);
  }
  if (!/\.jsonl$/i.test(path)) return [raw];
  const texts: string[] = [];
  const lines = raw.split("\n");
  lines.forEach((line, i) => {
    if (line.trim() === "") return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new Error(`${path}:${i + 1}: invalid JSON: ${(e as Error).message}`);
    }
    const o = obj as Record<string, unknown>;
    if (typeof o?.text === "string") texts.push(o.text);
    else if (typeof o?.prompt === "string" && typeof o?.completion === "string") texts.push(o.prompt + o.completion);
    else if (Array.isArray(o?.messages)) {
      for (const m of o.messages as { content?: unknown }[]) if (typeof m?.content === "string") texts.push(m.content);
    } else throw new Error(`${path}:${i + 1}: expected {"text"}, {"prompt","completion"} or {"messages"}, got keys ${JSON.stringify(Object.keys(o ?? {}))}`);
  });
  return texts;
}

export interface TrainTokenizerResult extends TokenizerFiles {
  model: BpeModel;
  numTexts: number;
  numPreTokens: number;
  numDistinctPreTokens: number;
}

/** Train from files and write tokenizer.json + tokenizer_config.json into outDir. */
export async function trainTokenizerFiles(
  files: readonly string[],
  outDir: string,
  opts: BpeTrainOptions & { modelMaxLength?: number },
): Promise<TrainTokenizerResult> {
  if (files.length === 0) throw new Error("no training files given");
  const counter = new PreTokenCounter();
  let numTexts = 0;
  for (const f of files) {
    for (const t of await readTrainingTexts(f)) {
      counter.add(t);
      numTexts++;
    }
  }
  let numPreTokens = 0;
  for (const c of counter.counts.values()) numPreTokens += c;
  // nothing to learn from: an empty file (or only blank records) would give a vocabulary of bytes alone, silently
  if (numPreTokens === 0) throw new Error(`${files.join(", ")}: no text to train a tokenizer on (${numTexts} ${numTexts === 1 ? "text" : "texts"}, all empty)`);
  const model = trainBpe(counter.counts, opts);
  const out = toTokenizerFiles(model, opts);
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, "tokenizer.json"), JSON.stringify(out.tokenizerJson, null, 2) + "\n");
  await writeFile(join(outDir, "tokenizer_config.json"), JSON.stringify(out.tokenizerConfig, null, 2) + "\n");
  return { ...out, model, numTexts, numPreTokens, numDistinctPreTokens: counter.counts.size };
}
