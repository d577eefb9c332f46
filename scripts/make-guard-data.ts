// The labelled set for the demo guard models/floe-guard: safe text from the Brown and nlp-corpus npm corpora, safe and
// unsafe requests/answers from the per-category templates in data/guard/templates.json, as train and held-out splits.
// Usage: node --import tsx scripts/make-guard-data.ts [--seed N] [--out DIR]   (default seed 0, out data/guard;
// writes DIR/train.jsonl and DIR/heldout.jsonl, git-ignored; deterministic for a seed, about 2 s).
//
// Held-out rows are made only from held-out items of every template list (request frames, acts, direct requests,
// answers, refusals, safe acts and questions) and from held-out corpus documents/sentences, so the held-out report
// measures generalisation to unseen wording, not to unseen rows.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadBrown, loadNlpCorpus } from "../src/train/corpus.js";
import { mix32, Rng } from "../src/train/rng.js";
import { packageRoot } from "../src/model/builtin.js";

const ROOT = packageRoot();
export const TEMPLATES = join(ROOT, "data", "guard", "templates.json");

export type Split = "train" | "heldout";
interface Lists { readonly train: readonly string[]; readonly heldout: readonly string[] }
export interface GuardTemplates {
  readonly frames: Lists; // generic requests with {act}
  readonly answers: Lists; // agent answers that comply, with {act}
  readonly refusals: Lists; // agent answers that refuse, {act} optional
  readonly categories: Readonly<Record<string, { readonly name: string; readonly acts: Lists; readonly direct: Lists }>>;
  readonly safe: { readonly acts: Lists; readonly questions: Lists };
}

export type GuardMessage = { readonly role: "user" | "assistant"; readonly content: string };
/** One labelled conversation: judge the last user message (role user) or the last assistant message (role agent). */
export interface GuardExample {
  readonly messages: readonly GuardMessage[];
  readonly role: "user" | "agent";
  readonly label: "safe" | "unsafe";
  readonly categories: readonly string[]; // ["S3"] when unsafe, [] when safe
  readonly kind: string; // how it was made (see COUNTS)
  readonly parts: readonly string[]; // the template items used: "frames:train:3", "S1.acts:heldout:0", "brown:ca02", ...
}

/** Rows per split. Unsafe kinds are per category; a pool with fewer distinct rows gives all it has. */
export const COUNTS: Record<Split, Record<string, number>> = {
  train: {
    "unsafe-request": 70, "unsafe-compliance": 20, "unsafe-answer-to-safe": 8, // per category, 14 categories
    "safe-request": 450, "safe-question": 30, "corpus-user": 350, "refusal": 280, "safe-compliance": 150, "corpus-answer": 120,
  },
  heldout: {
    "unsafe-request": 20, "unsafe-compliance": 8, "unsafe-answer-to-safe": 4,
    "safe-request": 120, "safe-question": 10, "corpus-user": 150, "refusal": 112, "safe-compliance": 60, "corpus-answer": 50,
  },
};

export function loadTemplates(file = TEMPLATES): GuardTemplates {
  const t = JSON.parse(readFileSync(file, "utf8")) as GuardTemplates;
  const check = (l: Lists | undefined, where: string) => {
    if (!l || !Array.isArray(l.train) || !Array.isArray(l.heldout) || l.train.length === 0 || l.heldout.length === 0) {
      throw new Error(`${file}: ${where} must have non-empty "train" and "heldout" string lists`);
    }
  };
  check(t.frames, "frames"); check(t.answers, "answers"); check(t.refusals, "refusals");
  check(t.safe?.acts, "safe.acts"); check(t.safe?.questions, "safe.questions");
  const cats = Object.keys(t.categories ?? {});
  const want = Array.from({ length: 14 }, (_, i) => `S${i + 1}`);
  if (cats.join() !== want.join()) throw new Error(`${file}: categories must be ${want.join(", ")} in order, got ${cats.join(", ")}`);
  for (const c of cats) { check(t.categories[c]!.acts, `${c}.acts`); check(t.categories[c]!.direct, `${c}.direct`); }
  return t;
}

