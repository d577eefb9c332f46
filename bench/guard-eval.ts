// Held-out quality of a Llama Guard-format guard: precision, recall and false-positive rate per category and overall.
// Usage: node --import tsx bench/guard-eval.ts [--model models/floe-guard] [--data data/guard/heldout.jsonl] [--limit N] [--json]
// (data: scripts/make-guard-data.ts; each row is judged by floe's Guard runtime: the checkpoint's own Llama Guard
// template, greedy verdict, P(unsafe) at the first token where "unsafe" and "safe" differ, flagged at >= 0.5).
import { readFileSync } from "node:fs";
import { cpus, hostname, loadavg } from "node:os";
import { join } from "node:path";
import type { GuardExample } from "../scripts/make-guard-data.js";
import { Guard } from "../src/platform/guard/guard.js";
import { GuardOutputError } from "../src/platform/guard/verdict.js";
import { packageRoot } from "../src/model/builtin.js";

const ROOT = packageRoot();

/** A guard's answer to one conversation. */
export interface Judgement {
  readonly unsafe: boolean; // flagged: unsafeProbability >= 0.5
  readonly categories: readonly string[]; // the categories the guard named ([] when not flagged or unparsable)
  readonly unsafeProbability: number; // NaN when the answer did not parse
  readonly text: string; // the guard's answer
  readonly parsed: boolean; // the answer is a strict verdict ("safe" or "unsafe\nS<k>[,S<j>...]")
}

/** One row through the runtime (floe's Guard): a verdict that does not parse is recorded, not read as safe or unsafe. */
export async function judgeRow(g: Guard, r: Pick<GuardExample, "messages" | "role">): Promise<Judgement> {
  try {
    const v = await g.judge(r.messages, { role: r.role });
    return { unsafe: v.flagged, categories: v.categories, unsafeProbability: v.unsafeProbability, text: v.output, parsed: true };
  } catch (e) {
    if (!(e instanceof GuardOutputError)) throw e;
    return { unsafe: false, categories: [], unsafeProbability: NaN, text: e.output, parsed: false };
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
    overall: { ...rates(all), accuracy: acc(all), auroc: auroc(js.map((j) => (Number.isNaN(j.unsafeProbability) ? 0 : j.unsafeProbability)), rows.map((r) => r.label === "unsafe")), parseErrors: js.filter((j) => !j.parsed).length, counts: all },
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

export async function evaluateGuard(model: string, data: string, opts: { limit?: number; threads?: number } = {}): Promise<GuardReport> {
  const t0 = performance.now();
  const rows = readGuardRows(data).slice(0, opts.limit ?? Infinity);
  const g = await Guard.open(model, { threads: opts.threads, maxNumSeqs: 8 });
  const js: Judgement[] = new Array(rows.length);
  try {
    // 8 rows in flight: the guard's engine batches them.
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => { while (next < rows.length) { const i = next++; js[i] = await judgeRow(g, rows[i]!); } }));
  } finally {
    await g.close();
  }
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
    `${r.rows} rows (${o.counts.tp + o.counts.fn} unsafe, ${o.counts.tn + o.counts.fp} safe); accuracy ${pct(o.accuracy)}, AUROC of the unsafe probability ${o.auroc.toFixed(3)}, ` +
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
