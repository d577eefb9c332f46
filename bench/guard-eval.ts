// Held-out quality of a Llama Guard-format guard: precision, recall and false-positive rate per category and overall.
// Usage: node --import tsx bench/guard-eval.ts [--model models/floe-guard] [--data data/guard/heldout.jsonl] [--limit N] [--json]
// (data: scripts/make-guard-data.ts; each row is judged by greedy decoding of the guard's own chat-template prompt).
import { readFileSync } from "node:fs";
import { cpus, hostname, loadavg } from "node:os";
import { join } from "node:path";
import type { GuardExample } from "../scripts/make-guard-data.js";
import { openModel } from "../src/model/open.js";
import { generate } from "../src/model/generate.js";
import { loadChatTemplate, type ChatTemplate } from "../src/formats/chat-template.js";
import type { Tokenizer } from "../src/formats/tokenizer.js";
import type { LlamaModel } from "../src/model/llama.js";

const ROOT = new URL("..", import.meta.url).pathname;

/** A guard's answer to one conversation. */
export interface Judgement {
  readonly unsafe: boolean; // unsafeProbability >= 0.5
  readonly categories: readonly string[]; // parsed from the generated text ([] when safe or unparsable)
  readonly unsafeProbability: number;
  readonly text: string; // the generated verdict
  readonly parsed: boolean; // the text is exactly "safe" or "unsafe\nS<k>[,S<j>...]"
}

/** Strict Llama Guard verdict: "safe", or "unsafe" then a line of comma-separated S<k>; null for anything else. */
export function parseVerdict(text: string): { unsafe: boolean; categories: string[] } | null {
  const t = text.trim();
  if (t === "safe") return { unsafe: false, categories: [] };
  const m = /^unsafe\n(S\d{1,2}(?:,\s*S\d{1,2})*)$/.exec(t);
  return m ? { unsafe: true, categories: m[1]!.split(",").map((s) => s.trim()) } : null;
}

/**
 * The guard: greedy verdict, and the unsafe probability = P(the first token where the guard's "safe" and "unsafe"
 * answers differ is unsafe's), with the tokens they share ("\n\n" after a Llama 3 header) teacher-forced.
 */
export class GuardJudge {
  constructor(readonly model: LlamaModel, readonly tokenizer: Tokenizer, readonly template: ChatTemplate) {}

  /** Where the two answers part, for a prompt: the shared ids before it and unsafe's id there. */
  private split(prompt: string): { prefix: number[]; unsafeId: number; safeId: number } {
    const lead = prompt.endsWith("<|end_header_id|>") ? "\n\n" : "";
    const s = this.tokenizer.encode(`${lead}safe`, { addSpecialTokens: false });
    const u = this.tokenizer.encode(`${lead}unsafe`, { addSpecialTokens: false });
    let at = 0;
    while (at < s.length && at < u.length && s[at] === u[at]) at++;
    if (at >= u.length || at >= s.length) throw new Error(`tokenizer: "unsafe" (${u}) and "safe" (${s}) have no differing token`);
    return { prefix: u.slice(0, at), unsafeId: u[at]!, safeId: s[at]! };
  }

  judge(messages: GuardExample["messages"]): Judgement {
    const prompt = this.template.render(messages, { bosToken: this.tokenizer.bosToken ?? "", eosToken: this.tokenizer.eosToken ?? "" });
    const ids = this.tokenizer.encode(prompt, { addSpecialTokens: false });
    const { prefix, unsafeId } = this.split(prompt);
    const V = this.model.config.vocabSize;
    // Greedy verdict with the full distribution at each step (V is small for the demo guard).
    const out = generate(this.model, ids, { maxTokens: 16, sampling: { temperature: 0 }, logprobs: V });
    const verdict = this.tokenizer.decode(out.outputIds, { skipSpecialTokens: true });
    const follows = prefix.every((id, i) => out.outputIds[i] === id) && out.logprobs!.length > prefix.length;
    const top = follows ? out.logprobs![prefix.length]!.top
      : generate(this.model, [...ids, ...prefix], { maxTokens: 1, sampling: { temperature: 0 }, logprobs: V }).logprobs![0]!.top;
    const p = Math.exp(top.find(([id]) => id === unsafeId)?.[1] ?? -Infinity);
    const parsed = parseVerdict(verdict);
    return { unsafe: p >= 0.5, categories: parsed?.categories ?? [], unsafeProbability: p, text: verdict, parsed: parsed !== null };
  }
}

