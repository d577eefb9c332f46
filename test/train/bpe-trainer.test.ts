// BPE trainer: hand-checked merges, incremental counts vs a recount-everything reference, HF round trip, determinism, CLI.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as hfTokenizers from "@huggingface/tokenizers";
import {
  bytesToUnicode, llama3SplitRegExp, preTokenize, PreTokenCounter, toByteLevel, toTokenizerFiles, trainBpe,
  trainTokenizerFiles, DEFAULT_SPECIAL_TOKENS, type BpeModel,
} from "../../src/train/bpe-trainer.js";
import { loadTokenizer, Tokenizer } from "../../src/formats/tokenizer.js";
import { ChatTemplate } from "../../src/formats/chat-template.js";
import { LLAMA3_SPLIT_REGEX } from "../../src/formats/gguf-tokenizer.js";
import { run } from "../../src/cli/main.js";
import { repoUrl } from "../repo.js";

const hardStrings: string[] = JSON.parse(await readFile(repoUrl("test/fixtures/tokenizer/hard-strings.json"), "utf8"));

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const id = (model: BpeModel, tok: string) => {
  const i = model.tokens.indexOf(tok);
  assert.ok(i >= 0, `token ${tok} not in vocab`);
  return i;
};
const mergeStrings = (m: BpeModel) => m.merges.map(([a, b]) => `${m.tokens[a]} ${m.tokens[b]}`);

/** Reference: recount every pair from scratch before each merge; same tie-break (count, then smaller left, then right id). */
function naiveBpe(counts: Map<string, number>, numMerges: number, minFrequency: number): string[] {
  const base = trainBpe(new Map(), { vocabSize: 256, specialTokens: [] }).tokens;
  const idOf = new Map(base.map((t, i) => [t, i]));
  const tokens = [...base];
  let words = [...counts].map(([w, c]) => ({ s: [...toByteLevel(w)].map((ch) => idOf.get(ch)!), c }));
  const out: string[] = [];
  for (let m = 0; m < numMerges; m++) {
    const pc = new Map<string, number>();
    for (const { s, c } of words) for (let i = 0; i + 1 < s.length; i++) pc.set(`${s[i]},${s[i + 1]}`, (pc.get(`${s[i]},${s[i + 1]}`) ?? 0) + c);
    let best: [number, number] | null = null, bestC = 0;
    for (const [k, c] of pc) {
      const [a, b] = k.split(",").map(Number) as [number, number];
      if (c > bestC || (c === bestC && best !== null && (a < best[0] || (a === best[0] && b < best[1])))) {
        best = [a, b];
        bestC = c;
      }
    }
    if (best === null || bestC < minFrequency) break;
    const [a, b] = best, nid = tokens.length;
    tokens.push(tokens[a]! + tokens[b]!);
    out.push(`${tokens[a]} ${tokens[b]}`);
    words = words.map(({ s, c }) => {
      const r: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) { r.push(nid); i++; } else r.push(s[i]!);
      }
      return { s: r, c };
    });
  }
  return out;
}

/** Apply merges in order to one pre-token (what training did to it). */
function segment(model: BpeModel, word: string): string[] {
  let s = [...toByteLevel(word)];
  for (const [a, b] of model.merges) {
    const l = model.tokens[a]!, r = model.tokens[b]!;
    const next: string[] = [];
    for (let i = 0; i < s.length; i++) {
      if (i + 1 < s.length && s[i] === l && s[i + 1] === r) { next.push(l + r); i++; } else next.push(s[i]!);
    }
    s = next;
  }
  return s;
}

test("byte alphabet: 256 distinct chars, printable ASCII maps to itself, space is Ġ, newline is Ċ", () => {
  const t = bytesToUnicode();
  assert.equal(new Set(t).size, 256);
  for (let b = 0x21; b <= 0x7e; b++) assert.equal(t[b], String.fromCharCode(b));
  assert.equal(t[0x20], "Ġ");
  assert.equal(t[0x0a], "Ċ");
  assert.equal(toByteLevel(" é"), "ĠÃ©");
  // Base ids follow GPT-2's order: "!" is 0, then the rest of the printable bytes.
  const base = trainBpe(new Map(), { vocabSize: 256, specialTokens: [] }).tokens;
  assert.equal(base[0], "!");
  assert.equal(base[93], "~");
  assert.equal(base.length, 256);
});

