// The shipped default model (models/floe-brown): loads, tokenizer round-trips, greedy text is English words and word pairs, held-out loss beats a unigram model.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, stat } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { openModel, type OpenedModel } from "../../src/model/open.js";
import { generate } from "../../src/model/generate.js";
import { loadBrown, splitBrown } from "../../src/train/corpus.js";
import { heldOutLoss } from "../../src/train/perplexity.js";
import { repoPath, repoUrl } from "../repo.js";

const DIR = repoPath("models/floe-brown");
const hardStrings: string[] = JSON.parse(await readFile(repoUrl("test/fixtures/tokenizer/hard-strings.json"), "utf8"));

let opened: OpenedModel | null = null;
async function model(): Promise<OpenedModel> {
  opened ??= await openModel(DIR, { threads: 2 });
  return opened;
}
const brown = splitBrown(loadBrown());

test("the HF directory is complete, within 40 MB, and a small Llama", async () => {
  let bytes = 0;
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    bytes += (await stat(`${DIR}/${f}`)).size;
  }
  assert.ok(bytes <= 40 * 2 ** 20, `${bytes} bytes`);
  const { model: m, tokenizer } = await model();
  const c = m.config;
  assert.ok(tokenizer !== null);
  assert.equal(c.vocabSize, tokenizer.vocabSize);
  assert.ok(c.numKvHeads < c.numHeads, "GQA");
  assert.ok(c.tieWordEmbeddings);
  assert.equal(c.bosTokenId, tokenizer.bosId);
});

test("its tokenizer round-trips hard strings and Brown text", async () => {
  const tok = (await model()).tokenizer!;
  for (const s of [...hardStrings, ...brown.heldOut.slice(0, 20)]) {
    const ids = tok.encode(s);
    assert.equal(ids[0], tok.bosId);
    assert.equal(tok.decode(ids.slice(1)), s, JSON.stringify(s.slice(0, 60)));
  }
  // Common English words are single tokens.
  for (const w of [" the", " and", " said", " would"]) assert.equal(tok.encode(w, { addSpecialTokens: false }).length, 1, w);
});

test("greedy generation from English prompts gives varied Brown-vocabulary words in Brown word pairs", async () => {
  const { model: m, tokenizer: tok } = await model();
  const vocab = new Set<string>();
  const bigrams = new Set<string>();
  for (const r of [...brown.train, ...brown.heldOut]) {
    const ws = r.toLowerCase().match(/[a-z]+/g) ?? [];
    ws.forEach((w, i) => { vocab.add(w); if (i > 0) bigrams.add(`${ws[i - 1]} ${w}`); });
  }
  const words: string[] = [];
  let pairs = 0, brownPairs = 0;
  for (const prompt of ["The", "He said that", "In the morning"]) {
    // Greedy (argmax) decoding; the repetition penalty keeps a small model out of loops.
    const res = generate(m, tok!.encode(prompt), { maxTokens: 40, sampling: { temperature: 0, repetitionPenalty: 1.3 }, stopTokenIds: [] });
    const ws = tok!.decode(res.outputIds, { skipSpecialTokens: true }).toLowerCase().match(/[a-z]+/g) ?? [];
    ws.forEach((w, i) => { if (i > 0) { pairs++; if (bigrams.has(`${ws[i - 1]} ${w}`)) brownPairs++; } });
    words.push(...ws);
  }
  const text = words.join(" ");
  // The random init repeats one or two tokens ("the the way way...": 5 distinct words, 42% Brown pairs), so all three bounds matter.
  assert.ok(new Set(words).size >= 30, `only ${new Set(words).size} distinct words: ${text}`);
  const known = words.filter((w) => vocab.has(w)).length / words.length;
  assert.ok(known >= 0.9, `${(100 * known).toFixed(1)}% of generated words are in the Brown vocabulary: ${text}`);
  assert.ok(brownPairs / pairs >= 0.8, `${(100 * brownPairs / pairs).toFixed(1)}% of adjacent word pairs occur in Brown: ${text}`);
});

test("held-out loss on Brown is far below a unigram model's", async () => {
  const { model: m, tokenizer: tok } = await model();
  // Unigram baseline: token frequencies from 1500 training records (add-0.5 smoothing), scored on the same held-out tokens.
  const V = m.config.vocabSize;
  const counts = new Float64Array(V).fill(0.5);
  for (const r of brown.train.slice(0, 1500)) {
    const ids = tok!.encode(r);
    ids.push(tok!.eosIds[0]!);
    for (const id of ids.slice(1)) counts[id]! += 1;
  }
  const total = counts.reduce((a, b) => a + b, 0);
  const texts = brown.heldOut.slice(0, 4);
  let uni = 0, n = 0;
  for (const t of texts) {
    const ids = [...tok!.encode(t), tok!.eosIds[0]!].slice(0, 256);
    for (const id of ids.slice(1)) { uni -= Math.log(counts[id]! / total); n++; }
  }
  uni /= n;
  const r = heldOutLoss(m, tok!, texts, { maxSeqLen: 256 });
  assert.equal(r.tokens, n);
  // No model without context can beat the unigram cross-entropy (~6.9 nats on these tokens; uniform guessing is ln V = 8.3).
  // Beating it by 1.5 nats (perplexity 4.5 times lower) means the model predicts from context, not just word frequency.
  assert.ok(uni > 5.5 && uni < Math.log(V), `unigram loss ${uni}`);
  assert.ok(r.loss < uni - 1.5, `held-out loss ${r.loss.toFixed(3)} vs unigram ${uni.toFixed(3)} over ${r.tokens} tokens`);
});