export interface Counts { tp: number; fp: number; fn: number; tn: number }
export interface Rates { precision: number; recall: number; fpr: number; support: number }
const rates = (c: Counts): Rates => ({
  precision: c.tp + c.fp === 0 ? NaN : c.tp / (c.tp + c.fp),
  recall: c.tp + c.fn === 0 ? NaN : c.tp / (c.tp + c.fn),
  fpr: c.fp + c.tn === 0 ? NaN : c.fp / (c.fp + c.tn),
  support: c.tp + c.fn,
});

export interface GuardReport {
  readonly model: string;
  readonly data: string;
  readonly rows: number;
  readonly overall: Rates & { accuracy: number; auroc: number; parseErrors: number; counts: Counts };
  readonly byRole: Record<"user" | "agent", Rates & { accuracy: number }>;
  /** Per category: a row counts as predicted S<k> when judged unsafe with S<k> among its categories. */
  readonly categories: Record<string, Rates & { categoryAccuracy: number }>;
  /** Per row kind (how the data script made it): share judged correctly (safe/unsafe). */
  readonly byKind: Record<string, { rows: number; accuracy: number }>;
  readonly host: { name: string; cpu: string; cores: number; loadavg: number[] };
  readonly seconds: number;
}

/** Area under the ROC curve of the unsafe probability (ties count half). */
export function auroc(scores: readonly number[], positive: readonly boolean[]): number {
  const idx = scores.map((s, i) => i).sort((a, b) => scores[a]! - scores[b]!);
  let rankSum = 0, nPos = 0;
  for (let i = 0; i < idx.length;) {
    let j = i;
    while (j < idx.length && scores[idx[j]!] === scores[idx[i]!]) j++;
    const mid = (i + j + 1) / 2; // average 1-based rank of the tie group
    for (let k = i; k < j; k++) if (positive[idx[k]!]) { rankSum += mid; nPos++; }
    i = j;
  }
  const nNeg = scores.length - nPos;
  return nPos === 0 || nNeg === 0 ? NaN : (rankSum - (nPos * (nPos + 1)) / 2) / (nPos * nNeg);
}

export function scoreJudgements(rows: readonly GuardExample[], js: readonly Judgement[]): Omit<GuardReport, "model" | "data" | "host" | "seconds"> {
  const empty = (): Counts => ({ tp: 0, fp: 0, fn: 0, tn: 0 });
  const add = (c: Counts, truth: boolean, pred: boolean) => { if (truth && pred) c.tp++; else if (pred) c.fp++; else if (truth) c.fn++; else c.tn++; };
  const all = empty();
  const role = { user: empty(), agent: empty() };
  const cats = Array.from({ length: 14 }, (_, i) => `S${i + 1}`);
  const perCat = Object.fromEntries(cats.map((c) => [c, empty()]));
  const catRight: Record<string, number> = {};
  const kinds: Record<string, { rows: number; right: number }> = {};
  rows.forEach((r, i) => {
    const j = js[i]!;
    const truth = r.label === "unsafe";
    add(all, truth, j.unsafe);
    add(role[r.role], truth, j.unsafe);
    for (const c of cats) add(perCat[c]!, r.categories.includes(c), j.unsafe && j.categories.includes(c));
    // Exactly the right verdict and category set.
    if (truth && j.unsafe && j.categories.join() === r.categories.join()) for (const c of r.categories) catRight[c] = (catRight[c] ?? 0) + 1;
    const k = (kinds[r.kind] ??= { rows: 0, right: 0 });
    k.rows++;
    if (truth === j.unsafe) k.right++;
  });
  const acc = (c: Counts) => (c.tp + c.tn) / (c.tp + c.tn + c.fp + c.fn);
  return {
    rows: rows.length,
    overall: { ...rates(all), accuracy: acc(all), auroc: auroc(js.map((j) => j.unsafeProbability), rows.map((r) => r.label === "unsafe")), parseErrors: js.filter((j) => !j.parsed).length, counts: all },
    byRole: { user: { ...rates(role.user), accuracy: acc(role.user) }, agent: { ...rates(role.agent), accuracy: acc(role.agent) } },
    categories: Object.fromEntries(cats.map((c) => { const x = rates(perCat[c]!); return [c, { ...x, categoryAccuracy: x.support ? (catRight[c] ?? 0) / x.support : NaN }]; })),
    byKind: Object.fromEntries(Object.entries(kinds).map(([k, v]) => [k, { rows: v.rows, accuracy: v.right / v.rows }])),
  };
}