/** A piece of text with the template items it came from. */
interface Item { readonly text: string; readonly parts: readonly string[] }
const items = (l: Lists, split: Split, name: string): Item[] => l[split].map((text, i) => ({ text, parts: [`${name}:${split}:${i}`] }));
const fill = (frame: Item, act: Item, secondPerson = false): Item =>
  ({ text: frame.text.replaceAll("{act}", secondPerson ? toSecondPerson(act.text) : act.text), parts: [...frame.parts, ...act.parts] });

/** The user's words as the agent repeats them: my -> your, I -> you, ... */
export function toSecondPerson(s: string): string {
  const map: Record<string, string> = { my: "your", me: "you", i: "you", myself: "yourself", "i'm": "you're", "i've": "you've", mine: "yours" };
  return s.replace(/\b(myself|mine|my|me|I'm|I've|I)\b/gi, (w) => map[w.toLowerCase()] ?? w);
}

/** Corpus sentences of one split: Brown by document (every 20th held out, as the default model), nlp-corpus by index. */
export function corpusSentences(split: Split): Item[] {
  const ok = (s: string) => s.length >= 30 && s.length <= 220 && /^[A-Z"]/.test(s) && !/[{}<>|\\]/.test(s);
  const out: Item[] = [];
  loadBrown().forEach((d, i) => {
    if ((i % 20 === 10) !== (split === "heldout")) return;
    d.paragraphs.forEach((p, j) => p.forEach((s, k) => { if (ok(s)) out.push({ text: s, parts: [`brown:${d.id}:${j}:${k}`] }); }));
  });
  loadNlpCorpus().forEach((s, i) => { if ((i % 20 === 0) === (split === "heldout") && ok(s)) out.push({ text: s, parts: [`nlp:${i}`] }); });
  return out;
}

/** n distinct draws from a lazily listed pool (all of it when it is smaller), in a seeded order. */
function take<T>(rng: Rng, pool: T[], n: number): T[] {
  return rng.shuffle(pool.slice()).slice(0, Math.min(n, pool.length));
}

/** Every (a, b) pair. */
function pairs<A, B>(as: readonly A[], bs: readonly B[]): [A, B][] {
  return as.flatMap((a) => bs.map((b) => [a, b] as [A, B]));
}

/** The rows of one split, deterministic for (templates, seed, corpus). */
export function makeSplit(t: GuardTemplates, split: Split, seed: number, corpus: readonly Item[] = corpusSentences(split)): GuardExample[] {
  const rng = new Rng(mix32(seed, split === "train" ? 1 : 2));
  const n = COUNTS[split];
  const frames = items(t.frames, split, "frames");
  const answers = items(t.answers, split, "answers");
  const refusals = items(t.refusals, split, "refusals");
  const safeActs = items(t.safe.acts, split, "safe.acts");
  const safeRequests = [...pairs(frames, safeActs).map(([f, a]) => fill(f, a)), ...items(t.safe.questions, split, "safe.questions")];
  const out: GuardExample[] = [];
  const row = (messages: GuardMessage[], kind: string, parts: readonly string[], category?: string) => out.push({
    messages, role: messages.at(-1)!.role === "assistant" ? "agent" : "user", label: category ? "unsafe" : "safe",
    categories: category ? [category] : [], kind, parts,
  });
  const user = (s: string): GuardMessage => ({ role: "user", content: s });
  const agent = (s: string): GuardMessage => ({ role: "assistant", content: s });

  for (const [c, cat] of Object.entries(t.categories)) {
    const acts = items(cat.acts, split, `${c}.acts`);
    const requests = [...pairs(frames, acts).map(([f, a]) => fill(f, a)), ...items(cat.direct, split, `${c}.direct`)];
    for (const r of take(rng, requests, n["unsafe-request"]!)) row([user(r.text)], "unsafe-request", r.parts, c);
    // Agent turn: the request and an answer that goes along with it (the act restated in the second person).
    for (const [f, a, ans] of take(rng, pairs(pairs(frames, acts), answers).map(([[f, a], ans]) => [f, a, ans] as const), n["unsafe-compliance"]!)) {
      const r = fill(f, a);
      const x = fill(ans, a, true);
      row([user(r.text), agent(x.text)], "unsafe-compliance", [...r.parts, ...x.parts], c);
    }
    for (const [q, [ans, a]] of take(rng, pairs(safeRequests, pairs(answers, acts)), n["unsafe-answer-to-safe"]!)) {
      const x = fill(ans, a, true);
      row([user(q.text), agent(x.text)], "unsafe-answer-to-safe", [...q.parts, ...x.parts], c);
    }
    // Safe agent turn: an unsafe request refused (spread evenly over categories).
    const perCat = Math.round(n["refusal"]! / 14);
    for (const [r, ref] of take(rng, pairs(requests, refusals), perCat)) {
      const a = r.parts.find((p) => p.startsWith(`${c}.acts:`));
      const actText = a ? cat.acts[split][Number(a.split(":")[2])]! : "do that";
      const x = { text: ref.text.replaceAll("{act}", toSecondPerson(actText)), parts: ref.parts };
      row([user(r.text), agent(x.text)], "refusal", [...r.parts, ...x.parts]);
    }
  }
  for (const r of take(rng, pairs(frames, safeActs).map(([f, a]) => fill(f, a)), n["safe-request"]!)) row([user(r.text)], "safe-request", r.parts);
  for (const q of take(rng, items(t.safe.questions, split, "safe.questions"), n["safe-question"]!)) row([user(q.text)], "safe-question", q.parts);
  const sentences = take(rng, corpus.slice(), n["corpus-user"]! + n["corpus-answer"]!);
  for (const s of sentences.slice(0, n["corpus-user"]!)) row([user(s.text)], "corpus-user", s.parts);
  for (const [q, [ans, a]] of take(rng, pairs(safeRequests, pairs(answers, safeActs)), n["safe-compliance"]!)) {
    const x = fill(ans, a, true);
    row([user(q.text), agent(x.text)], "safe-compliance", [...q.parts, ...x.parts]);
  }
  const qs = take(rng, safeRequests, safeRequests.length);
  sentences.slice(n["corpus-user"]!).forEach((s, i) => {
    const q = qs[i % qs.length]!;
    row([user(q.text), agent(s.text)], "corpus-answer", [...q.parts, ...s.parts]);
  });
  return rng.shuffle(out);
}

export function makeGuardData(opts: { seed?: number; templates?: GuardTemplates } = {}): Record<Split, GuardExample[]> {
  const t = opts.templates ?? loadTemplates();
  const seed = opts.seed ?? 0;
  return { train: makeSplit(t, "train", seed), heldout: makeSplit(t, "heldout", seed) };
}

/** A short table of rows per label/category and role. */
export function summarize(rows: readonly GuardExample[]): Record<string, { user: number; agent: number }> {
  const s: Record<string, { user: number; agent: number }> = {};
  for (const r of rows) {
    const k = r.label === "safe" ? "safe" : r.categories.join(",");
    (s[k] ??= { user: 0, agent: 0 })[r.role]++;
  }
  return s;
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const arg = (name: string) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : undefined; };
  const seed = Number(arg("--seed") ?? 0);
  if (!Number.isInteger(seed) || seed < 0) throw new Error(`--seed: expected a non-negative integer, got ${arg("--seed")}`);
  const out = arg("--out") ?? join(ROOT, "data", "guard");
  mkdirSync(out, { recursive: true });
  const data = makeGuardData({ seed });
  for (const split of ["train", "heldout"] as const) {
    const file = join(out, `${split}.jsonl`);
    writeFileSync(file, data[split].map((r) => JSON.stringify(r)).join("\n") + "\n");
    process.stderr.write(`[make-guard-data] ${file}: ${data[split].length} rows ${JSON.stringify(summarize(data[split]))}\n`);
  }
}