test("pre-tokenizer matches the Llama 3 split as @huggingface/tokenizers runs it", () => {
  // Exported at run time; the package's NodeNext typings do not reach it.
  const { SequencePreTokenizer } = hfTokenizers as unknown as { SequencePreTokenizer: new (c: unknown) => { pre_tokenize_text(s: string): string[] } };
  const lib = new SequencePreTokenizer({
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: LLAMA3_SPLIT_REGEX }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  });
  const extra = ["I'LL don'T we'Re  x\n\n  y 12345 ...!!\t\tz", "HE'S", "a\r\n\r\nb   "];
  for (const s of [...hardStrings, ...extra]) {
    assert.deepEqual(preTokenize(s).map(toByteLevel), lib.pre_tokenize_text(s), JSON.stringify(s));
    assert.equal(preTokenize(s).join(""), s, "pre-tokens cover the text");
  }
  // Contractions are case-insensitive and separate; digits group by three.
  assert.deepEqual(preTokenize("I'LL 12345"), ["I", "'LL", " ", "123", "45"]);
  assert.ok(llama3SplitRegExp().flags.includes("u"));
});

test("tiny corpus: hand-checked merges, then min-frequency stops", () => {
  // pairs: (a,b) 5+3 = 8, (b,c) 3+1 = 4 -> merge "a b"; then (ab,c) 3, (b,c) 1 -> merge "ab c"; then (b,c) 1 < 2.
  const counts = new Map([["ab", 5], ["abc", 3], ["bc", 1]]);
  const m = trainBpe(counts, { vocabSize: 1000, minFrequency: 2, specialTokens: [] });
  assert.deepEqual(mergeStrings(m), ["a b", "ab c"]);
  assert.deepEqual(m.tokens.slice(256), ["ab", "abc"]);
  assert.deepEqual(m.merges[1], [256, id(m, "c")]);
  const m1 = trainBpe(counts, { vocabSize: 1000, minFrequency: 1, specialTokens: [] });
  assert.deepEqual(mergeStrings(m1), ["a b", "ab c", "b c"]);
  // vocabSize caps the merges: 256 + 1 merge + 5 specials.
  const capped = trainBpe(counts, { vocabSize: 262, minFrequency: 1 });
  assert.deepEqual(mergeStrings(capped), ["a b"]);
  assert.deepEqual(capped.specialTokens, DEFAULT_SPECIAL_TOKENS);
});

test("tiny corpus: overlapping runs merge left to right; ties go to the smaller ids", () => {
  // "aaaa": (a,a) x3 -> [aa,aa]; then (aa,aa) x1.  "aaa": [aa,a].
  const m = trainBpe(new Map([["aaaa", 1]]), { vocabSize: 1000, minFrequency: 1, specialTokens: [] });
  assert.deepEqual(mergeStrings(m), ["a a", "aa aa"]);
  const m3 = trainBpe(new Map([["aaa", 1]]), { vocabSize: 1000, minFrequency: 1, specialTokens: [] });
  assert.deepEqual(mergeStrings(m3), ["a a", "aa a"]);
  // (x,y) and (b,c) both occur twice: "b" has the smaller id, so "b c" first.
  const t = trainBpe(new Map([["xy", 2], ["bc", 2]]), { vocabSize: 1000, minFrequency: 1, specialTokens: [] });
  assert.deepEqual(mergeStrings(t), ["b c", "x y"]);
});

test("incremental pair counts equal a recount-everything reference on random corpora", () => {
  for (const seed of [1, 2, 3, 4]) {
    const r = rng(seed);
    const alphabet = ["a", "b", "c", "d", " ", "é", "'"];
    const counts = new Map<string, number>();
    for (let i = 0; i < 120; i++) {
      let w = "";
      const len = 1 + Math.floor(r() * 9);
      for (let j = 0; j < len; j++) w += alphabet[Math.floor(r() * alphabet.length)];
      counts.set(w, (counts.get(w) ?? 0) + 1 + Math.floor(r() * 20));
    }
    const minFrequency = 1 + Math.floor(r() * 3);
    const fast = trainBpe(counts, { vocabSize: 256 + 60, minFrequency, specialTokens: [] });
    const ref = naiveBpe(counts, 60, minFrequency);
    assert.ok(ref.length > 10, `seed ${seed}: reference made only ${ref.length} merges`);
    assert.deepEqual(mergeStrings(fast), ref, `seed ${seed}`);
  }
});

test("word order does not change the merges (determinism)", () => {
  const r = rng(7);
  const texts = hardStrings.slice(0, 30);
  const a = new PreTokenCounter(), b = new PreTokenCounter();
  for (const t of texts) a.add(t);
  const shuffled = [...texts].sort(() => r() - 0.5);
  for (const t of shuffled) b.add(t);
  const ma = trainBpe(a.counts, { vocabSize: 400, minFrequency: 1 });
  const mb = trainBpe(b.counts, { vocabSize: 400, minFrequency: 1 });
  assert.deepEqual(mergeStrings(ma), mergeStrings(mb));
  assert.deepEqual(JSON.stringify(toTokenizerFiles(ma).tokenizerJson), JSON.stringify(toTokenizerFiles(mb).tokenizerJson));
});

test("rejects a vocabulary too small for the bytes and special tokens", () => {
  assert.throws(() => trainBpe(new Map([["ab", 2]]), { vocabSize: 260 }), /vocab size 260 is too small: it must hold the 256 bytes and 5 special tokens/);
});

