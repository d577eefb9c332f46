// Held-out quality of tool use with tool_choice "auto" (no constraint): the base model vs the base + a tool-use LoRA
// adapter, both served by one in-process `floe serve` and asked through the official openai client.
// Usage: node --import tsx bench/tool-eval.ts [--base models/floe-brown] [--adapter models/floe-brown-tools]
//          [--heldout data/tools/heldout.jsonl | --seed N (fresh held-out rows)] [--limit N] [--threads N] [--json]
// Prints, per model: decision accuracy (call vs no call), calls on tool prompts, right function name, arguments valid
// JSON, schema-valid (ajv), exact values; plain text on chit-chat; answers after a tool result that hold its value.
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { Ajv } from "ajv";
import OpenAI from "openai";
import { startServer } from "../src/serve/server.js";
import { makeToolData, promptOf, TOOLS, type ToolExample } from "../scripts/make-tool-data.js";
import { packageRoot } from "../src/model/builtin.js";

const ROOT = packageRoot();

export interface ModelScore {
  readonly model: string;
  readonly rows: number;
  readonly decision: number; // share of rows where "called a tool" is what was expected
  readonly call: { n: number; called: number; name: number; jsonValid: number; schemaValid: number; exact: number; unparsedJsonLike: number };
  readonly chat: { n: number; plain: number };
  readonly answer: { n: number; plain: number; holdsValue: number };
}
export interface ToolReport { readonly heldout: string; readonly base: ModelScore; readonly adapter: ModelScore; readonly seconds: number }