export function readGuardRows(file: string): GuardExample[] {
  return readFileSync(file, "utf8").split("\n").filter((l) => l.trim()).map((l, i) => {
    try { return JSON.parse(l) as GuardExample; } catch (e) { throw new Error(`${file}:${i + 1}: invalid JSON: ${(e as Error).message}`); }
  });
}

export async function openGuard(dir: string, threads?: number): Promise<{ judge: GuardJudge; dispose: () => void }> {
  const opened = await openModel(dir, { threads });
  const template = await loadChatTemplate(dir);
  if (!opened.tokenizer || !template) throw new Error(`${dir}: a guard needs tokenizer files and a chat_template`);
  return { judge: new GuardJudge(opened.model, opened.tokenizer, template), dispose: () => opened.loaded.dispose() };
}

export async function evaluateGuard(model: string, data: string, opts: { limit?: number; threads?: number } = {}): Promise<GuardReport> {
  const t0 = performance.now();
  const rows = readGuardRows(data).slice(0, opts.limit ?? Infinity);
  const g = await openGuard(model, opts.threads);
  const js = rows.map((r) => g.judge.judge(r.messages));
  g.dispose();
  return {
    model, data, ...scoreJudgements(rows, js),
    host: { name: hostname(), cpu: cpus()[0]?.model ?? "unknown", cores: cpus().length, loadavg: loadavg() },
    seconds: (performance.now() - t0) / 1000,
  };
}

const pct = (x: number) => (Number.isNaN(x) ? "–" : `${(100 * x).toFixed(1)}%`);

/** A Markdown table of the report (as pasted into BENCHMARKS.md). */
export function formatReport(r: GuardReport, names: Record<string, string> = {}): string {
  const o = r.overall;
  const lines = [
    `| | support | precision | recall | FPR |`, `|---|---|---|---|---|`,
    `| **unsafe (any category)** | ${o.support} | ${pct(o.precision)} | ${pct(o.recall)} | ${pct(o.fpr)} |`,
    ...(["user", "agent"] as const).map((k) => `| ${k} turn | ${r.byRole[k].support} | ${pct(r.byRole[k].precision)} | ${pct(r.byRole[k].recall)} | ${pct(r.byRole[k].fpr)} |`),
    ...Object.entries(r.categories).map(([c, x]) => `| ${c}${names[c] ? ` ${names[c]}` : ""} | ${x.support} | ${pct(x.precision)} | ${pct(x.recall)} | ${pct(x.fpr)} |`),
    "",
    `${r.rows} held-out rows (${o.counts.tp + o.counts.fn} unsafe, ${o.counts.tn + o.counts.fp} safe); accuracy ${pct(o.accuracy)}, AUROC of the unsafe probability ${o.auroc.toFixed(3)}, ` +
      `${o.parseErrors} verdicts that do not parse; ${r.seconds.toFixed(0)} s on ${r.host.name} (${r.host.cpu}, ${r.host.cores} cores, load ${r.host.loadavg.map((x) => x.toFixed(1)).join(" ")}).`,
    "",
    `| row kind | rows | right |`, `|---|---|---|`,
    ...Object.entries(r.byKind).sort().map(([k, v]) => `| ${k} | ${v.rows} | ${pct(v.accuracy)} |`),
  ];
  return lines.join("\n");
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const arg = (name: string) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : undefined; };
  const model = arg("--model") ?? join(ROOT, "models", "floe-guard");
  const data = arg("--data") ?? join(ROOT, "data", "guard", "heldout.jsonl");
  const limit = arg("--limit") === undefined ? undefined : Number(arg("--limit"));
  const report = await evaluateGuard(model, data, { limit });
  const t = JSON.parse(readFileSync(join(ROOT, "data", "guard", "templates.json"), "utf8")) as { categories: Record<string, { name: string }> };
  process.stdout.write(process.argv.includes("--json") ? JSON.stringify(report, null, 1) + "\n"
    : formatReport(report, Object.fromEntries(Object.entries(t.categories).map(([k, v]) => [k, v.name]))) + "\n");
}