test("written tokenizer loads in Tokenizer, round-trips hard strings, and encodes words as training segmented them", async () => {
  const dir = await mkdtemp(join(tmpdir(), "floe-bpe-"));
  try {
    const corpus = join(dir, "corpus.jsonl");
    const r = rng(11);
    const words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "and", "then", "there", "cats", "sitting", "don't"];
    const lines: string[] = [];
    for (let i = 0; i < 300; i++) {
      const n = 3 + Math.floor(r() * 10);
      const s = Array.from({ length: n }, () => words[Math.floor(r() * words.length)]).join(" ");
      lines.push(JSON.stringify({ text: s[0]!.toUpperCase() + s.slice(1) + "." }));
    }
    lines.push(JSON.stringify({ prompt: "Q: 2+2?", completion: " 4" }));
    await writeFile(corpus, lines.join("\n") + "\n");
    const res = await trainTokenizerFiles([corpus], join(dir, "tok"), { vocabSize: 320, minFrequency: 2 });
    const tok = await loadTokenizer(join(dir, "tok"));
    assert.ok(tok instanceof Tokenizer);
    assert.equal(tok.vocabSize, res.model.tokens.length + 5);

    const bos = tok.tokenToId("<|begin_of_text|>")!;
    assert.equal(bos, res.model.tokens.length);
    assert.equal(tok.bosId, bos);
    assert.deepEqual([...tok.eosIds], [bos + 1]);
    for (const s of hardStrings) {
      const ids = tok.encode(s);
      assert.equal(ids[0], bos, `BOS first for ${JSON.stringify(s)}`);
      assert.equal(tok.decode(ids.slice(1)), s, JSON.stringify(s));
      assert.equal(tok.decode(tok.encode(s, { addSpecialTokens: false })), s);
    }
    // Special tokens written in text map to their ids.
    const eot = tok.tokenToId("<|eot_id|>")!;
    assert.deepEqual(tok.encode("<|eot_id|>", { addSpecialTokens: false }), [eot]);
    // The encoder reproduces the trainer's segmentation of every training pre-token.
    for (const w of [" the", " cats", " sitting", "The", " don", "'t", " there", " mat."]) {
      for (const p of preTokenize(w)) {
        const got: (string | undefined)[] = tok.encode(p, { addSpecialTokens: false }).map((i) => tok.idToToken(i));
        assert.deepEqual(got, segment(res.model, p), JSON.stringify(p));
      }
    }
    assert.ok(tok.encode(" the", { addSpecialTokens: false }).length === 1, "a frequent word became one token");

    // The chat template renders the Llama 3 layout.
    const cfg = JSON.parse(await readFile(join(dir, "tok", "tokenizer_config.json"), "utf8"));
    const text = new ChatTemplate(cfg.chat_template).render([{ role: "user", content: " hi " }], { addGenerationPrompt: true, bosToken: cfg.bos_token });
    assert.equal(text, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    const ids = tok.encode(text, { addSpecialTokens: false });
    assert.equal(tok.decode(ids), text);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("floe tokenizer train (CLI) writes identical files on two runs", async () => {
  const dir = await mkdtemp(join(tmpdir(), "floe-bpe-cli-"));
  try {
    const a = join(dir, "a.txt"), b = join(dir, "b.jsonl");
    await writeFile(a, hardStrings.join("\n"));
    await writeFile(b, hardStrings.slice(0, 20).map((text) => JSON.stringify({ text })).join("\n"));
    for (const out of ["o1", "o2"]) {
      const rc = await run(["tokenizer", "train", "--data", a, b, "--vocab-size", "500", "--min-frequency", "1", "--out", join(dir, out), "--quiet"]);
      assert.equal(rc, 0);
    }
    const t1 = await readFile(join(dir, "o1", "tokenizer.json"), "utf8");
    assert.equal(t1, await readFile(join(dir, "o2", "tokenizer.json"), "utf8"));
    assert.equal(await readFile(join(dir, "o1", "tokenizer_config.json"), "utf8"), await readFile(join(dir, "o2", "tokenizer_config.json"), "utf8"));
    assert.equal(Object.keys(JSON.parse(t1).model.vocab).length, 495);
    // Bad input fails with where and what.
    await writeFile(join(dir, "bad.jsonl"), '{"text":"ok"}\n{"nope":1}\n');
    const err: string[] = [];
    const orig = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (err.push(String(s)), true)) as typeof process.stderr.write;
    let rc: number;
    try {
      rc = await run(["tokenizer", "train", "--data", join(dir, "bad.jsonl"), "--vocab-size", "300", "--out", join(dir, "o3")]);
    } finally {
      process.stderr.write = orig;
    }
    assert.equal(rc, 1);
    assert.match(err.join(""), /bad\.jsonl:2: expected \{"text"\}/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