/** Deep equality of argument values (numbers compared exactly: the values are copied from the prompt). */
function sameValue(a: unknown, b: unknown): boolean {
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return a === b;
  const ka = Object.keys(a).sort(), kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** One answer scored against its row. */
export function scoreOne(row: ToolExample, msg: OpenAI.ChatCompletionMessage, ajv: Ajv): { decisionOk: boolean; called: boolean; name: boolean; jsonValid: boolean; schemaValid: boolean; exact: boolean; jsonLike: boolean; holdsValue: boolean } {
  const calls = msg.tool_calls ?? [];
  const called = calls.length > 0;
  const text = msg.content ?? "";
  const out = { decisionOk: called === (row.kind === "call"), called, name: false, jsonValid: false, schemaValid: false, exact: false, jsonLike: !called && /^\s*(\{|<\|python_tag\|>)/.test(text), holdsValue: false };
  if (row.kind === "answer") out.holdsValue = !called && row.mustContain !== undefined && text.includes(row.mustContain);
  if (row.kind !== "call" || !called) return out;
  const c = calls[0]!;
  const fn = c.type === "function" ? c.function : null;
  if (!fn) return out;
  out.name = fn.name === row.call!.name;
  let args: unknown;
  try { args = JSON.parse(fn.arguments); out.jsonValid = true; } catch { return out; }
  const tool = TOOLS.find((t) => t.function.name === fn.name);
  out.schemaValid = tool !== undefined && ajv.validate(tool.function.parameters, args);
  out.exact = out.name && out.schemaValid && calls.length === 1 && sameValue(args, row.call!.arguments);
  return out;
}

async function scoreModel(client: OpenAI, model: string, rows: readonly ToolExample[], ajv: Ajv, concurrency: number): Promise<ModelScore> {
  const s = { call: { n: 0, called: 0, name: 0, jsonValid: 0, schemaValid: 0, exact: 0, unparsedJsonLike: 0 }, chat: { n: 0, plain: 0 }, answer: { n: 0, plain: 0, holdsValue: 0 } };
  let decision = 0;
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < rows.length; i = next++) {
      const row = rows[i]!;
      const r = await client.chat.completions.create({
        model, messages: promptOf(row) as OpenAI.ChatCompletionMessageParam[], tools: row.tools as unknown as OpenAI.ChatCompletionTool[],
        tool_choice: "auto", temperature: 0, max_tokens: 80,
      });
      const v = scoreOne(row, r.choices[0]!.message, ajv);
      decision += Number(v.decisionOk);
      if (row.kind === "call") {
        s.call.n++; s.call.called += Number(v.called); s.call.name += Number(v.name); s.call.jsonValid += Number(v.jsonValid);
        s.call.schemaValid += Number(v.schemaValid); s.call.exact += Number(v.exact); s.call.unparsedJsonLike += Number(v.jsonLike);
      } else if (row.kind === "chat") { s.chat.n++; s.chat.plain += Number(!v.called); }
      else { s.answer.n++; s.answer.plain += Number(!v.called); s.answer.holdsValue += Number(v.holdsValue); }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { model, rows: rows.length, decision: decision / rows.length, ...s };
}

export async function evaluateTools(o: { base: string; adapter: string; heldout?: string; rows?: readonly ToolExample[]; limit?: number; threads?: number; concurrency?: number }): Promise<ToolReport> {
  const t0 = performance.now();
  let rows = o.rows ?? readFileSync(o.heldout!, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as ToolExample);
  if (o.limit !== undefined) rows = rows.slice(0, o.limit);
  const srv = await startServer({
    model: o.base, port: 0, ui: false, dataDir: null, threads: o.threads ?? 1, kvCacheMemory: 64 << 20, maxNumSeqs: 8,
    loraModules: [{ name: "tools", path: o.adapter }], log: () => {},
  });
  try {
    await srv.ready;
    const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "none" });
    const ajv = new Ajv({ strict: false });
    const base = await scoreModel(client, srv.modelName, rows, ajv, o.concurrency ?? 8);
    const adapter = await scoreModel(client, "tools", rows, ajv, o.concurrency ?? 8);
    return { heldout: o.heldout ?? "fresh rows", base, adapter, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await srv.close(0);
  }
}

const pct = (a: number, n: number) => (n === 0 ? "  -  " : `${((100 * a) / n).toFixed(1).padStart(5)}%`);
export function formatToolReport(r: ToolReport): string {
  const line = (m: ModelScore) => [
    `${m.model.padEnd(12)} decision ${pct(m.decision * m.rows, m.rows)} | tool prompts (${m.call.n}): called ${pct(m.call.called, m.call.n)}, name ${pct(m.call.name, m.call.n)}, `
    + `JSON ${pct(m.call.jsonValid, m.call.n)}, schema-valid ${pct(m.call.schemaValid, m.call.n)}, exact values ${pct(m.call.exact, m.call.n)}, unparsed JSON-like text ${pct(m.call.unparsedJsonLike, m.call.n)}`,
    `${"".padEnd(12)} chit-chat (${m.chat.n}): plain text ${pct(m.chat.plain, m.chat.n)} | after a tool result (${m.answer.n}): plain text ${pct(m.answer.plain, m.answer.n)}, holds the value ${pct(m.answer.holdsValue, m.answer.n)}`,
  ].join("\n");
  return [`held-out: ${r.heldout}; tool_choice "auto", no constraint, greedy; ${r.seconds.toFixed(0)} s on ${cpus()[0]?.model ?? "?"}`, line(r.base), line(r.adapter)].join("\n");
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const arg = (k: string) => { const i = process.argv.indexOf(k); return i >= 0 ? process.argv[i + 1] : undefined; };
  const seed = arg("--seed");
  const rows = seed !== undefined ? makeToolData({ seed: Number(seed) }).heldout : undefined;
  const report = await evaluateTools({
    base: arg("--base") ?? join(ROOT, "models", "floe-brown"), adapter: arg("--adapter") ?? join(ROOT, "models", "floe-brown-tools"),
    heldout: rows ? `fresh held-out rows, seed ${seed}` : arg("--heldout") ?? join(ROOT, "data", "tools", "heldout.jsonl"), rows,
    limit: arg("--limit") ? Number(arg("--limit")) : undefined, threads: arg("--threads") ? Number(arg("--threads")) : 1,
  });
  process.stdout.write(process.argv.includes("--json") ? JSON.stringify(report, null, 1) + "\n" : formatToolReport(report) + "\n");
}
